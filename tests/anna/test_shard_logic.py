"""The shard state machine against every PROTOCOL.md rule (no processes)."""

from __future__ import annotations

from anna.membership import make_node
from anna.proto import anna_pb2 as pb
from anna.shard.logic import Append, Reply, SendInternal, ShardState
from anna.wire import KIND_GOSSIP
from lattices import LWWPairLattice, OrderedSetLattice, SetLattice, to_payload

ADDR = "tcp://127.0.0.1:9999"


def _state(shards: int = 1, index: int = 0, nodes: int = 1, **kw: int) -> ShardState:
    m = pb.Membership(
        nodes=[make_node(f"127.0.0.{i + 1}", 6200, 6250, shards, 1) for i in range(nodes)]
    )
    return ShardState("127.0.0.1:6200", index, m, 64, **kw)


def _req(rtype: int, *tuples: pb.KeyTuple, addr: str = ADDR, rid: str = "r1") -> pb.KeyRequest:
    return pb.KeyRequest(type=rtype, tuples=tuples, response_address=addr, request_id=rid)  # type: ignore[arg-type]


def _put_tuple(key: str, lattice: object, **kw: object) -> pb.KeyTuple:
    lt, payload = to_payload(lattice)  # type: ignore[arg-type]
    return pb.KeyTuple(key=key, lattice_type=lt, payload=payload, **kw)  # type: ignore[arg-type]


def _reply(actions: list[object]) -> pb.KeyResponse:
    replies = [a for a in actions if isinstance(a, Reply)]
    assert len(replies) == 1
    assert replies[0].address == ADDR
    return replies[0].response


def test_get_never_written_is_key_dne() -> None:
    resp = _reply(_state().handle_request(_req(pb.GET, pb.KeyTuple(key="nope"))))
    assert resp.type == pb.GET and resp.response_id == "r1"
    (t,) = resp.tuples
    assert t.key == "nope" and t.error == pb.KEY_DNE and t.payload == b""


def test_put_then_get_and_wal_before_reply() -> None:
    st = _state()
    actions = st.handle_request(_req(pb.PUT, _put_tuple("k", LWWPairLattice(3, b"v")), rid="p"))
    assert isinstance(actions[0], Append) and actions[0].tuples[0][0] == "k"
    resp = _reply(actions)
    assert resp.response_id == "p" and resp.tuples[0].error == pb.NO_ERROR
    got = _reply(st.handle_request(_req(pb.GET, pb.KeyTuple(key="k"))))
    assert got.tuples[0].lattice_type == pb.LWW
    assert LWWPairLattice.parse(got.tuples[0].payload) == LWWPairLattice(3, b"v")


def test_put_merges() -> None:
    st = _state()
    st.handle_request(_req(pb.PUT, _put_tuple("s", SetLattice({b"a"}))))
    st.handle_request(_req(pb.PUT, _put_tuple("s", SetLattice({b"b"}))))
    st.handle_request(_req(pb.PUT, _put_tuple("l", LWWPairLattice(5, b"new"))))
    st.handle_request(_req(pb.PUT, _put_tuple("l", LWWPairLattice(4, b"old"))))
    st.handle_request(_req(pb.PUT, _put_tuple("l", LWWPairLattice(5, b"a"))))  # tie: bytes
    resp = _reply(st.handle_request(_req(pb.GET, pb.KeyTuple(key="s"), pb.KeyTuple(key="l"))))
    assert SetLattice.parse(resp.tuples[0].payload) == SetLattice({b"a", b"b"})
    assert LWWPairLattice.parse(resp.tuples[1].payload) == LWWPairLattice(5, b"new")


def test_ordered_set_reads_back_sorted() -> None:
    st = _state()
    st.handle_request(_req(pb.PUT, _put_tuple("o", OrderedSetLattice({b"z", b"a"}))))
    resp = _reply(st.handle_request(_req(pb.GET, pb.KeyTuple(key="o"))))
    assert list(pb.SetValue.FromString(resp.tuples[0].payload).values) == [b"a", b"z"]


def test_lattice_error_on_none_mismatch_and_garbage() -> None:
    st = _state()
    st.handle_request(_req(pb.PUT, _put_tuple("k", LWWPairLattice(1, b"v"))))
    resp = _reply(
        st.handle_request(
            _req(
                pb.PUT,
                pb.KeyTuple(key="n", lattice_type=pb.NONE, payload=b"x"),
                _put_tuple("k", SetLattice({b"x"})),
                pb.KeyTuple(key="g", lattice_type=pb.LWW, payload=b"\xff\xff\xff"),
                _put_tuple("ok", LWWPairLattice(1, b"v")),
            )
        )
    )
    assert [t.error for t in resp.tuples] == [pb.LATTICE, pb.LATTICE, pb.LATTICE, pb.NO_ERROR]
    assert [t.key for t in resp.tuples] == ["n", "k", "g", "ok"]  # one per tuple, in order
    assert "n" not in st.store and "g" not in st.store
    assert st.store["k"].lattice == LWWPairLattice(1, b"v")


