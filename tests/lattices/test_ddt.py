"""Differentiable data types: lattice laws, delta semantics, each type's behaviour.

The central property: a state built by merging a set of deltas is the same whatever
the order the deltas arrive in and however often each is repeated.
"""

from __future__ import annotations

import copy
import pickle
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lattices.base import LatticeDecodeError, LatticeError, LatticeTypeMismatch
from lattices.ddt import (
    DDT_TYPES,
    DCounter,
    DLog,
    DMap,
    DRegister,
    DSet,
    DTensor,
    StreamMeta,
    decode_delta,
    encode_delta,
)

LAWS = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

writers = st.sampled_from(["w0", "w1", "w2"])
items = st.one_of(st.integers(-3, 3), st.text(max_size=2), st.binary(max_size=2))


def _log_batch(seed: tuple[str, int]) -> DLog:
    # (writer, seq) determines the batch's items, as it does for a real writer.
    w, s = seed
    return DLog.batch(w, s, [f"{w}:{s}:{i}" for i in range(s % 3 + 1)])


dlogs = st.lists(st.tuples(writers, st.integers(0, 5)), max_size=5).map(
    lambda keys: DLog.join(_log_batch(k) for k in keys)
)
dcounters = st.dictionaries(writers, st.integers(0, 6), max_size=3).map(DCounter)
dsets = st.frozensets(items, max_size=5).map(DSet)
dregisters = st.builds(
    DRegister, st.sampled_from([0.0, 1.0, 2.5]), writers, st.one_of(items, st.none())
)
arrays = st.sampled_from([np.zeros(2), np.ones(2), np.arange(2.0), np.full(2, 7.0)])
dtensors = st.builds(
    DTensor,
    st.dictionaries(writers, arrays, max_size=3),
    st.integers(0, 3),
    st.sampled_from(["sum", "mean"]),
)
dmaps = st.dictionaries(st.sampled_from(["a", "b", "c"]), dcounters, max_size=3).map(DMap)
dmaps_of_sets = st.dictionaries(st.sampled_from(["x", "y"]), dsets, max_size=2).map(DMap)
metas = st.builds(
    StreamMeta,
    st.integers(0, 3),
    st.frozensets(writers, max_size=3),
    st.frozensets(writers, max_size=2),
)

STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "DLog": dlogs,
    "DCounter": dcounters,
    "DSet": dsets,
    "DRegister": dregisters,
    "DTensor": dtensors,
    "DMap": dmaps,
    "DMapOfSets": dmaps_of_sets,
    "StreamMeta": metas,
}
NAMES = sorted(STRATEGIES)


@pytest.mark.parametrize("name", NAMES)
@LAWS
@given(data=st.data())
def test_laws(name: str, data: st.DataObject) -> None:
    s = STRATEGIES[name]
    a, b, c = data.draw(s), data.draw(s), data.draw(s)
    a0, b0 = copy.deepcopy(a), copy.deepcopy(b)
    assert a.merge(b).merge(c) == a.merge(b.merge(c))
    assert a.merge(b) == b.merge(a)
    assert hash(a.merge(b)) == hash(b.merge(a))
    assert a.merge(a) == a
    assert a.merge(b).merge(a) == a.merge(b)
    assert a == a0 and b == b0, "merge mutated an operand"


@pytest.mark.parametrize("name", [n for n in NAMES if n != "StreamMeta"])
@LAWS
@given(data=st.data())
def test_deltas_in_any_order_with_duplicates(name: str, data: st.DataObject) -> None:
    s = STRATEGIES[name]
    deltas = data.draw(st.lists(s, min_size=1, max_size=6))
    in_order = deltas[0]
    for d in deltas[1:]:
        in_order = in_order.merge(d)
    shuffled = data.draw(st.permutations(deltas + data.draw(st.lists(st.sampled_from(deltas)))))
    other = type(deltas[0]).bottom()
    for d in shuffled:
        other = other.merge(d)
    assert other == in_order
    assert type(deltas[0]).join(shuffled) == in_order


