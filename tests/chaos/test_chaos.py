"""Chaos: a steady workload of DAG calls and ``put_object``s against a supervised local
cluster while a random cluster process is SIGKILLed every few seconds.

Reports (printed, and in docs/reliability.md) and asserts:
- acknowledged writes lost: must be 0 (every acknowledged ``put_object`` reads back);
- calls that hung: must be 0 (every ``get(timeout=...)`` returns within its timeout
  plus a small grace, with a result or an error);
- calls that failed with a clear error: reported;
- longest time to recovery: from a kill to the first call started after it that
  succeeds; bounded.

The cluster is the real one the start script runs (``python -m cloudburst.local start``
with its supervisor), in a temporary run directory on free ports. Runs for
``CHAOS_SECONDS`` (default 60 s); ``CHAOS_SECONDS=600 pytest tests/chaos`` for longer.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cloudburst.client.client import CloudburstConnection
from cloudburst.local import free_port_config, write_config
from cloudburst.shared.config import Config

pytestmark = [pytest.mark.integration]

SECONDS = float(os.environ.get("CHAOS_SECONDS", "60"))
KILL_EVERY = (2.0, 5.0)  # seconds between kills, uniform
CALL_TIMEOUT = 20.0
GRACE = 5.0  # a get() that returns later than its timeout plus this has hung
RECOVERY_BOUND = 30.0  # generous: a loaded 2-core CI machine, kills every few seconds
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Report:
    calls: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    hung: list[float] = field(default_factory=list)
    # (start, end) of calls that needed the scheduler (direct path off)
    successes: list[tuple[float, float]] = field(default_factory=list)
    writes: int = 0
    acked: dict[str, int] = field(default_factory=dict)
    write_errors: dict[str, int] = field(default_factory=dict)
    kills: list[tuple[float, str]] = field(default_factory=list)

    def recovery(self) -> list[tuple[str, float]]:
        """Per kill: seconds until a call started after it succeeded."""
        out = []
        for at, what in self.kills:
            after = [end for start, end in self.successes if start >= at]
            out.append((what, (min(after) - at) if after else float("inf")))
        return out


def _local(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cloudburst.local", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={k: v for k, v in os.environ.items() if not k.startswith("CLOUDBURST_")},
    )


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[Config]:
    cfg = free_port_config(
        tmp_path / "run",
        workers=3,
        scheduler={"heartbeat_timeout_s": 2.0, "call_timeout_s": 20.0},
        executor={"workers": 3, "base_port": 0, "heartbeat_period_s": 0.25},
    )
    path = write_config(cfg, tmp_path / "chaos.yml")
    started = _local("start", "--config", str(path), "--timeout", "90")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield cfg
    finally:
        stopped = _local("stop", "--config", str(path))
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert not _cluster_processes(cfg), "processes left after stop"


def _cluster_processes(cfg: Config) -> dict[int, str]:
    """pid -> role of every process of this cluster, except its top supervisor."""
    marker = str(Path(cfg.run_dir))
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"-m" not in argv or not any(marker.encode() in a for a in argv):
            continue
        if state == "Z":
            continue
        module = argv[argv.index(b"-m") + 1].decode()
        if module in ("cloudburst.supervisor", "cloudburst.local"):
            continue
        if b"--shard" in argv:
            module += f"[{argv[argv.index(b'--shard') + 1].decode()}]"
        out[int(entry.name)] = module
    return out


def incr(_lib: object, x: int) -> int:
    return x + 1


def square(_lib: object, x: int) -> int:
    return x * x


@pytest.mark.timeout(SECONDS + 240)
def test_random_kills_lose_no_write_and_hang_no_call(supervised: Config) -> None:
    cfg = supervised

    def connect(direct: bool = True) -> CloudburstConnection:
        return CloudburstConnection(
            cfg.ip, cfg.ip, port=cfg.scheduler.port, timeout=10.0, direct=direct
        )

    with connect() as cloud:
        cloud.register(incr, "chaos_incr")
        cloud.register(square, "chaos_square")
        assert cloud.register_dag(
            "chaos_dag", ["chaos_incr", "chaos_square"], [("chaos_incr", "chaos_square")]
        )
        assert cloud.call_dag("chaos_dag", {"chaos_incr": [1]}).get(timeout=CALL_TIMEOUT) == 4
    assert len(_cluster_processes(cfg)) >= 7, _cluster_processes(cfg)

    report = Report()
    stop = threading.Event()
    lock = threading.Lock()

    def call_loop(via_scheduler: bool, dag: bool) -> None:
        """DAG calls or single function calls; ``via_scheduler`` turns the client's
        direct path off, so every call needs the scheduler (and a function call's
        result goes through the KVS)."""
        conn = None
        i = 0
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                if conn is None:
                    conn = connect(direct=not via_scheduler)
                if dag:
                    fut = conn.call_dag("chaos_dag", {"chaos_incr": [i]})
                    want = (i + 1) ** 2
                else:
                    fut = conn.exec_func("chaos_incr", [i])
                    want = i + 1
                got = fut.get(timeout=CALL_TIMEOUT)
                outcome = "ok" if got == want else f"wrong result {got!r}"
            except Exception as exc:
                outcome = type(exc).__name__
            t1 = time.monotonic()
            with lock:
                report.calls += 1
                if outcome == "ok":
                    report.ok += 1
                    if via_scheduler:
                        report.successes.append((t0, t1))
                else:
                    report.errors[outcome] = report.errors.get(outcome, 0) + 1
                if t1 - t0 > CALL_TIMEOUT + GRACE:
                    report.hung.append(t1 - t0)
            i += 1
            time.sleep(0.005 if outcome == "ok" else 0.1)
        if conn is not None:
            conn.close()

    def write_loop() -> None:
        conn = None
        i = 0
        while not stop.is_set():
            key = f"chaos/{i}"
            t0 = time.monotonic()
            try:
                if conn is None:
                    conn = connect()
                ok = conn.put_object(key, i)
                outcome = "ok" if ok else "refused"
            except Exception as exc:
                outcome = type(exc).__name__
            with lock:
                report.writes += 1
                if outcome == "ok":
                    report.acked[key] = i
                else:
                    report.write_errors[outcome] = report.write_errors.get(outcome, 0) + 1
                if time.monotonic() - t0 > CALL_TIMEOUT + GRACE:
                    report.hung.append(time.monotonic() - t0)
            i += 1
            time.sleep(0.02 if outcome == "ok" else 0.1)
        if conn is not None:
            conn.close()

    threads = [
        threading.Thread(target=call_loop, args=(False, True)),
        threading.Thread(target=call_loop, args=(True, True)),
        threading.Thread(target=call_loop, args=(True, False)),
        threading.Thread(target=write_loop),
    ]
    for t in threads:
        t.start()
    rng = random.Random(int(os.environ.get("CHAOS_SEED", "0")) or None)
    end = time.monotonic() + SECONDS
    try:
        time.sleep(2.0)
        while time.monotonic() < end - 10:  # the last 10 s: no kill, the cluster recovers
            victims = _cluster_processes(cfg)
            if victims:
                pid, role = rng.choice(sorted(victims.items()))
                try:
                    os.kill(pid, signal.SIGKILL)
                    report.kills.append((time.monotonic(), role))
                except ProcessLookupError:
                    pass
            time.sleep(rng.uniform(*KILL_EVERY))
        time.sleep(max(0.0, end - time.monotonic()))
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=CALL_TIMEOUT + 30)
    assert not any(t.is_alive() for t in threads), "a workload thread never returned"

    # Every acknowledged write reads back once the cluster has settled.
    with connect() as cloud:
        deadline = time.monotonic() + 60
        while True:
            try:
                assert cloud.call_dag("chaos_dag", {"chaos_incr": [2]}).get(timeout=10) == 9
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        keys = sorted(report.acked)
        lost = [k for k in keys if cloud.get_object(k) != report.acked[k]]

    recovery = report.recovery()
    longest = max((r for _, r in recovery), default=0.0)
    print(
        f"\nchaos {SECONDS:.0f}s: {len(report.kills)} kills "
        f"({', '.join(sorted({w for _, w in report.kills}))}); "
        f"calls {report.calls}, ok {report.ok}, failed {dict(report.errors)}, "
        f"hung {len(report.hung)}; writes {report.writes}, acknowledged {len(report.acked)}, "
        f"failed {dict(report.write_errors)}, acknowledged lost {len(lost)}; "
        f"longest recovery {longest:.2f}s; per kill: "
        + ", ".join(f"{w} {r:.1f}s" for w, r in recovery)
    )
    assert report.kills, "nothing was killed"
    assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {lost[:5]}"
    assert not report.hung, f"calls hung for {report.hung}"
    assert longest <= RECOVERY_BOUND, recovery
