"""AnnaTcpClient.pipeline(): many single-key ops in flight, answers in queue order."""

from __future__ import annotations

import os

import pytest

from lattices import LWWPairLattice, PriorityLattice, SetLattice, make_timestamp
from tests.anna.conftest import KvsCluster


@pytest.fixture(scope="module")
def kvs(module_kvs: KvsCluster) -> KvsCluster:
    """One 2-shard KVS node for this module's tests (each uses its own keys)."""
    return module_kvs


def test_mixed_ops_answer_in_queue_order(kvs: KvsCluster) -> None:
    client = kvs.client()
    try:
        ts = make_timestamp()
        p = client.pipeline()
        p.put("pa", LWWPairLattice(ts, b"a")).get("pa").get("p-missing")
        p.put("ps", SetLattice({b"x"})).put("ps", SetLattice({b"y"})).get("ps")
        p.put("pm", PriorityLattice(2.0, b"hi")).get("pm")
        assert len(p) == 8
        res = p.execute()
        assert len(p) == 0 and len(res) == 8
        assert res[0] is True and res[3] is True and res[4] is True and res[6] is True
        assert res[1] == LWWPairLattice(ts, b"a")  # a GET queued after a PUT sees it
        assert res[2] is None
        assert res[5] == SetLattice({b"x", b"y"})
        assert res[7] == PriorityLattice(2.0, b"hi")
        # The same values through the one-at-a-time API.
        assert client.get("ps")["ps"] == SetLattice({b"x", b"y"})
        assert client.pipeline().execute() == []
    finally:
        client.close()


def test_more_ops_than_the_window_and_large_values(kvs: KvsCluster) -> None:
    client = kvs.client()
    try:
        n = 2500  # more than the 1000 unanswered requests the client allows at once
        ts = make_timestamp()
        p = client.pipeline()
        for i in range(n):
            p.put(f"w{i}", LWWPairLattice(ts, b"%d" % i))
        big = os.urandom(1 << 20)
        # A small PUT then a 1 MB PUT of one key: the large one is sent on its own but
        # must not overtake the small one (it has the later timestamp and must win).
        p.put("big", LWWPairLattice(ts, b"small")).put("big", LWWPairLattice(ts + 1, big))
        p.get("big")
        res = p.execute(timeout=30)
        assert all(r is True for r in res[: n + 2])
        assert res[n + 2] == LWWPairLattice(ts + 1, big)
        p = client.pipeline()
        for i in range(n):
            p.get(f"w{i}")
        got = p.execute(timeout=30)
        assert [g.reveal() for g in got] == [b"%d" % i for i in range(n)]
    finally:
        client.close()


def test_moved_keys_are_retried_through_routing(kvs: KvsCluster) -> None:
    """A stale address (the other shard) gets WRONG_THREAD; the op still succeeds."""
    client = kvs.client()
    try:
        keys = [f"mv{i}" for i in range(20)]
        assert all(client.put(keys, [LWWPairLattice(1, b"v")] * len(keys)).values())
        owners = client.get_addresses(keys)
        shards = {kvs.shard_address(0), kvs.shard_address(1)}
        for k in keys:
            (owner,) = owners[k]
            client._cache[k] = [next(iter(shards - {owner}))]  # the wrong shard
        p = client.pipeline()
        for k in keys:
            p.get(k).put(k, LWWPairLattice(2, b"w"))
        res = p.execute()
        # Retried in queue order: each key's GET before its PUT.
        assert res[0::2] == [LWWPairLattice(1, b"v")] * len(keys)
        assert all(r is True for r in res[1::2])
        assert client.get(keys) == {k: LWWPairLattice(2, b"w") for k in keys}
        assert client.get_addresses(keys) == owners  # the cache was corrected
    finally:
        client.close()


def test_bad_input_raises_before_sending(kvs: KvsCluster) -> None:
    client = kvs.client()
    try:
        with pytest.raises(TypeError, match="lattice"):
            client.pipeline().put("k", b"raw bytes")  # type: ignore[arg-type]
        p = client.pipeline()
        p.get(3)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="keys must be str"):
            p.execute()
    finally:
        client.close()
