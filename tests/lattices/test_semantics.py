"""Unit tests for the merge rules PROTOCOL.md spells out, and for each type's API."""

from __future__ import annotations

import copy
import pickle
import threading
from typing import Any

import pytest

from anna.proto import anna_pb2
from lattices import (
    BoolLattice,
    ClockOrder,
    LatticeDecodeError,
    LatticeError,
    LatticeTypeMismatch,
    LWWPairLattice,
    MapLattice,
    MaxLattice,
    MultiKeyCausalLattice,
    OrderedSetLattice,
    PriorityLattice,
    SetLattice,
    SingleKeyCausalLattice,
    VectorClock,
    from_payload,
    make_timestamp,
    to_payload,
)

# --- LWW -------------------------------------------------------------------------------


def test_lww_larger_timestamp_wins_in_both_orders() -> None:
    old, new = LWWPairLattice(1, b"zzz"), LWWPairLattice(2, b"aaa")
    assert old.merge(new) == new
    assert new.merge(old) == new
    assert old.merge(new).reveal() == b"aaa"


def test_lww_tie_breaks_on_larger_value_bytes() -> None:
    a, b = LWWPairLattice(5, b"apple"), LWWPairLattice(5, b"banana")
    assert a.merge(b).reveal() == b"banana"
    assert b.merge(a).reveal() == b"banana"
    # Byte order, not length: b"b" > b"azzzz"; a prefix loses to its extension.
    assert LWWPairLattice(5, b"b").merge(LWWPairLattice(5, b"azzzz")).reveal() == b"b"
    assert LWWPairLattice(5, b"ab").merge(LWWPairLattice(5, b"a")).reveal() == b"ab"


def test_lww_payload_is_anna_lwwvalue() -> None:
    x = LWWPairLattice(2**64 - 1, b"v")
    msg = anna_pb2.LWWValue.FromString(x.serialize())
    assert (msg.timestamp, msg.value) == (2**64 - 1, b"v")
    hand = anna_pb2.LWWValue(timestamp=17, value=b"hello").SerializeToString()
    assert LWWPairLattice.parse(hand) == LWWPairLattice(17, b"hello")
    assert LWWPairLattice.lattice_type == anna_pb2.LWW == 1


@pytest.mark.parametrize("ts", [-1, 2**64, 1.5, "1", None, True])
def test_lww_rejects_bad_timestamps(ts: Any) -> None:
    with pytest.raises(LatticeError):
        LWWPairLattice(ts, b"v")


def test_lww_value_must_be_bytes() -> None:
    with pytest.raises(LatticeError):
        LWWPairLattice(1, "text")  # type: ignore[arg-type]
    assert LWWPairLattice(1, bytearray(b"ab")).value == b"ab"


def test_make_timestamp_strictly_increasing_and_uint64() -> None:
    stamps = [make_timestamp() for _ in range(10_000)]
    assert all(a < b for a, b in zip(stamps, stamps[1:], strict=False))
    assert 0 < stamps[0] < 2**64
    LWWPairLattice(stamps[-1], b"")  # a valid timestamp


def test_make_timestamp_unique_across_threads() -> None:
    out: list[list[int]] = [[] for _ in range(4)]

    def run(i: int) -> None:
        out[i].extend(make_timestamp() for _ in range(2000))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    flat = [s for chunk in out for s in chunk]
    assert len(flat) == 8000
    assert len(set(flat)) == 8000


# --- Priority --------------------------------------------------------------------------


def test_priority_lower_wins() -> None:
    hi, lo = PriorityLattice(10.0, b"a"), PriorityLattice(-2.5, b"z")
    assert hi.merge(lo) == lo
    assert lo.merge(hi) == lo


def test_priority_tie_breaks_on_smaller_value_bytes() -> None:
    a, b = PriorityLattice(1.0, b"apple"), PriorityLattice(1.0, b"banana")
    assert a.merge(b).reveal() == b"apple"
    assert b.merge(a).reveal() == b"apple"


def test_priority_rejects_nan_and_normalizes_negative_zero() -> None:
    with pytest.raises(LatticeError):
        PriorityLattice(float("nan"), b"x")
    nan = anna_pb2.PriorityValue(priority=float("nan"), value=b"x").SerializeToString()
    with pytest.raises(LatticeDecodeError):
        PriorityLattice.parse(nan)
    z = PriorityLattice(-0.0, b"x")
    assert z.serialize() == PriorityLattice(0.0, b"x").serialize()
    assert PriorityLattice(float("inf"), b"").merge(PriorityLattice(1e308, b"")).priority == 1e308
    assert PriorityLattice(3, b"x").priority == 3.0


