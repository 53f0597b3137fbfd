"""The supervision tree heals a real local cluster: after ``kill -9`` of any single
process (a worker, the cache, the executor node, a shard, routing, the KVS launcher,
the scheduler, the supervisor itself) new calls are served again within 10 s and
``status`` shows the restart. The cluster runs through the real launcher
(``cloudburst local start``) in a temporary directory on free ports."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from cloudburst import local
from cloudburst.shared.config import Config
from cloudburst.shared.processes import wait_until
from tests.integration.localcluster import cleanup, cli, connect, launched, launcher_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

RECOVERY_S = 20.0  # generous: a Python start takes seconds on a loaded 2-core CI machine
#: (name in ``status``, depth in the tree) in the order the test kills them.
VICTIMS = [
    ("worker0", 2),
    ("cache", 2),
    ("shard0", 2),
    ("routing", 2),
    ("scheduler", 1),
    ("executor", 1),
    ("kvs", 1),
]


def _pid(cfg: Config, name: str, depth: int) -> int | None:
    for line in local.status_lines(cfg):
        if line.name == name and line.depth == depth and line.state == "running":
            return line.pid
    return None


def _restarts(cfg: Config, name: str, depth: int) -> int:
    return max(
        (x.restarts for x in local.status_lines(cfg) if x.name == name and x.depth == depth),
        default=-1,
    )


def _call_ok(cfg: Config) -> bool:
    try:
        conn = connect(cfg, timeout=2.0)
    except Exception:
        return False
    try:
        return bool(conn.exec_func("inc", [41]).get(timeout=2.0) == 42)
    except Exception:
        return False
    finally:
        conn.close()


def _recovery(cfg: Config) -> float:
    """Seconds until a new call succeeds (fails the test after RECOVERY_S)."""
    began = time.monotonic()
    while not _call_ok(cfg):
        assert time.monotonic() - began < RECOVERY_S, "calls not served again in time"
        time.sleep(0.1)
    return time.monotonic() - began


def test_kill_any_process_and_the_cluster_heals(tmp_path: Path) -> None:
    cfg, path = launcher_config(tmp_path / "run", workers=2)
    figures: dict[str, float] = {}
    try:
        started = cli("start", "--config", str(path))
        assert started.returncode == 0, started.stdout + started.stderr
        conn = connect(cfg)
        try:
            conn.register(lambda _, x: x + 1, "inc")
            assert conn.put_object("kept", b"across every kill")
        finally:
            conn.close()
        assert _call_ok(cfg)
        for name, depth in VICTIMS:
            wait_until(lambda n=name, d=depth: _pid(cfg, n, d) is not None, 20, f"{name} up")
            pid = _pid(cfg, name, depth)
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            figures[name] = _recovery(cfg)
            if depth == 1 or name in ("shard0", "routing", "cache", "worker0"):
                wait_until(
                    lambda n=name, d=depth: _restarts(cfg, n, d) >= 1,
                    10,
                    f"status to show {name}'s restart",
                )
        # The supervisor itself: its children go with it, the next start works.
        sup = local.supervisor_pid(cfg)
        assert sup is not None
        os.kill(sup, signal.SIGKILL)
        wait_until(lambda: not local.cluster_pids(cfg), 15, "the orphans to exit")
        began = time.monotonic()
        again = cli("start", "--config", str(path))
        assert again.returncode == 0, again.stdout + again.stderr
        figures["supervisor (restart by start)"] = time.monotonic() - began
        assert _call_ok(cfg)
        conn = connect(cfg)
        try:
            assert conn.get_object("kept") == b"across every kill"
        finally:
            conn.close()
        status = cli("status", "--config", str(path), timeout=30)
        assert status.returncode == 0, status.stdout
    finally:
        cleanup(cfg)
    print("recovery after kill -9 (s):", {k: round(v, 2) for k, v in figures.items()})


def test_a_crash_loop_is_reported_by_status_and_the_rest_keeps_serving(tmp_path: Path) -> None:
    with launched(tmp_path / "run", workers=1) as cfg:
        path = local.config_path(cfg)
        conn = connect(cfg)
        try:
            conn.register(lambda _, x: x + 1, "inc")
        finally:
            conn.close()
        # From now on the cache cannot create its socket: every restart exits at once.
        ipc = Path(cfg.cache.ipc_dir)
        for sock in ipc.iterdir():
            sock.unlink()
        ipc.rmdir()
        ipc.write_text("not a directory")
        pid = _pid(cfg, "cache", 2)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)

        def cache_failed() -> bool:
            return any(x.name == "cache" and x.state == "failed" for x in local.status_lines(cfg))

        wait_until(cache_failed, 60, "the cache to be marked failed")
        status = cli("status", "--config", str(path), timeout=30)
        assert status.returncode == 2, status.stdout
        line = next(x for x in status.stdout.splitlines() if x.split()[0] == "cache")
        assert line.split()[1:4] == ["-", "failed", "4"], line  # 5 exits: 4 restarts
        assert "exit status 1" in line
        log = (Path(cfg.run_dir) / "logs" / "executor.log").read_text()
        assert "crash loop (5 exits within 60s" in log and "not restarting it" in log
        # Workers use the KVS directly: calls are still served.
        assert _call_ok(cfg)
        ipc.unlink()  # let stop clean up as usual
