"""Lattice laws for every type: associative, commutative, idempotent; merges of
different types are refused; merge never mutates its operands."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lattice_strategies import LAWS, STRATEGIES

from lattices import LatticeTypeMismatch

NAMES = sorted(STRATEGIES)


@pytest.mark.parametrize("name", NAMES)
@LAWS
@given(data=st.data())
def test_associative(name: str, data: st.DataObject) -> None:
    s = STRATEGIES[name]
    a, b, c = data.draw(s), data.draw(s), data.draw(s)
    assert a.merge(b).merge(c) == a.merge(b.merge(c))


@pytest.mark.parametrize("name", NAMES)
@LAWS
@given(data=st.data())
def test_commutative(name: str, data: st.DataObject) -> None:
    s = STRATEGIES[name]
    a, b = data.draw(s), data.draw(s)
    ab, ba = a.merge(b), b.merge(a)
    assert ab == ba
    assert hash(ab) == hash(ba)
    assert ab.reveal() == ba.reveal()


@pytest.mark.parametrize("name", NAMES)
@LAWS
@given(data=st.data())
def test_idempotent_and_absorbing(name: str, data: st.DataObject) -> None:
    s = STRATEGIES[name]
    a, b = data.draw(s), data.draw(s)
    assert a.merge(a) == a
    ab = a.merge(b)
    # The join is an upper bound: merging either operand in again changes nothing.
    assert ab.merge(a) == ab
    assert ab.merge(b) == ab


@pytest.mark.parametrize("name", NAMES)
@LAWS
@given(data=st.data())
def test_merge_does_not_mutate(name: str, data: st.DataObject) -> None:
    s = STRATEGIES[name]
    a, b = data.draw(s), data.draw(s)
    a0, b0 = copy.deepcopy(a), copy.deepcopy(b)
    a.merge(b)
    b.merge(a)
    assert a == a0 and b == b0
    assert repr(a) == repr(a0)


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
@LAWS
def test_merge_of_different_types_raises(name: str, data: st.DataObject) -> None:
    other_name = data.draw(st.sampled_from([n for n in NAMES if n != name]))
    a = data.draw(STRATEGIES[name])
    b: Any = data.draw(STRATEGIES[other_name])
    with pytest.raises(LatticeTypeMismatch):
        a.merge(b)
    with pytest.raises(LatticeTypeMismatch):
        b.merge(a)
    assert a != b


@pytest.mark.parametrize("name", NAMES)
@LAWS
@given(data=st.data())
def test_immutable(name: str, data: st.DataObject) -> None:
    x = data.draw(STRATEGIES[name])
    slots = [n for k in type(x).__mro__ for n in getattr(k, "__slots__", ())]
    assert slots, "every lattice declares its fields in __slots__"
    for attr in [*slots, "not_a_field"]:
        with pytest.raises(AttributeError):
            setattr(x, attr, None)
    with pytest.raises(AttributeError):
        delattr(x, slots[0])
