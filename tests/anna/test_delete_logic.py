"""DELETE and tombstones in the shard state machine (no processes): a deleted key stays
deleted through gossip, anti-entropy, hand-off and WAL replay; a newer write brings it
back; tombstones are dropped after their TTL; subscribed caches are told."""

from __future__ import annotations

from typing import Any

from anna.membership import make_node
from anna.proto import anna_pb2 as pb
from anna.shard.logic import Append, Reply, SendInternal, ShardState, Tomb
from anna.wire import lww_payload_parts, parse_single_key_response
from cache.logic import CacheState
from lattices import LWWPairLattice, SetLattice, to_payload

ADDR = "tcp://127.0.0.1:9999"


class Clock:
    def __init__(self, ms: int = 1_000_000) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def _two_nodes() -> pb.Membership:
    return pb.Membership(nodes=[make_node(f"127.0.0.{i + 1}", 6200, 6250, 1, 1) for i in range(2)])


def _pair(clock: Clock | None = None) -> tuple[ShardState, ShardState]:
    clock = clock or Clock()
    a = ShardState("127.0.0.1:6200", 0, _two_nodes(), 64, default_global=2, wall_ms=clock)
    b = ShardState("127.0.0.2:6200", 0, _two_nodes(), 64, default_global=2, wall_ms=clock)
    return a, b


def _one(clock: Clock | None = None, **kw: Any) -> ShardState:
    m = pb.Membership(nodes=[make_node("127.0.0.1", 6200, 6250, 1, 1)])
    return ShardState("127.0.0.1:6200", 0, m, 64, wall_ms=clock or Clock(), **kw)


def _put(st: ShardState, key: str, lattice: object) -> pb.KeyTuple:
    lt, payload = to_payload(lattice)  # type: ignore[arg-type]
    t = pb.KeyTuple(key=key, lattice_type=lt, payload=payload)  # type: ignore[arg-type]
    (reply,) = [
        a
        for a in st.handle_request(pb.KeyRequest(type=pb.PUT, tuples=[t], response_address=ADDR))
        if isinstance(a, Reply)
    ]
    assert isinstance(reply.response, pb.KeyResponse)
    return reply.response.tuples[0]


def _delete(st: ShardState, key: str, ts: int = 0) -> list[Any]:
    payload = b"".join(lww_payload_parts(ts, b"")) if ts else b""
    t = pb.KeyTuple(key=key, payload=payload)
    return st.handle_request(pb.KeyRequest(type=pb.DELETE, tuples=[t], response_address=ADDR))


def _get(st: ShardState, key: str) -> pb.KeyTuple:
    (reply,) = st.handle_request(
        pb.KeyRequest(type=pb.GET, tuples=[pb.KeyTuple(key=key)], response_address=ADDR)
    )
    assert isinstance(reply, Reply) and isinstance(reply.response, pb.KeyResponse)
    return reply.response.tuples[0]


def _gossip(src: ShardState, dst: ShardState) -> None:
    for a in src.gossip_tick():
        if isinstance(a, SendInternal):
            dst.handle_gossip(a.message)  # type: ignore[arg-type]


def test_delete_answers_no_error_logs_a_tombstone_and_get_is_key_dne() -> None:
    st = _one()
    _put(st, "k", LWWPairLattice(10, b"v"))
    actions = _delete(st, "k", ts=20)
    appends = [a for a in actions if isinstance(a, Append)]
    assert appends and appends[0].tuples[0][:2] == ("k", pb.TOMBSTONE)
    (reply,) = [a for a in actions if isinstance(a, Reply)]
    assert isinstance(reply.response, pb.KeyResponse)
    assert reply.response.type == pb.DELETE and reply.response.tuples[0].error == pb.NO_ERROR
    got = _get(st, "k")
    assert got.error == pb.KEY_DNE and got.payload == b"" and got.lattice_type == pb.NONE
    # the one-key fast path agrees
    fast = st.handle_single(pb.GET, "k", 0, b"", 0, ADDR, "x")
    parsed = parse_single_key_response(fast[0].response)
    assert parsed is not None and parsed[3] == pb.KEY_DNE
    # and so does a fast-path DELETE of a key never written
    (rep,) = [
        a
        for a in st.handle_single(pb.DELETE, "never", 0, b"", 0, ADDR, "d")
        if isinstance(a, Reply)
    ]
    parsed = parse_single_key_response(rep.response)  # type: ignore[arg-type]
    assert parsed is not None and parsed[0] == pb.DELETE and parsed[3] == pb.NO_ERROR
    assert _get(st, "never").error == pb.KEY_DNE