def test_reserved_keys_rejected() -> None:
    st = _state()
    resp = _reply(
        st.handle_request(_req(pb.PUT, _put_tuple("ANNA_METADATA|x", LWWPairLattice(1, b"v"))))
    )
    assert resp.tuples[0].error == pb.LATTICE


def test_wrong_thread_for_keys_owned_elsewhere() -> None:
    st = _state(shards=4, index=0)
    keys = [f"k{i}" for i in range(40)]
    mine = [k for k in keys if st.owns(k)]
    assert 0 < len(mine) < len(keys)
    resp = _reply(
        st.handle_request(_req(pb.PUT, *[_put_tuple(k, LWWPairLattice(1, b"v")) for k in keys]))
    )
    for k, t in zip(keys, resp.tuples, strict=True):
        assert t.error == (pb.NO_ERROR if k in mine else pb.WRONG_THREAD)
    assert set(st.store) == set(mine)


def test_invalidate_when_cache_size_differs() -> None:
    st = _state(shards=2, nodes=1, default_local=2)
    resp = _reply(
        st.handle_request(
            _req(
                pb.GET,
                pb.KeyTuple(key="a", address_cache_size=1),
                pb.KeyTuple(key="a", address_cache_size=2),
                pb.KeyTuple(key="a"),
            )
        )
    )
    assert [t.invalidate for t in resp.tuples] == [True, False, False]


def test_empty_response_address_means_no_reply_but_put_applies() -> None:
    st = _state()
    actions = st.handle_request(_req(pb.PUT, _put_tuple("k", LWWPairLattice(1, b"v")), addr=""))
    assert not [a for a in actions if isinstance(a, Reply)]
    assert "k" in st.store


def test_unknown_request_type_dropped_and_counted() -> None:
    st = _state()
    assert st.handle_request(_req(pb.RT_UNSPECIFIED, pb.KeyTuple(key="k"))) == []
    assert st.stats["bad_request_type"] == 1


def test_gossip_to_other_replicas_converges() -> None:
    a = ShardState("127.0.0.1:6200", 0, _two_nodes(), 64, default_global=2)
    b = ShardState("127.0.0.2:6200", 0, _two_nodes(), 64, default_global=2)
    a.handle_request(_req(pb.PUT, _put_tuple("k", LWWPairLattice(7, b"a"))))
    b.handle_request(_req(pb.PUT, _put_tuple("k", LWWPairLattice(7, b"b"))))
    ga = [x for x in a.gossip_tick() if isinstance(x, SendInternal)]
    gb = [x for x in b.gossip_tick() if isinstance(x, SendInternal)]
    assert ga[0].address == "tcp://127.0.0.2:6250" and ga[0].kind == KIND_GOSSIP
    b.handle_gossip(ga[0].message)
    a.handle_gossip(gb[0].message)
    assert a.store["k"].lattice == b.store["k"].lattice == LWWPairLattice(7, b"b")
    assert a.gossip_tick() == [] and b.gossip_tick() == []  # gossip is not re-gossiped


def _two_nodes() -> pb.Membership:
    return pb.Membership(nodes=[make_node(f"127.0.0.{i + 1}", 6200, 6250, 1, 1) for i in range(2)])


def test_membership_change_hands_keys_off() -> None:
    one = pb.Membership(nodes=[make_node("127.0.0.1", 6200, 6250, 1, 1)])
    st = ShardState("127.0.0.1:6200", 0, one, 64)
    keys = [f"k{i}" for i in range(50)]
    for k in keys:
        st.handle_request(_req(pb.PUT, _put_tuple(k, LWWPairLattice(1, b"v")), addr=""))
    st.gossip_tick()
    st.handle_membership(_two_nodes())
    actions = st.gossip_tick()
    sent = {t.key for a in actions if isinstance(a, SendInternal) for t in a.message.tuples}
    drops = {t[0] for a in actions if isinstance(a, Append) for t in a.tuples}
    assert sent and sent == drops
    assert all(not st.owns(k) for k in sent)
    assert set(st.store) == set(keys) - sent
    # a GET for a moved key now answers WRONG_THREAD
    moved = sorted(sent)[0]
    resp = _reply(st.handle_request(_req(pb.GET, pb.KeyTuple(key=moved))))
    assert resp.tuples[0].error == pb.WRONG_THREAD


