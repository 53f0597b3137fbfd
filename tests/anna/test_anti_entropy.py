"""Anti-entropy digests and lattice type conflicts on the shard state machine (no I/O)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

import pytest

from anna import wire
from anna.membership import make_node
from anna.proto import anna_pb2 as pb
from anna.shard.logic import (
    AE_BUCKETS,
    Append,
    SendInternal,
    ShardState,
    ae_bucket,
)
from lattices import LWWPairLattice, SetLattice, to_payload

ADDR = "tcp://127.0.0.1:9999"


def _cluster(n: int) -> list[ShardState]:
    """``n`` shards of one node, every key replicated on all of them."""
    m = pb.Membership(nodes=[make_node("127.0.0.1", 6200, 6250, n, 1)])
    return [
        ShardState("127.0.0.1:6200", i, pb.Membership(nodes=m.nodes), 64, default_local=n)
        for i in range(n)
    ]


def _put(st: ShardState, key: str, lattice: object) -> int:
    lt, payload = to_payload(lattice)  # type: ignore[arg-type]
    req = pb.KeyRequest(
        type=pb.PUT,
        tuples=[pb.KeyTuple(key=key, lattice_type=lt, payload=payload)],  # type: ignore[arg-type]
        response_address=ADDR,
    )
    (reply,) = [a for a in st.handle_request(req) if not isinstance(a, Append)]
    return int(reply.response.tuples[0].error)  # type: ignore[union-attr]


def _deliver(states: list[ShardState], actions: Sequence[object], seed: int) -> int:
    """Deliver SendInternal actions (through the wire encoding) in a random order,
    including the messages they cause, until none is left; returns how many."""
    rng = random.Random(seed)
    by_addr = {st.my_gossip: st for st in states}
    queue = [a for a in actions if isinstance(a, SendInternal)]
    n = 0
    while queue:
        a = queue.pop(rng.randrange(len(queue)))
        n += 1
        kind, msg = wire.decode_internal(wire.encode_internal(a.kind, a.message))
        st = by_addr[a.address]
        if kind == wire.KIND_GOSSIP:
            out = st.handle_gossip(msg)  # type: ignore[arg-type]
        else:
            assert kind == wire.KIND_ANTI_ENTROPY
            out = st.handle_anti_entropy(msg)  # type: ignore[arg-type]
        queue.extend(x for x in out if isinstance(x, SendInternal))
        assert n < 10_000
    return n


def _contents(st: ShardState) -> dict[str, tuple[int, bytes]]:
    return {k: (e.lattice_type, e.lattice.serialize()) for k, e in st.store.items()}


def _drop_gossip(states: list[ShardState]) -> None:
    """Gossip lost: clear what each shard would have sent."""
    for st in states:
        st.gossip_tick()


def test_digests_equal_when_stores_equal() -> None:
    a, b = _cluster(2)
    for i in range(300):
        for st in (a, b):
            _put(st, f"k{i}", SetLattice({b"x", str(i).encode()}))
    _drop_gossip([a, b])
    a.anti_entropy_tick()
    b.anti_entropy_tick()
    assert a.ae_digest(b.my_gossip) == b.ae_digest(a.my_gossip)
    assert a.ae_digest(b.my_gossip) != bytes(8 * AE_BUCKETS)
    # an exchange between equal stores moves no tuple
    assert _deliver([a, b], a.anti_entropy_tick() + b.anti_entropy_tick(), 1) == 2
    assert a.stats["ae_in_sync"] == b.stats["ae_in_sync"] == 1
    assert a.stats["ae_keys_sent"] == b.stats["ae_keys_sent"] == 0


def test_digest_is_incremental_and_matches_a_fresh_index() -> None:
    a, b = _cluster(2)
    for i in range(200):
        _put(a, f"k{i}", LWWPairLattice(i, b"v"))
    a.anti_entropy_tick()
    for i in range(0, 200, 3):
        _put(a, f"k{i}", LWWPairLattice(1000 + i, b"w"))
    _put(a, "new", SetLattice({b"n"}))
    a.anti_entropy_tick()
    # the same values, indexed from scratch by a replica that replays them
    fresh = _cluster(2)[0]
    fresh.replay(a.snapshot())
    fresh.anti_entropy_tick()
    assert a.ae_digest(b.my_gossip) == fresh.ae_digest(b.my_gossip)


def test_rehash_is_bounded_per_tick() -> None:
    a, b = _cluster(2)
    for i in range(50):
        _put(a, f"k{i}", SetLattice({b"v"}))
    a.ae_pending.update(a.dirty)
    assert not a._ae_refresh(max_keys=20)  # 30 left
    assert a.stats["ae_rehashed"] == 20 and len(a.ae_pending) == 30
    assert a._ae_refresh(max_keys=20, max_bytes=1) is False  # byte budget: one key
    assert a._ae_refresh()
    assert a.anti_entropy_tick()  # up to date: the digest goes out


def test_differing_buckets_are_found() -> None:
    a, b = _cluster(2)
    for i in range(500):
        _put(a, f"k{i}", SetLattice({b"v"}))
        if i not in (5, 7):
            _put(b, f"k{i}", SetLattice({b"v"}))
    _put(b, "k7", SetLattice({b"other"}))
    _drop_gossip([a, b])
    (digest,) = a.anti_entropy_tick()
    assert isinstance(digest, SendInternal) and digest.address == b.my_gossip
    (step2,) = b.handle_anti_entropy(digest.message)  # type: ignore[arg-type]
    assert isinstance(step2, SendInternal) and step2.kind == wire.KIND_ANTI_ENTROPY
    msg = step2.message
    assert isinstance(msg, pb.AntiEntropy)
    assert sorted(msg.bucket_ids) == sorted({ae_bucket("k5"), ae_bucket("k7")})
    # only the keys of those buckets are listed, and k5 (missing at b) is not
    listed = {kh.key for kh in msg.keys}
    assert "k7" in listed and "k5" not in listed
    assert all(ae_bucket(k) in msg.bucket_ids for k in listed)
    # step 3: a sends what b lacks or holds differently, and asks for b's k7
    out = a.handle_anti_entropy(msg)
    sent = {t.key for x in out if x.kind == wire.KIND_GOSSIP for t in x.message.tuples}  # type: ignore[union-attr]
    wants = [list(x.message.want) for x in out if x.kind == wire.KIND_ANTI_ENTROPY]  # type: ignore[union-attr]
    assert sent == {"k5", "k7"} and wants == [["k7"]]


@pytest.mark.parametrize("seed", range(6))
def test_two_replicas_converge_in_any_order(seed: int) -> None:
    a, b = _cluster(2)
    rng = random.Random(seed)
    for i in range(200):
        for st in rng.sample([a, b], rng.randint(0, 2)):
            _put(st, f"s{i}", SetLattice({str(rng.randrange(5)).encode()}))
        if rng.random() < 0.5:
            _put(rng.choice([a, b]), f"l{i}", LWWPairLattice(rng.randrange(3), b"%d" % i))
    _drop_gossip([a, b])
    assert _contents(a) != _contents(b)
    initiators = [[a], [b], [a, b]][seed % 3]
    ticks = [x for st in initiators for x in st.anti_entropy_tick()]
    _deliver([a, b], ticks, seed)
    assert _contents(a) == _contents(b)
    a.anti_entropy_tick(), b.anti_entropy_tick()  # re-index what was merged
    assert a.ae_digest(b.my_gossip) == b.ae_digest(a.my_gossip)


@pytest.mark.parametrize("seed", range(4))
def test_three_replicas_converge_in_any_order(seed: int) -> None:
    states = _cluster(3)
    rng = random.Random(seed)
    for i in range(150):
        for st in states:
            if rng.random() < 0.4:
                _put(st, f"k{i}", SetLattice({st.my_gossip.encode()[-4:]}))
    _drop_gossip(states)
    for _ in range(2):  # one round from every shard suffices; a second one is a no-op
        _deliver(states, [x for st in states for x in st.anti_entropy_tick()], seed)
    want = _contents(states[0])
    assert len(want) == len({f"k{i}" for i in range(150)} & set(want))
    assert all(_contents(st) == want for st in states[1:])


def test_anti_entropy_resolves_a_type_conflict() -> None:
    a, b = _cluster(2)
    _put(a, "t", LWWPairLattice(5, b"lww"))
    _put(b, "t", SetLattice({b"set"}))
    _drop_gossip([a, b])
    _deliver([a, b], a.anti_entropy_tick(), 0)
    assert _contents(a) == _contents(b)
    assert a.store["t"].lattice_type == pb.SET  # SET (2) > LWW (1)


@pytest.mark.parametrize("first", [0, 1])
def test_type_conflict_in_gossip_converges_in_both_orders(first: int) -> None:
    a, b = _cluster(2)
    assert _put(a, "t", LWWPairLattice(5, b"lww")) == pb.NO_ERROR
    assert _put(b, "t", SetLattice({b"set"})) == pb.NO_ERROR
    ga, gb = a.gossip_tick(), b.gossip_tick()
    order = [(b, ga), (a, gb)] if first == 0 else [(a, gb), (b, ga)]
    for st, actions in order:
        for x in actions:
            st.handle_gossip(x.message)  # type: ignore[union-attr,arg-type]
    assert _contents(a) == _contents(b)
    assert a.store["t"].lattice == SetLattice({b"set"})
    assert a.stats["type_conflict_replaced"] == 1 and b.stats["type_conflict_ignored"] == 1
    # a client PUT of another type than the stored one still answers LATTICE
    assert _put(a, "t", LWWPairLattice(9, b"x")) == pb.LATTICE
    assert _put(a, "t", SetLattice({b"more"})) == pb.NO_ERROR


def test_type_conflict_rule_is_order_independent() -> None:
    values = [
        to_payload(LWWPairLattice(3, b"a")),
        to_payload(LWWPairLattice(4, b"b")),
        to_payload(SetLattice({b"x"})),
        to_payload(SetLattice({b"y"})),
        (pb.SET, b"\xff\xff garbage"),  # a larger type that does not decode: ignored
        (pb.PRIORITY, b"\xff\xff garbage"),
    ]
    results = set()
    for perm in itertools.permutations(values):
        (st,) = _cluster(1)
        for lt, payload in perm:
            st.merge_replica("k", lt, payload)
        results.add((st.store["k"].lattice_type, st.store["k"].lattice.serialize()))
    assert results == {(pb.SET, SetLattice({b"x", b"y"}).serialize())}


def test_replay_applies_type_replacements_from_the_log() -> None:
    a, b = _cluster(2)
    log: list[tuple[str, int, bytes]] = []
    _put(a, "t", LWWPairLattice(1, b"v"))
    log.append(("t", *to_payload(LWWPairLattice(1, b"v"))))
    _put(b, "t", SetLattice({b"s"}))
    for x in b.gossip_tick():
        for act in a.handle_gossip(x.message):  # type: ignore[union-attr,arg-type]
            log.extend(act.tuples)  # type: ignore[union-attr]
    (r,) = _cluster(2)[:1]
    r.replay(pb.KeyTuple(key=k, lattice_type=lt, payload=p) for k, lt, p in log)  # type: ignore[arg-type]
    assert _contents(r) == _contents(a) == _contents(b)


def test_malformed_or_foreign_anti_entropy_is_counted_not_fatal() -> None:
    a, b = _cluster(2)
    _put(a, "k", SetLattice({b"v"}))
    peer = b.my_gossip
    bad = [
        pb.AntiEntropy(sender=peer, buckets=AE_BUCKETS, digest=b"short"),
        pb.AntiEntropy(sender=peer, buckets=7, digest=bytes(8 * AE_BUCKETS)),
        pb.AntiEntropy(sender="tcp://10.9.9.9:1", buckets=AE_BUCKETS, digest=bytes(8 * AE_BUCKETS)),
        pb.AntiEntropy(sender="", want=["k"]),
        pb.AntiEntropy(sender=a.my_gossip, want=["k"]),  # itself
        pb.AntiEntropy(sender=peer, bucket_ids=[AE_BUCKETS + 5, 2**32 - 1]),
        pb.AntiEntropy(sender=peer),
        pb.AntiEntropy(sender=peer, want=["nope", "ANNA_METADATA|x"]),
    ]
    for msg in bad:
        for x in a.handle_anti_entropy(msg):
            assert isinstance(x, SendInternal) and x.address == peer
    assert a.stats["ae_malformed"] >= 3 and a.stats["ae_ignored"] == 3
    for garbage in (b"\xff\xff\xff", b"\x0a\x05ab"):
        with pytest.raises(wire.WireError):
            wire.decode_internal([wire.KIND_ANTI_ENTROPY, garbage])


def test_disabled_anti_entropy_sends_nothing() -> None:
    m = pb.Membership(nodes=[make_node("127.0.0.1", 6200, 6250, 2, 1)])
    st = ShardState("127.0.0.1:6200", 0, m, 64, default_local=2, anti_entropy=False)
    _put(st, "k", SetLattice({b"v"}))
    st.gossip_tick()
    assert st.anti_entropy_tick() == []
    assert st.handle_anti_entropy(pb.AntiEntropy(sender="tcp://127.0.0.1:6251", want=["k"])) == []
    assert not st.ae_pending and not st._ae_key