# --- Sets ------------------------------------------------------------------------------


def test_set_union_and_payload() -> None:
    s = SetLattice({b"b", b"a"}).merge(SetLattice({b"c", b"a"}))
    assert s.reveal() == frozenset({b"a", b"b", b"c"})
    assert b"a" in s and len(s) == 3
    assert list(anna_pb2.SetValue.FromString(s.serialize()).values) == [b"a", b"b", b"c"]


def test_ordered_set_reads_back_sorted_by_bytes() -> None:
    s = OrderedSetLattice([b"b", b"\x00", b"ab", b"a", b"B"])
    s = s.merge(OrderedSetLattice([b"aa", b"\xff"]))
    expected = (b"\x00", b"B", b"a", b"aa", b"ab", b"b", b"\xff")
    assert s.reveal() == expected
    assert tuple(s) == expected
    # A payload in any order parses to the same sorted read.
    shuffled = anna_pb2.SetValue(values=list(reversed(expected))).SerializeToString()
    assert OrderedSetLattice.parse(shuffled).reveal() == expected
    assert OrderedSetLattice.lattice_type == anna_pb2.ORDERED_SET


def test_set_and_ordered_set_do_not_merge() -> None:
    with pytest.raises(LatticeTypeMismatch):
        SetLattice({b"a"}).merge(OrderedSetLattice({b"a"}))  # type: ignore[arg-type]
    assert SetLattice({b"a"}) != OrderedSetLattice({b"a"})


def test_set_rejects_non_bytes_and_bare_bytes() -> None:
    with pytest.raises(LatticeError):
        SetLattice([b"a", "b"])  # type: ignore[list-item]
    with pytest.raises(LatticeError):
        SetLattice(b"abc")


# --- Max, Bool, Map --------------------------------------------------------------------


def test_max_and_bool() -> None:
    assert MaxLattice(3).merge(MaxLattice(7)).reveal() == 7
    assert MaxLattice(b"b").merge(MaxLattice(b"a")).reveal() == b"b"
    with pytest.raises(LatticeError):
        MaxLattice(float("nan"))
    assert BoolLattice().merge(BoolLattice(True)).reveal() is True
    assert BoolLattice(False).merge(BoolLattice(False)).reveal() is False
    with pytest.raises(LatticeError):
        BoolLattice(1)  # type: ignore[arg-type]


def test_map_merges_key_wise() -> None:
    a = MapLattice({"x": MaxLattice(1), "y": MaxLattice(5)})
    b = MapLattice({"x": MaxLattice(4), "z": MaxLattice(0)})
    m = a.merge(b)
    assert {k: v.reveal() for k, v in m.items()} == {"x": 4, "y": 5, "z": 0}
    assert len(m) == 3 and "z" in m and m.get("q") is None
    assert a.reveal() == {"x": MaxLattice(1), "y": MaxLattice(5)}  # unchanged
    with pytest.raises(LatticeTypeMismatch):
        a.merge(MapLattice({"x": BoolLattice(True)}))  # type: ignore[arg-type]
    with pytest.raises(LatticeError):
        MapLattice({"x": 3})  # type: ignore[dict-item]


# --- Vector clocks ---------------------------------------------------------------------


def test_vector_clock_compare() -> None:
    a = VectorClock({"n1": 1, "n2": 2})
    assert a.compare(VectorClock({"n1": 1, "n2": 2})) is ClockOrder.EQUAL
    assert a.compare(VectorClock({"n1": 1})) is ClockOrder.DOMINATES
    assert VectorClock({"n1": 1}).compare(a) is ClockOrder.DOMINATED
    assert a.compare(VectorClock({"n3": 1})) is ClockOrder.CONCURRENT
    assert a.compare(VectorClock({"n1": 2, "n2": 1})) is ClockOrder.CONCURRENT
    assert a.dominates(VectorClock()) and not a.dominates(a)
    assert a.descends(a) and a.descends(VectorClock({"n2": 1}))
    assert a.concurrent(VectorClock({"n3": 1}))
    assert VectorClock().compare(VectorClock()) is ClockOrder.EQUAL


def test_vector_clock_merge_zero_entries_and_increment() -> None:
    a = VectorClock({"n1": 3, "n2": 0})
    assert a == VectorClock({"n1": 3})
    assert a.merge(VectorClock({"n2": 5})).reveal() == {"n1": 3, "n2": 5}
    assert a.increment("n2").reveal() == {"n1": 3, "n2": 1}
    assert a["missing"] == 0 and a.get("n1") == 3
    for bad in ({"n": -1}, {"n": 2**32}, {1: 1}, {"n": 1.0}):
        with pytest.raises(LatticeError):
            VectorClock(bad)  # type: ignore[arg-type]