def test_lww_older_write_stays_deleted_newer_write_resurrects() -> None:
    st = _one()
    _put(st, "k", LWWPairLattice(10, b"v"))
    _delete(st, "k", ts=20)
    assert _put(st, "k", LWWPairLattice(15, b"late")).error == pb.NO_ERROR  # acked, no-op
    assert _get(st, "k").error == pb.KEY_DNE
    # a delete stamped before the stored write still removes what it saw
    _put(st, "j", LWWPairLattice(50, b"v"))
    _delete(st, "j", ts=20)
    assert _get(st, "j").error == pb.KEY_DNE
    assert _put(st, "j", LWWPairLattice(50, b"again")).error == pb.NO_ERROR
    assert _get(st, "j").error == pb.KEY_DNE
    # newer: back
    _put(st, "k", LWWPairLattice(21, b"new"))
    got = _get(st, "k")
    assert got.error == pb.NO_ERROR and LWWPairLattice.parse(got.payload).value == b"new"
    # a PUT of another type after a delete is accepted (the key is gone)
    _delete(st, "k", ts=30)
    assert _put(st, "k", SetLattice({b"s"})).error == pb.NO_ERROR
    assert SetLattice.parse(_get(st, "k").payload) == SetLattice({b"s"})


def test_set_put_after_delete_brings_the_key_back_without_the_old_elements() -> None:
    st = _one()
    _put(st, "s", SetLattice({b"a", b"b"}))
    _delete(st, "s")
    assert _get(st, "s").error == pb.KEY_DNE
    _put(st, "s", SetLattice({b"c"}))
    assert SetLattice.parse(_get(st, "s").payload) == SetLattice({b"c"})


def test_replication_delete_converges_and_old_gossip_does_not_resurrect() -> None:
    a, b = _pair()
    _put(a, "k", LWWPairLattice(10, b"v"))
    _gossip(a, b)
    assert _get(b, "k").error == pb.NO_ERROR
    _delete(b, "k", ts=20)
    # a's stale value reaches b again (e.g. a's gossip or anti-entropy): stays deleted
    b.handle_gossip(
        pb.Gossip(
            tuples=[pb.KeyTuple(key="k", lattice_type=pb.LWW, payload=a.store["k"].get_payload())]
        )
    )
    assert _get(b, "k").error == pb.KEY_DNE
    _gossip(b, a)
    assert _get(a, "k").error == pb.KEY_DNE
    assert a.store["k"].payload == b.store["k"].payload  # same tombstone on both
    # the sets case: an old replica value is covered by the deleted value
    _put(a, "s", SetLattice({b"x"}))
    _gossip(a, b)
    _delete(a, "s")
    b.handle_gossip(
        pb.Gossip(
            tuples=[
                pb.KeyTuple(key="s", lattice_type=pb.SET, payload=SetLattice({b"x"}).serialize())
            ]
        )
    )
    _gossip(a, b)
    assert _get(b, "s").error == pb.KEY_DNE and _get(a, "s").error == pb.KEY_DNE
    # a newer write on one replica wins over the tombstone on the other, either order
    _put(a, "k", LWWPairLattice(30, b"back"))
    _gossip(a, b)
    _gossip(b, a)
    for st in (a, b):
        got = _get(st, "k")
        assert got.error == pb.NO_ERROR and LWWPairLattice.parse(got.payload).value == b"back"


def test_concurrent_delete_and_newer_put_converge_in_any_order() -> None:
    a, b = _pair()
    _put(a, "k", LWWPairLattice(10, b"v"))
    _gossip(a, b)
    _delete(a, "k", ts=20)
    _put(b, "k", LWWPairLattice(25, b"w"))
    _gossip(a, b)
    _gossip(b, a)
    for st in (a, b):
        assert LWWPairLattice.parse(_get(st, "k").payload).value == b"w"
    # two concurrent deletes: the same tombstone everywhere
    _delete(a, "k", ts=40)
    _delete(b, "k", ts=41)
    _gossip(a, b)
    _gossip(b, a)
    assert a.store["k"].payload == b.store["k"].payload
    tomb = Tomb.parse(a.store["k"].get_payload())
    assert tomb is not None and tomb.lattice == LWWPairLattice(41, b"")


def test_anti_entropy_carries_tombstones() -> None:
    a, b = _pair()
    _put(a, "k", LWWPairLattice(10, b"v"))
    _gossip(a, b)
    _delete(a, "k", ts=20)
    a.gossip_tick()  # lost on the way to b
    assert _get(b, "k").error == pb.NO_ERROR
    for _ in range(4):  # digest -> differing buckets -> tuples / want
        msgs = [x for x in a.anti_entropy_tick() if isinstance(x, SendInternal)]
        while msgs:
            nxt = []
            for m in msgs:
                dst = b if m.address == "tcp://127.0.0.2:6250" else a
                out = (
                    dst.handle_anti_entropy(m.message)
                    if m.kind == b"antientropy"
                    else dst.handle_gossip(m.message)
                )  # type: ignore[arg-type]
                nxt += [x for x in out if isinstance(x, SendInternal)]
            msgs = nxt
    assert _get(b, "k").error == pb.KEY_DNE