def test_cache_push() -> None:
    st = _state()
    st.handle_request(_req(pb.PUT, _put_tuple("k", SetLattice({b"a"})), addr=""))
    st.handle_subscription(pb.CacheSubscription(cache_address="tcp://c:1", keys=["k", "j"]))
    (first,) = st.push_tick()
    assert isinstance(first, Reply) and first.address == "tcp://c:1"
    assert first.response.type == pb.PUT and first.response.tuples[0].key == "k"
    assert st.push_tick() == []
    st.handle_request(_req(pb.PUT, _put_tuple("j", SetLattice({b"x"})), addr=""))
    st.handle_request(_req(pb.PUT, _put_tuple("k", SetLattice({b"b"})), addr=""))
    (push,) = st.push_tick()
    got = {t.key: SetLattice.parse(t.payload) for t in push.response.tuples}
    assert got == {"k": SetLattice({b"a", b"b"}), "j": SetLattice({b"x"})}
    # The cache's periodic refresh repeats its subscriptions: nothing is pushed again...
    st.handle_subscription(pb.CacheSubscription(cache_address="tcp://c:1", keys=["k", "j"]))
    assert st.push_tick() == []
    # ...but a second cache subscribing gets the current value, and only it.
    st.handle_subscription(pb.CacheSubscription(cache_address="tcp://c:2", keys=["k"]))
    (second,) = st.push_tick()
    assert second.address == "tcp://c:2" and [t.key for t in second.response.tuples] == ["k"]
    st.handle_subscription(
        pb.CacheSubscription(cache_address="tcp://c:1", keys=["k", "j"], unsubscribe=True)
    )
    st.handle_subscription(
        pb.CacheSubscription(cache_address="tcp://c:2", keys=["k"], unsubscribe=True)
    )
    st.handle_request(_req(pb.PUT, _put_tuple("k", SetLattice({b"c"})), addr=""))
    assert st.push_tick() == []


def test_replay_rebuilds_state() -> None:
    st = _state()
    tuples = [
        _put_tuple("a", LWWPairLattice(1, b"1")),
        _put_tuple("a", LWWPairLattice(2, b"2")),
        _put_tuple("b", SetLattice({b"x"})),
        pb.KeyTuple(key="b", lattice_type=pb.NONE),
        _put_tuple("a", LWWPairLattice(1, b"1")),  # replayed twice: idempotent
    ]
    assert st.replay(tuples) == 4
    assert set(st.store) == {"a"} and st.store["a"].lattice == LWWPairLattice(2, b"2")
    again = _state()
    again.replay(st.snapshot())
    assert again.store["a"].lattice == LWWPairLattice(2, b"2")


def test_single_key_fast_path_answers_exactly_like_the_general_path() -> None:
    """handle_single (hand-decoded one-key requests) == handle_request, byte for byte,
    including WRONG_THREAD, KEY_DNE, LATTICE, invalidate, reserved keys, no address,
    and the WAL append before the reply; also after a membership change."""
    a = _state(shards=4, index=0, default_local=2)
    b = _state(shards=4, index=0, default_local=2)
    lww = to_payload(LWWPairLattice(7, b"v"))
    sets = to_payload(SetLattice({b"x"}))
    cases: list[tuple[int, str, int, bytes, int, str]] = []
    for i in range(30):
        key = f"k{i}"
        for rtype, (lt, payload) in (
            (pb.GET, (0, b"")),
            (pb.PUT, lww),
            (pb.GET, (0, b"")),
            (pb.PUT, sets),  # type mismatch: LATTICE
            (pb.PUT, (pb.LWW, b"\xff\xff")),  # garbage payload: LATTICE
            (pb.PUT, (pb.NONE, b"")),
            (7, (0, b"")),  # unknown request type: dropped
        ):
            for cache in (0, 1, 2):
                cases.append((rtype, key, lt, payload, cache, ADDR))
        cases.append((pb.PUT, key, *lww, 2, ""))
    cases.append((pb.PUT, "ANNA_METADATA|x", *lww, 0, ADDR))
    cases.append((pb.GET, "", 0, b"", 0, ADDR))
    for rtype, key, lt, payload, cache, addr in cases:
        t = pb.KeyTuple(key=key, lattice_type=lt, payload=payload, address_cache_size=cache)  # type: ignore[arg-type]
        slow = a.handle_request(_req(rtype, t, addr=addr, rid="q"))
        fast = b.handle_single(rtype, key, lt, payload, cache, addr, "q")
        assert [type(x) for x in slow] == [type(x) for x in fast]
        for s, f in zip(slow, fast, strict=True):
            if isinstance(s, Reply):
                assert isinstance(f, Reply) and isinstance(f.response, bytes)
                assert s.address == f.address
                assert s.response.SerializeToString() == f.response  # type: ignore[union-attr]
            else:
                assert s == f
    assert a.stats == b.stats and set(a.store) == set(b.store) and a.dirty == b.dirty
    # After the membership changes, ownership answers follow the new placement.
    for st in (a, b):
        st.handle_membership(pb.Membership(nodes=[make_node("127.0.0.2", 6200, 6250, 4, 1)]))
    for i in range(30):
        t = pb.KeyTuple(key=f"k{i}")
        slow_r = _reply(a.handle_request(_req(pb.GET, t, rid="z")))
        fast_r = b.handle_single(pb.GET, f"k{i}", 0, b"", 0, ADDR, "z")[0].response
        assert slow_r.SerializeToString() == fast_r
