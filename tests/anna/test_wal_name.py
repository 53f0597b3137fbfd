"""``kvs.wal_name``: a node's WAL directory named after the node, not its address, so
a node back on a new IP (a rescheduled pod) recovers every write it acknowledged."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cloudburst.shared.processes import ProcessGroup
from lattices import LWWPairLattice
from tests.anna.conftest import KvsCluster, wait_ready, write_config

pytestmark = pytest.mark.integration


def _node(procs: ProcessGroup, tmp_path: Path, name: str, ip: str, **kvs: object) -> KvsCluster:
    path, cfg = write_config(tmp_path, name, ip=ip, data_dir=str(tmp_path / "pvc"), **kvs)
    # One process name: the node before is dead (SIGKILL) when the next one starts.
    procs.start("node", [sys.executable, "-m", "anna.local", "--config", str(path)])
    cluster = KvsCluster(procs, path, cfg, name)
    wait_ready(cluster)
    return cluster


def test_a_node_back_on_a_new_address_recovers_its_wal(procs: ProcessGroup, tmp_path: Path) -> None:
    first = _node(procs, tmp_path, "a", "127.0.0.1", wal_name="storage-0")
    client = first.client(timeout=5.0)
    try:
        assert client.put("kept", LWWPairLattice(1, b"acknowledged"))
    finally:
        client.close()
    procs.kill("node")  # SIGKILL: no hand-off, only the WAL has it

    moved = _node(procs, tmp_path, "b", "127.0.0.2", wal_name="storage-0")
    client = moved.client(timeout=5.0)
    try:
        assert client.get("kept")["kept"].reveal() == b"acknowledged"
    finally:
        client.close()
    procs.kill("node")

    # Without a name the directory is the address's: a new address starts empty.
    other = _node(procs, tmp_path, "c", "127.0.0.3")
    client = other.client(timeout=5.0)
    try:
        assert client.get("kept")["kept"] is None
    finally:
        client.close()
    assert sorted(p.name for p in (tmp_path / "pvc").iterdir())[-1] == "storage-0"