# --- Causal ----------------------------------------------------------------------------


def _skc(clock: dict[str, int], *values: bytes) -> SingleKeyCausalLattice:
    return SingleKeyCausalLattice(clock, values)


def test_causal_incoming_dominates_replaces() -> None:
    stored = _skc({"a": 1}, b"old")
    incoming = _skc({"a": 2, "b": 1}, b"new")
    assert stored.merge(incoming).reveal() == {b"new"}
    assert incoming.merge(stored) == stored.merge(incoming)


def test_causal_incoming_dominated_changes_nothing() -> None:
    stored = _skc({"a": 2, "b": 1}, b"current")
    stale = _skc({"a": 1}, b"stale")
    assert stored.merge(stale) == stored
    assert stored.merge(stale).reveal() == {b"current"}


def test_causal_concurrent_unions_values_and_joins_clocks() -> None:
    x, y = _skc({"a": 2, "b": 1}, b"x"), _skc({"a": 1, "b": 2}, b"y")
    m = x.merge(y)
    assert m.reveal() == {b"x", b"y"}
    assert m.vector_clock == VectorClock({"a": 2, "b": 2})
    assert m == y.merge(x)
    parsed = SingleKeyCausalLattice.parse(m.serialize())
    assert parsed.vector_clock == VectorClock({"a": 2, "b": 2})
    assert parsed.reveal() == {b"x", b"y"}
    # A later write that has seen both replaces both.
    later = _skc({"a": 2, "b": 2, "c": 1}, b"z")
    assert m.merge(later).reveal() == {b"z"}


def test_causal_equal_clocks_union_values() -> None:
    a, b = _skc({"a": 1}, b"p"), _skc({"a": 1}, b"q")
    assert a.merge(b).reveal() == {b"p", b"q"} == b.merge(a).reveal()


def test_causal_merge_is_order_independent_where_pairs_are_not() -> None:
    # The case that makes a single (clock, values) pair non-associative (see causal.py).
    a, b, c = _skc({"p": 1}, b"x"), _skc({"q": 1}, b"y"), _skc({"p": 1, "q": 1}, b"z")
    orders = [a.merge(b).merge(c), a.merge(b.merge(c)), c.merge(b).merge(a), b.merge(c.merge(a))]
    assert all(o == orders[0] for o in orders)
    assert orders[0].reveal() == {b"z"}


def test_causal_versions_and_from_versions() -> None:
    x, y = _skc({"a": 1}, b"x"), _skc({"b": 1}, b"y")
    m = x.merge(y)
    assert m.versions == {VectorClock({"a": 1}): {b"x"}, VectorClock({"b": 1}): {b"y"}}
    assert SingleKeyCausalLattice.from_versions(m.versions) == m
    assert eval(repr(m)) == m  # repr round-trips
    with pytest.raises(LatticeError):
        SingleKeyCausalLattice.from_versions({})


def test_causal_payload_bytes() -> None:
    x = _skc({"b": 2, "a": 1}, b"v2", b"v1")
    msg = anna_pb2.SingleKeyCausalValue.FromString(x.serialize())
    assert dict(msg.vector_clock) == {"a": 1, "b": 2}
    assert list(msg.values) == [b"v1", b"v2"]
    assert SingleKeyCausalLattice.lattice_type == anna_pb2.SINGLE_CAUSAL


def _mkc(clock: dict[str, int], deps: dict[str, dict[str, int]], *values: bytes) -> Any:
    return MultiKeyCausalLattice(clock, deps, values)


