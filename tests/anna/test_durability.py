"""WAL recovery: kill -9 a shard under write load; every acknowledged write survives."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from anna.errors import AnnaError
from cloudburst.shared.processes import ProcessGroup
from lattices import LWWPairLattice, SetLattice
from tests.anna.conftest import KvsCluster, poll, wait_ready, write_config

pytestmark = pytest.mark.integration


def _start(procs: ProcessGroup, path: Path, shard: bool = True) -> None:
    if "routing" not in procs.procs or not procs.procs["routing"].alive():
        procs.start("routing", [sys.executable, "-m", "anna.routing", "--config", str(path)])
    if shard:
        procs.start(
            "shard0", [sys.executable, "-m", "anna.shard", "--config", str(path), "--shard", "0"]
        )


@pytest.mark.parametrize("policy", ["always", "never"])
def test_kill9_under_write_load_keeps_acked_writes(
    procs: ProcessGroup, tmp_path: Path, policy: str
) -> None:
    """fsync ``always`` survives power loss; ``never`` still survives a process crash."""
    path, cfg = write_config(tmp_path, f"wal-{policy}", wal_fsync=policy)
    _start(procs, path)
    cluster = KvsCluster(procs, path, cfg, "wal")
    wait_ready(cluster)
    acked: dict[str, bytes] = {}
    sets: set[bytes] = set()
    stop = threading.Event()

    def writer() -> None:
        client = cluster.client(timeout=1.0)
        i = 0
        try:
            while not stop.is_set():
                keys = [f"w{i}-{j}" for j in range(20)]
                vals = [LWWPairLattice(i + 1, f"{i}-{j}".encode()) for j in range(20)]
                try:
                    res = client.put(keys, vals)
                    member = b"m%d" % i
                    if client.put("set", SetLattice({member})):
                        sets.add(member)
                except AnnaError:
                    return  # the shard died
                acked.update({k: v.value for k, v in zip(keys, vals, strict=True) if res[k]})  # type: ignore[index]
                i += 1
        finally:
            client.close()

    thread = threading.Thread(target=writer)
    thread.start()
    poll(lambda: len(acked) >= 2000, 30, "2000 acked writes")
    procs.kill("shard0", signal.SIGKILL)
    thread.join(timeout=20)
    stop.set()
    assert not thread.is_alive()
    _start(procs, path)
    wait_ready(cluster)
    client = cluster.client()
    try:
        got = client.get(list(acked))
        missing = [k for k, v in acked.items() if got[k] is None or got[k].reveal() != v]  # type: ignore[union-attr]
        assert not missing, f"{len(missing)} acked writes lost, e.g. {missing[:5]}"
        s = client.get("set")["set"]
        assert s is not None and sets <= s.reveal()
    finally:
        client.close()


def test_restart_after_compaction_and_clean_stop(procs: ProcessGroup, tmp_path: Path) -> None:
    from anna.shard import server as shard_server

    path, cfg = write_config(tmp_path, "snap")
    _start(procs, path)
    cluster = KvsCluster(procs, path, cfg, "snap")
    wait_ready(cluster)
    client = cluster.client()
    try:
        for r in range(3):
            assert client.put(
                [f"s{i}" for i in range(100)], [LWWPairLattice(r + 1, b"%d" % r)] * 100
            )
        procs.kill("shard0", signal.SIGTERM)  # clean stop
        data = Path(cfg["kvs"]["data_dir"])
        assert any(data.rglob("wal.log"))
        # compact offline exactly as the shard does, then restart from snapshot + log
        from anna.shard.logic import ShardState
        from anna.shard.wal import WriteAheadLog

        (shard_dir,) = list(data.glob("*/shard0"))
        wal = WriteAheadLog(shard_dir)
        st = ShardState("x", 0, shard_server.pb.Membership(), 8)
        st.store.clear()
        records = list(wal.recover())
        assert len(records) == 300 + len([r for r in records if r.key.startswith("__ready")])
        wal.open()
        from anna.shard.logic import Entry
        from lattices import from_payload

        for t in records:
            st.store[t.key] = Entry(t.lattice_type, from_payload(t.lattice_type, t.payload), None)
        wal.compact(st.snapshot())
        wal.close()
        _start(procs, path, shard=True)
        wait_ready(cluster)
        time.sleep(0.1)
        got = client.get([f"s{i}" for i in range(100)])
        assert all(v == LWWPairLattice(3, b"2") for v in got.values())
    finally:
        client.close()