@pytest.mark.parametrize("name", [n for n in NAMES if n != "StreamMeta"])
@LAWS
@given(data=st.data())
def test_wire_round_trip(name: str, data: st.DataObject) -> None:
    value = data.draw(STRATEGIES[name])
    assert decode_delta(encode_delta(value)) == value
    assert pickle.loads(pickle.dumps(value)) == value


def test_bottom_is_identity() -> None:
    for cls in DDT_TYPES.values():
        assert cls.bottom().merge(cls.bottom()) == cls.bottom()
    c = DCounter({"a": 2})
    assert DCounter.bottom().merge(c) == c


def test_dlog_keeps_per_writer_order_and_dedupes() -> None:
    d0 = DLog.batch("w1", 0, ["a", "b"])
    d1 = DLog.batch("w1", 1, ["c"])
    e0 = DLog.batch("w2", 0, ["x"])
    log = d1.merge(e0).merge(d0).merge(d1)
    assert log.items_of("w1") == ["a", "b", "c"]
    assert log.items_of("w2") == ["x"]
    assert sorted(log.reveal()) == ["a", "b", "c", "x"]
    assert len(log) == 4
    with pytest.raises(LatticeError):
        DLog.batch("w", -1, [])


def test_dcounter_counts_each_writer_once() -> None:
    # Deltas carry running totals: a resent delta never double-counts.
    w1 = [DCounter.increment("w1", n) for n in (1, 3, 4)]
    w2 = [DCounter.increment("w2", n) for n in (10,)]
    state = DCounter.join(w1 + w2 + w1)
    assert state.reveal() == 14
    with pytest.raises(LatticeError):
        DCounter({"w": -1})


def test_dmap_word_count() -> None:
    m1 = DMap({"apple": DCounter({"m1": 2}), "pear": DCounter({"m1": 1})})
    m2 = DMap({"apple": DCounter({"m2": 5})})
    m1_later = DMap({"apple": DCounter({"m1": 3})})
    assert DMap.join([m1, m2, m1_later, m1]).reveal() == {"apple": 8, "pear": 1}


def test_dset_union() -> None:
    assert DSet({1, 2}).merge(DSet({2, 3})).reveal() == frozenset({1, 2, 3})
    assert 2 in DSet({2})


def test_dregister_last_writer_wins() -> None:
    a, b = DRegister(1.0, "a", "first"), DRegister(2.0, "a", "second")
    assert a.merge(b).reveal() == "second" == b.merge(a).reveal()
    tie1, tie2 = DRegister(1.0, "a", 1), DRegister(1.0, "b", 2)
    assert tie1.merge(tie2).reveal() == 2 == tie2.merge(tie1).reveal()
    assert DRegister.bottom().reveal() is None


def test_dtensor_sum_mean_and_completion() -> None:
    parts = [DTensor.contribution(f"w{i}", np.full(3, float(i)), writers=3) for i in range(3)]
    state = DTensor.bottom()
    for p in parts[:2]:
        state = state.merge(p)
    assert not state.complete
    np.testing.assert_array_equal(state.reveal(), np.full(3, 1.0))
    state = state.merge(parts[2]).merge(parts[0])
    assert state.complete
    np.testing.assert_array_equal(state.reveal(), np.full(3, 3.0))
    mean = DTensor.join(
        DTensor.contribution(f"w{i}", np.full(2, float(i)), writers=2, mode="mean")
        for i in range(2)
    )
    np.testing.assert_array_equal(mean.reveal(), np.full(2, 0.5))
    assert DTensor.bottom().reveal() is None
    with pytest.raises(LatticeError):
        DTensor(mode="max")


def test_stream_meta_final_when_all_declared_writers_sealed() -> None:
    m = StreamMeta(writers=2)
    assert not m.final
    m = m.merge(StreamMeta(0, {"a"}))
    assert not m.final
    m = m.merge(StreamMeta(0, {"b"}))
    assert m.final and m.reveal()
    assert not StreamMeta(0, {"a"}).final


def test_type_mismatch_and_garbage() -> None:
    with pytest.raises(LatticeTypeMismatch):
        DSet({1}).merge(DCounter())  # type: ignore[arg-type]
    with pytest.raises(LatticeDecodeError):
        decode_delta(b"not a delta")
    with pytest.raises(AttributeError):
        DSet({1}).elements = frozenset()  # type: ignore[misc]
