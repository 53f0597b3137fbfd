"""The README contract end to end with the DEFAULT local-mode ports: the start script,
the README example, the stop script, and nothing left behind.

The only test that uses the default ports (marked ``default_ports``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cloudburst.shared.config import Config
from cloudburst.shared.processes import port_open, wait_until

ROOT = Path(__file__).resolve().parents[2]
README_EXAMPLE = """
from cloudburst.client.client import CloudburstConnection
local_cloud = CloudburstConnection('127.0.0.1', '127.0.0.1', local=True)
cloud_sq = local_cloud.register(lambda _, x: x * x, 'square')
assert cloud_sq(2).get() == 4
print(local_cloud.register_dag('dag', ['square'], []))
assert local_cloud.call_dag('dag', { 'square': [2] }).get() == 4
print('README OK')
"""


def _cluster_pids() -> list[int]:
    """Processes started from this checkout's local-mode config (children included)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        text = b" ".join(cmd).decode(errors="replace")
        if ".local/config.yml" in text and cwd == str(ROOT) and "-m" in text:
            pids.append(int(entry.name))
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


@pytest.mark.integration
@pytest.mark.default_ports
@pytest.mark.timeout(180)
def test_start_example_stop_leaves_nothing_behind() -> None:
    cfg = Config()
    ports = [
        cfg.kvs.routing_port,
        cfg.kvs.shard_base_port,
        cfg.kvs.gossip_base_port,
        cfg.scheduler.port,
        *(cfg.executor.base_port + i for i in range(cfg.executor.workers)),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDBURST_")}
    busy = [p for p in ports if port_open(cfg.ip, p)]
    assert not busy, f"default ports {busy} are taken: is a local cluster already running?"
    started = subprocess.run(
        ["./scripts/start-cloudburst-local.sh"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
    )
    pids = _cluster_pids()
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert "CloudburstConnection('127.0.0.1', '127.0.0.1', local=True)" in started.stdout
        assert len(pids) >= 3 + cfg.executor.workers, pids  # kvs, scheduler, node + workers
        example = subprocess.run(
            [str(ROOT / ".venv/bin/python"), "-c", README_EXAMPLE],
            cwd="/tmp",
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert example.returncode == 0, example.stdout + example.stderr
        assert "(True, 0)" in example.stdout and "README OK" in example.stdout
    finally:
        stopped = subprocess.run(
            ["./scripts/stop-cloudburst-local.sh"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    wait_until(lambda: not any(_alive(p) for p in pids), 10, "the cluster's processes to exit")
    assert not [p for p in _cluster_pids() if _alive(p)]
    assert not [p for p in ports if port_open(cfg.ip, p)], "a default port is still bound"
    assert not (ROOT / ".local" / "cluster.json").exists()
    again = subprocess.run(
        [sys.executable, "-m", "cloudburst.local", "stop"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert again.returncode == 0 and "nothing to stop" in again.stdout
