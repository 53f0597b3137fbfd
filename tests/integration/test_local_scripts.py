"""The README contract end to end, through the real scripts, in a temporary run
directory on free ports (``CLOUDBURST_RUN_DIR`` and ``CLOUDBURST_<SECTION>__<FIELD>``):
the start script, the README example (run as a doctest, straight from README.md),
``status``, the stop script, a restart that serves the same data, functions and DAGs,
and nothing left behind. A user's cluster in ``.local/`` on the default ports is
neither needed nor touched."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cloudburst import local
from cloudburst.shared.config import Config, load_config
from cloudburst.shared.processes import free_port, free_port_block, wait_until
from tests.integration.localcluster import ROOT, clean_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

README_RUNNER = """
import doctest, re, sys
text = open(sys.argv[1]).read()
block = re.search(r"```python\\n(.*?)```", text, re.S).group(1)
test = doctest.DocTestParser().get_doctest(block, {}, "README", "README.md", 0)
runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
runner.run(test)
print("README", runner.summarize(verbose=False))
"""


def _env(run_dir: Path) -> dict[str, str]:
    shard = free_port_block(101 + 1)
    return {
        **clean_env(),
        "CLOUDBURST_RUN_DIR": str(run_dir),
        "CLOUDBURST_KVS__ROUTING_PORT": str(free_port()),
        "CLOUDBURST_KVS__SHARD_BASE_PORT": str(shard),
        "CLOUDBURST_KVS__GOSSIP_BASE_PORT": str(shard + 50),
        "CLOUDBURST_SCHEDULER__PORT": str(free_port()),
        "CLOUDBURST_EXECUTOR__BASE_PORT": "0",
    }


def _run(argv: list[str], env: dict[str, str], timeout: float = 150) -> Any:
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _python(code: str, env: dict[str, str], *args: str) -> Any:
    # From /tmp, as a user would: the installed package, not the checkout on sys.path.
    return subprocess.run(
        [str(ROOT / ".venv/bin/python"), "-c", code, *args],
        cwd="/tmp",
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )


def _user_cluster() -> tuple[list[int], str | None]:
    """What runs in the repository's own .local/ (must be the same before and after)."""
    cfg = local.resolve(Config())
    marker = Path(cfg.run_dir) / "cluster.json"
    return sorted(local.cluster_pids(cfg)), marker.read_text() if marker.exists() else None


def test_scripts_readme_status_restart_keeps_data(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    env = _env(run_dir)
    cfg = local.resolve(load_config(None, env=env))
    assert cfg.run_dir == str(run_dir) and cfg.kvs.data_dir == str(run_dir / "kvs")
    user_before = _user_cluster()
    ports = [p for p, _ in local.cluster_ports(cfg)]
    try:
        started = _run(["./scripts/start-cloudburst-local.sh"], env)
        assert started.returncode == 0, started.stdout + started.stderr
        assert "CloudburstConnection('127.0.0.1', '127.0.0.1', local=True)" in started.stdout
        assert f"CLOUDBURST_SCHEDULER__PORT={cfg.scheduler.port}" in started.stdout
        pids = local.cluster_pids(cfg)
        # supervisor, kvs (+ routing, shard), scheduler, node (+ cache, workers)
        assert len(pids) >= 7 + cfg.executor.workers, pids

        readme = _python(README_RUNNER, env, str(ROOT / "README.md"))
        assert "README TestResults(failed=0, attempted=6)" in readme.stdout, (
            readme.stdout + readme.stderr
        )

        status = _run([str(ROOT / ".venv/bin/python"), "-m", "cloudburst.local", "status"], env)
        assert status.returncode == 0, status.stdout + status.stderr
        for name in ("supervisor", "kvs", "routing", "shard0", "scheduler", "executor", "cache"):
            assert re.search(rf"^\s*{name}\s+\d+\s+running\s+0", status.stdout, re.M), status.stdout

        put = _python(
            "from cloudburst.client.client import CloudburstConnection\n"
            "c = CloudburstConnection('127.0.0.1', '127.0.0.1', local=True)\n"
            "print(c.put_object('durable', b'kept'))\n",
            env,
        )
        assert put.stdout.strip() == "True", put.stdout + put.stderr

        stopped = _run(["./scripts/stop-cloudburst-local.sh"], env, timeout=90)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert "data kept" in stopped.stdout
        wait_until(lambda: not any(local.alive(p) for p in pids), 10, "the processes to exit")
        assert not local.cluster_pids(cfg)
        assert all(local.port_bindable(cfg.ip, p) for p in ports), "a port is still bound"
        assert not (run_dir / "cluster.json").exists() and not (run_dir / "state").exists()
        assert not list((run_dir / "ipc").iterdir()), "ipc sockets left behind"
        assert (run_dir / "kvs").is_dir()

        # The original Cloudburst's y/n arguments are accepted (and ignored).
        again = _run(["./scripts/start-cloudburst-local.sh", "n", "n"], env)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "were ignored (n n)" in again.stderr
        kept = _python(
            "from cloudburst.client.client import CloudburstConnection\n"
            "c = CloudburstConnection('127.0.0.1', '127.0.0.1', local=True)\n"
            "print(c.get_object('durable'))\n"
            "print(c.call_dag('dag', {'square': [3]}).get(timeout=20))\n"
            "print(c.get_function('square')(5).get(timeout=20))\n",
            env,
        )
        assert kept.stdout.split() == ["b'kept'", "9", "25"], kept.stdout + kept.stderr
    finally:
        final = _run(["./scripts/stop-cloudburst-local.sh", "y"], env, timeout=90)
    assert final.returncode == 0, final.stdout + final.stderr
    assert not local.cluster_pids(cfg)
    nothing = _run(["./scripts/stop-cloudburst-local.sh"], env, timeout=60)
    assert nothing.returncode == 0 and "nothing to stop" in nothing.stdout
    assert _user_cluster() == user_before, "the user's own cluster in .local/ changed"
