"""KVS DELETE against real processes: replicas on two nodes converge on the delete, a
restarted shard (WAL replay) keeps it, and a cache that held the key stops serving it."""

from __future__ import annotations

import itertools
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import DecodeError

from anna.client import AnnaTcpClient
from anna.proto import anna_pb2 as pb
from cloudburst.shared.processes import ProcessGroup, port_open, wait_until
from lattices import LWWPairLattice, make_timestamp
from tests.anna.conftest import KvsCluster, poll
from tests.anna.test_protocol import Raw
from tests.cache.conftest import Cluster, start_kvs, write_config
from tests.cache.test_resubscribe import _shard_pids

pytestmark = pytest.mark.integration


_rids = itertools.count()


def _error(raw: Raw, addr: str, key: str) -> int:
    """The error of a GET of ``key`` at one replica. Messages that are not the answer
    (a late one, or stray bytes from a process of an earlier test that still sends to
    this recycled port) are skipped."""
    rid = f"e{next(_rids)}"
    req = pb.KeyRequest(
        type=pb.GET, tuples=[pb.KeyTuple(key=key)], response_address=raw.address, request_id=rid
    )
    raw.send(addr, req.SerializeToString())
    while True:
        data = raw.recv()
        assert data is not None, f"no answer from {addr}"
        try:
            resp = pb.KeyResponse.FromString(data)
        except DecodeError:
            continue
        if resp.response_id == rid:
            return int(resp.tuples[0].error)


def test_delete_with_replication_two_converges_across_nodes(kvs_factory: Any) -> None:
    a: KvsCluster = kvs_factory(name="a", ip="127.0.0.1", shards=1, replication_global=2)
    kvs_factory(name="b", ip="127.0.0.2", shards=1, replication_global=2, seed=a.routing_address)
    client = a.client()
    raw = Raw()
    try:

        def both() -> list[str] | None:
            reps = client.get_addresses(["gone"], refresh=True)["gone"]
            return sorted(reps) if len(reps) == 2 else None

        reps = poll(both, 20, "two replicas of the key")
        assert client.put_all("gone", LWWPairLattice(make_timestamp(), b"v")) is True
        assert client.put_all("kept", LWWPairLattice(make_timestamp(), b"k")) is True
        assert all(_error(raw, r, "gone") == pb.NO_ERROR for r in reps)
        assert client.delete("gone") is True  # one replica acknowledges
        poll(
            lambda: all(_error(raw, r, "gone") == pb.KEY_DNE for r in reps),
            15,
            "the delete on both replicas",
        )
        assert client.get("gone")["gone"] is None
        assert client.get_all("gone")["gone"] is None
        kept = client.get("kept")["kept"]
        assert kept is not None and kept.reveal() == b"k"
        # a later PUT brings it back on both; delete_all acks from every replica
        assert client.put("gone", LWWPairLattice(make_timestamp(), b"again"))
        poll(lambda: all(_error(raw, r, "gone") == pb.NO_ERROR for r in reps), 15, "resurrected")
        assert client.delete_all(["gone", "kept"]) == {"gone": True, "kept": True}
        assert all(_error(raw, r, k) == pb.KEY_DNE for r in reps for k in ("gone", "kept"))
    finally:
        raw.close()
        client.close()


def test_delete_survives_a_shard_restart_and_a_cache_drops_the_key(
    procs: ProcessGroup, tmp_path: Path
) -> None:
    cfg, path = write_config(tmp_path)
    kvs_proc = start_kvs(procs, cfg, path)
    cluster = Cluster(cfg, path, procs, f"127.0.0.1:{cfg.kvs.routing_port}", tmp_path)
    kvs = AnnaTcpClient(cluster.kvs_addr, timeout=10.0)
    cc = cluster.start_cache("d1")
    try:
        for k in ("held", "other", "wal"):
            assert kvs.put(k, LWWPairLattice(make_timestamp(), b"value of " + k.encode()))
        got = cc.get("held")["held"]
        assert got is not None and got.reveal() == b"value of held"  # held, subscribed
        assert kvs.delete("held") is True
        wait_until(lambda: cc.get("held")["held"] is None, 10, "the cache to drop 'held'")
        assert cc.get("other")["other"].reveal() == b"value of other"  # type: ignore[union-attr]
        assert kvs.delete("wal") is True
        assert kvs.get("wal")["wal"] is None

        (shard,) = _shard_pids(kvs_proc.pid)
        os.kill(shard, signal.SIGKILL)  # anna.local restarts it; it replays its WAL
        wait_until(
            lambda: (
                [p for p in _shard_pids(kvs_proc.pid) if p != shard]
                and port_open("127.0.0.1", cfg.kvs.shard_base_port)
            ),
            timeout=20,
            what="restarted shard",
        )

        def read(key: str) -> Any:
            try:
                return ("ok", kvs.get(key, timeout=2.0)[key])
            except Exception as exc:
                return None if "timed out" in str(exc) else ("error", exc)

        assert poll(lambda: read("other"), 20, "the restarted shard")[1] is not None
        assert read("wal") == ("ok", None)
        assert read("held") == ("ok", None)
        assert cc.get("held")["held"] is None
        # a newer PUT after the restart brings the key back, through the cache too
        assert kvs.put("held", LWWPairLattice(make_timestamp(), b"new"))
        wait_until(
            lambda: (v := cc.get("held")["held"]) is not None and v.reveal() == b"new",
            10,
            "the cache to serve the new value",
        )
    finally:
        cc.close()
        kvs.close()
