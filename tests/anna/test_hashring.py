"""Consistent hashing: stability, balance, minimal movement."""

from __future__ import annotations

from collections import Counter

import pytest

from anna.hashring import HashRing, balance, stable_hash
from anna.membership import Placement, make_node
from anna.proto import anna_pb2 as pb
from cloudburst.shared.config import KvsConfig

KEYS = [f"key{i}" for i in range(100_000)]


def test_stable_hash_is_stable_across_runs() -> None:
    # A fixed value: Python's randomized hash() would differ between processes.
    assert stable_hash(b"anna") == 0x849590E3A867558C
    assert stable_hash(b"anna", b"g") != stable_hash(b"anna", b"l")


def test_ring_lookup_distinct_members() -> None:
    ring = HashRing(["a", "b", "c"], virtual_nodes=64)
    got = ring.lookup("k", 3)
    assert sorted(got) == ["a", "b", "c"]
    assert ring.lookup("k", 5) == got  # capped at the member count
    assert HashRing([], 8).lookup("k") == []


def _placement(nodes: int, shards: int) -> Placement:
    m = pb.Membership(
        nodes=[make_node(f"127.0.0.{i + 1}", 6200, 6250, shards, 1) for i in range(nodes)]
    )
    return Placement(m, KvsConfig().virtual_nodes)


@pytest.mark.parametrize(("nodes", "shards"), [(1, 4), (1, 8), (2, 4), (4, 4), (8, 1)])
def test_balance_over_100k_keys(nodes: int, shards: int) -> None:
    """max/mean keys per shard <= 1.15 with the default number of virtual nodes."""
    p = _placement(nodes, shards)
    counts = Counter((r.node_id, r.index) for k in KEYS for r in p.replicas(k))
    assert len(counts) == nodes * shards
    assert balance(list(counts.values())) <= 1.15


def test_adding_a_node_moves_only_its_share() -> None:
    before = _placement(3, 2)
    after = _placement(4, 2)
    keys = KEYS[:20_000]
    moved = sum(before.replicas(k)[0] != after.replicas(k)[0] for k in keys)
    # Ideal: 1/4 of the keys move to the new node; nothing moves between old nodes.
    assert moved / len(keys) < 0.35
    for k in keys:
        a, b = before.replicas(k)[0], after.replicas(k)[0]
        if a != b:
            assert b.node_id == "127.0.0.4:6200"


def test_replicas_respect_factors() -> None:
    m = pb.Membership(
        nodes=[make_node(f"127.0.0.{i + 1}", 6200, 6250, 3, 1) for i in range(3)],
        replication=[pb.ReplicationFactor(key="hot", global_replication=3, local_replication=2)],
    )
    p = Placement(m, 64, default_global=2, default_local=1)
    reps = p.replicas("k")
    assert len(reps) == 2 and len({r.node_id for r in reps}) == 2
    hot = p.replicas("hot")
    assert len(hot) == 6 and len({r.node_id for r in hot}) == 3
    assert len(set(hot)) == 6