def test_wal_replay_keeps_the_delete_and_a_later_put() -> None:
    st = _one()
    log: list[tuple[str, int, bytes]] = []

    def run(actions: list[Any]) -> None:
        for x in actions:
            if isinstance(x, Append):
                log.extend(x.tuples)

    run(
        st.handle_request(
            pb.KeyRequest(
                type=pb.PUT,
                tuples=[
                    pb.KeyTuple(
                        key="a", lattice_type=pb.LWW, payload=LWWPairLattice(1, b"1").serialize()
                    )
                ],
            )
        )
    )
    run(_delete(st, "a", ts=5))
    run(
        st.handle_request(
            pb.KeyRequest(
                type=pb.PUT,
                tuples=[
                    pb.KeyTuple(
                        key="b", lattice_type=pb.LWW, payload=LWWPairLattice(1, b"1").serialize()
                    )
                ],
            )
        )
    )
    run(_delete(st, "b", ts=5))
    run(
        st.handle_request(
            pb.KeyRequest(
                type=pb.PUT,
                tuples=[
                    pb.KeyTuple(
                        key="b", lattice_type=pb.LWW, payload=LWWPairLattice(9, b"9").serialize()
                    )
                ],
            )
        )
    )
    again = _one()
    again.replay(pb.KeyTuple(key=k, lattice_type=lt, payload=p) for k, lt, p in log)  # type: ignore[arg-type]
    assert _get(again, "a").error == pb.KEY_DNE
    assert LWWPairLattice.parse(_get(again, "b").payload).value == b"9"
    # the snapshot keeps the tombstone too
    third = _one()
    third.replay(again.snapshot())
    assert _get(third, "a").error == pb.KEY_DNE
    third.replay(
        [pb.KeyTuple(key="a", lattice_type=pb.LWW, payload=LWWPairLattice(1, b"1").serialize())]
    )
    assert _get(third, "a").error == pb.KEY_DNE


def test_tombstones_are_dropped_after_their_ttl() -> None:
    clock = Clock()
    st = _one(clock, tombstone_ttl_ms=1000)
    _put(st, "k", LWWPairLattice(10, b"v"))
    _delete(st, "k", ts=20)
    assert st.tombstone_gc() == [] and "k" in st.store
    clock.ms += 1001
    (drop,) = st.tombstone_gc()
    assert isinstance(drop, Append) and drop.tuples == [("k", pb.NONE, b"")]
    assert "k" not in st.store and not st.tombs
    assert _get(st, "k").error == pb.KEY_DNE
    # a resurrected key is no tombstone any more: nothing to drop
    _delete(st, "j", ts=5)
    _put(st, "j", LWWPairLattice(6, b"v"))
    clock.ms += 5000
    assert st.tombstone_gc() == [] and "j" in st.store


def test_subscribed_cache_is_told_and_drops_the_key() -> None:
    st = _one()
    _put(st, "k", LWWPairLattice(10, b"v"))
    st.handle_subscription(pb.CacheSubscription(cache_address="tcp://c:1", keys=["k"]))
    (welcome,) = st.push_tick()
    _delete(st, "k", ts=20)
    (push,) = st.push_tick()
    assert isinstance(push, Reply) and push.address == "tcp://c:1"
    assert isinstance(push.response, pb.KeyResponse)
    (t,) = push.response.tuples
    assert t.key == "k" and t.error == pb.KEY_DNE
    # a subscription that arrives after the delete (the cache fetched the value just
    # before it) is told too
    st.handle_subscription(pb.CacheSubscription(cache_address="tcp://c:2", keys=["k"]))
    (late,) = st.push_tick()
    assert late.address == "tcp://c:2"
    assert isinstance(late.response, pb.KeyResponse) and late.response.tuples[0].error == pb.KEY_DNE

    cache = CacheState("n", ["tcp://r:1"], "tcp://c:1", "tcp://c:1a", 1 << 20)
    cache.addresses["k"] = ["tcp://127.0.0.1:6200"]
    assert isinstance(welcome.response, pb.KeyResponse)
    cache._store("k", pb.LWW, welcome.response.tuples[0].payload)
    assert "k" in cache.entries and cache.used > 0
    actions = cache.key_response(push.response, 0.0)
    assert "k" not in cache.entries and cache.used == 0 and "k" not in cache.subs
    assert actions  # the unsubscription
