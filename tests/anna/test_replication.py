"""Replication: gossip convergence after conflicting PUTs, put_all, per-key factors."""

from __future__ import annotations

import time
from typing import Any

import pytest

from anna.proto import anna_pb2 as pb
from lattices import LWWPairLattice, SetLattice, to_payload
from tests.anna.conftest import KvsCluster, poll
from tests.anna.test_protocol import Raw

pytestmark = pytest.mark.integration


def _put(raw: Raw, addr: str, key: str, lattice: Any) -> None:
    lt, payload = to_payload(lattice)
    resp = raw.request(
        addr,
        pb.KeyRequest(type=pb.PUT, tuples=[pb.KeyTuple(key=key, lattice_type=lt, payload=payload)]),  # type: ignore[arg-type]
    )
    assert resp.tuples[0].error == pb.NO_ERROR


def _read(raw: Raw, addr: str, key: str) -> bytes:
    resp = raw.request(addr, pb.KeyRequest(type=pb.GET, tuples=[pb.KeyTuple(key=key)]))
    return resp.tuples[0].payload


def test_conflicting_puts_to_different_replicas_converge(kvs_factory: Any) -> None:
    kvs: KvsCluster = kvs_factory(shards=2, replication_local=2)
    client = kvs.client()
    raw = Raw()
    try:
        (reps,) = client.get_addresses(["c"]).values()
        assert sorted(reps) == [kvs.shard_address(0), kvs.shard_address(1)]
        # same timestamp, different values, one to each replica; and set unions
        _put(raw, reps[0], "c", LWWPairLattice(9, b"apple"))
        _put(raw, reps[1], "c", LWWPairLattice(9, b"banana"))
        _put(raw, reps[0], "s", SetLattice({b"x"}))
        _put(raw, reps[1], "s", SetLattice({b"y"}))
        want_c = LWWPairLattice(9, b"banana").serialize()
        want_s = SetLattice({b"x", b"y"}).serialize()
        poll(lambda: all(_read(raw, a, "c") == want_c for a in reps), 10, "LWW convergence")
        poll(lambda: all(_read(raw, a, "s") == want_s for a in reps), 10, "set convergence")
        assert client.get_all("c")["c"] == LWWPairLattice(9, b"banana")
    finally:
        raw.close()
        client.close()


def test_put_all_is_on_every_replica_at_ack(kvs_factory: Any) -> None:
    # gossip slowed down: only put_all can make both replicas hold the value now
    kvs: KvsCluster = kvs_factory(shards=2, replication_local=2, gossip_period_s=30)
    client = kvs.client()
    raw = Raw()
    try:
        assert client.put_all("pa", LWWPairLattice(3, b"everywhere")) is True
        want = LWWPairLattice(3, b"everywhere").serialize()
        for addr in client.get_addresses(["pa"])["pa"]:
            assert _read(raw, addr, "pa") == want
        res = client.put_all(["x", "y"], [SetLattice({b"1"}), SetLattice({b"2"})])
        assert res == {"x": True, "y": True}
    finally:
        raw.close()
        client.close()


def test_per_key_replication_factor(kvs_factory: Any) -> None:
    kvs: KvsCluster = kvs_factory(shards=3)
    client = kvs.client()
    try:
        assert len(client.get_addresses(["hot"])["hot"]) == 1
        client.set_replication("hot", 1, 3)
        poll(
            lambda: len(client.get_addresses(["hot"], refresh=True)["hot"]) == 3,
            10,
            "replication factor 3 for 'hot'",
        )
        assert client.put_all("hot", LWWPairLattice(1, b"h")) is True
        assert client.get_all("hot")["hot"] == LWWPairLattice(1, b"h")
        assert len(client.get_addresses(["cold"])["cold"]) == 1
    finally:
        client.close()


def test_replica_that_missed_writes_converges_by_anti_entropy(kvs_factory: Any) -> None:
    # Gossip every 30 s: within this test only anti-entropy (every 0.3 s) can carry the
    # writes made at one replica to the other, and settle a lattice type conflict.
    kvs: KvsCluster = kvs_factory(
        shards=2, replication_local=2, gossip_period_s=30, anti_entropy_period_s=0.3
    )
    raw = Raw()
    try:
        r0, r1 = kvs.shard_address(0), kvs.shard_address(1)
        keys = [f"ae{i}" for i in range(50)]
        for key in keys:
            _put(raw, r0, key, SetLattice({key.encode()}))
        _put(raw, r0, "t", LWWPairLattice(7, b"lww"))
        _put(raw, r1, "t", SetLattice({b"set"}))  # SET (2) beats LWW (1) everywhere
        want = {key: SetLattice({key.encode()}).serialize() for key in keys}
        want["t"] = SetLattice({b"set"}).serialize()
        start = time.monotonic()
        poll(
            lambda: all(_read(raw, a, k) == v for a in (r0, r1) for k, v in want.items()),
            6,
            "anti-entropy convergence",
            interval=0.1,
        )
        assert time.monotonic() - start < 6
    finally:
        raw.close()
