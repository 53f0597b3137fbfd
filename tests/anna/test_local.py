"""Local mode: the launcher's children never outlive it; only configured ports bound."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from cloudburst.local import alive
from cloudburst.shared.processes import port_open
from tests.anna.conftest import KvsCluster, poll

pytestmark = pytest.mark.integration


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def _listening_ports(pids: list[int]) -> set[int]:
    inodes: set[str] = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if parts[3] == "0A" and parts[9] in inodes:  # LISTEN
            ports.add(int(parts[1].split(":")[1], 16))
    return ports


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_children_die_with_the_launcher(kvs_factory: Any, sig: int) -> None:
    kvs: KvsCluster = kvs_factory(shards=2)
    launcher = kvs.procs.procs[kvs.name].pid
    kids = _children(launcher)
    assert len(kids) == 3  # routing + 2 shards
    kv = kvs.cfg["kvs"]
    expected = {kv["routing_port"]}
    for t in range(2):
        expected |= {
            kv["shard_base_port"] + t,
            kv["gossip_base_port"] + t,
            kv["shard_base_port"] + 100 + t,
        }
    assert _listening_ports(kids) == expected
    os.kill(launcher, sig)  # the launcher only, not its process group
    poll(lambda: not any(alive(k) for k in kids), 15, "children to exit")
    # A main thread shows as a zombie while the others still exit (and hold sockets).
    poll(lambda: not port_open("127.0.0.1", kv["routing_port"]), 5, "routing's port to close")


def test_a_crashed_shard_is_restarted(kvs_factory: Any) -> None:
    kvs: KvsCluster = kvs_factory(shards=1)
    # 3 s, not 10: a GET sent to the killed shard waits out the client's timeout before
    # the poll tries again (the restart itself takes ~1 s)
    client = kvs.client(timeout=3.0)
    try:
        from lattices import LWWPairLattice

        assert client.put("r", LWWPairLattice(1, b"kept"))
        launcher = kvs.procs.procs[kvs.name].pid
        shard = [
            k
            for k in _children(launcher)
            if b"anna.shard" in Path(f"/proc/{k}/cmdline").read_bytes()
        ]
        os.kill(shard[0], signal.SIGKILL)
        poll(lambda: _get(client, "r") == b"kept", 20, "restarted shard serving from its WAL")
    finally:
        client.close()


def _get(client: Any, key: str) -> bytes | None:
    try:
        v = client.get(key)[key]
    except Exception:
        return None
    return v.reveal() if v else None