def test_multi_causal_rules_and_dependencies() -> None:
    stored = _mkc({"a": 1}, {"k1": {"a": 1}}, b"old")
    newer = _mkc({"a": 2}, {"k2": {"b": 3}}, b"new")
    m = stored.merge(newer)
    assert m.reveal() == {b"new"}
    assert set(m.dependencies.keys()) == {"k2"}  # dependencies replaced with the values
    assert stored.merge(_mkc({}, {"k9": {"z": 1}}, b"stale")) == stored

    x = _mkc({"a": 2, "b": 1}, {"k1": {"a": 1}, "k2": {"c": 1}}, b"x")
    y = _mkc({"a": 1, "b": 2}, {"k1": {"b": 4}}, b"y")
    c = x.merge(y)
    assert c == y.merge(x)
    assert c.reveal() == {b"x", b"y"}
    assert c.vector_clock == VectorClock({"a": 2, "b": 2})
    assert c.dependencies["k1"] == VectorClock({"a": 1, "b": 4})  # merged key-wise
    assert c.dependencies["k2"] == VectorClock({"c": 1})

    parsed = MultiKeyCausalLattice.parse(c.serialize())
    assert parsed.reveal() == c.reveal()
    assert parsed.dependencies == c.dependencies
    msg = anna_pb2.MultiKeyCausalValue.FromString(c.serialize())
    assert [kv.key for kv in msg.dependencies] == ["k1", "k2"]
    assert MultiKeyCausalLattice.lattice_type == anna_pb2.MULTI_CAUSAL


def test_multi_causal_duplicate_dependency_entries_merge() -> None:
    msg = anna_pb2.MultiKeyCausalValue(values=[b"v"])
    for clock in ({"a": 1}, {"b": 2}):
        kv = msg.dependencies.add()
        kv.key = "k"
        kv.vector_clock.update(clock)
    parsed = MultiKeyCausalLattice.parse(msg.SerializeToString())
    assert parsed.dependencies["k"] == VectorClock({"a": 1, "b": 2})


def test_causal_single_and_multi_do_not_merge() -> None:
    with pytest.raises(LatticeTypeMismatch):
        _skc({"a": 1}).merge(_mkc({"a": 1}, {}))


# --- Codec, pickling -------------------------------------------------------------------

ALL_EXAMPLES: list[Any] = [
    LWWPairLattice(3, b"v"),
    SetLattice({b"a"}),
    OrderedSetLattice({b"a", b"b"}),
    PriorityLattice(0.5, b"p"),
    _skc({"a": 1}, b"x").merge(_skc({"b": 1}, b"y")),
    _mkc({"a": 1}, {"k": {"a": 1}}, b"m"),
    MaxLattice(4),
    BoolLattice(True),
    MapLattice({"k": MaxLattice(1)}),
    VectorClock({"a": 1}),
]


@pytest.mark.parametrize("x", ALL_EXAMPLES, ids=lambda x: type(x).__name__)
def test_pickle_copy_and_hash(x: Any) -> None:
    for y in (pickle.loads(pickle.dumps(x)), copy.copy(x), copy.deepcopy(x)):
        assert y == x and hash(y) == hash(x) and type(y) is type(x)
    assert repr(x).startswith(type(x).__name__)
    assert x != object() and len({x, copy.deepcopy(x)}) == 1


@pytest.mark.parametrize("x", ALL_EXAMPLES[:6], ids=lambda x: type(x).__name__)
def test_codec_round_trip(x: Any) -> None:
    t, p = to_payload(x)
    assert t == type(x).lattice_type
    assert from_payload(t, p).reveal() == x.reveal()


@pytest.mark.parametrize("x", ALL_EXAMPLES[6:], ids=lambda x: type(x).__name__)
def test_codec_refuses_lattices_without_payload(x: Any) -> None:
    with pytest.raises(LatticeError):
        to_payload(x)
    with pytest.raises(LatticeError):
        x.serialize()


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"\x12\x01v\x08\x05", LWWPairLattice(5, b"v")),  # value before timestamp
        (b"\x08\x01\x08\x05\x12\x01v", LWWPairLattice(5, b"v")),  # duplicate: last wins
        (b"\x08\x00\x12\x00", LWWPairLattice(0, b"")),  # explicit defaults
        (b"\x08\x85\x80\x00\x12\x01v", LWWPairLattice(5, b"v")),  # over-long varint
        (b"", LWWPairLattice(0, b"")),
    ],
)
def test_lww_parses_non_canonical_encodings(payload: bytes, expected: LWWPairLattice) -> None:
    x = LWWPairLattice.parse(payload)
    assert x == expected
    assert (
        x.serialize()
        == anna_pb2.LWWValue(timestamp=expected.timestamp, value=expected.value).SerializeToString()
    )


@pytest.mark.parametrize(
    "payload",
    [
        b"\x08\x05\x12\x01v\x1a\x00",  # an extra field 3
        b"\x08\x05\x12\x01v\x0a\x01x",  # field 1 with the wrong wire type
        b"\x09" + b"\x00" * 8,  # timestamp as fixed64 (a PriorityValue-like field)
    ],
)
def test_lww_rejects_foreign_fields(payload: bytes) -> None:
    with pytest.raises(LatticeDecodeError):
        LWWPairLattice.parse(payload)
