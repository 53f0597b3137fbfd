"""Lattice laws for every type: associative, commutative, idempotent; merges of
different types are refused; merge never mutates its operands.

Each example checks all the laws at once (300+ examples per law per type) so the whole
run stays fast on a loaded machine.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lattice_strategies import LAWS, STRATEGIES

from lattices import LatticeTypeMismatch

NAMES = sorted(STRATEGIES)


@pytest.mark.parametrize("name", NAMES)
@LAWS
@given(data=st.data())
def test_merge_laws(name: str, data: st.DataObject) -> None:
    s = STRATEGIES[name]
    a, b, c = data.draw(s, label="a"), data.draw(s, label="b"), data.draw(s, label="c")
    snapshot = copy.deepcopy((a, b, c))
    reprs = (repr(a), repr(b), repr(c))

    # Associative.
    assert a.merge(b).merge(c) == a.merge(b.merge(c))
    # Commutative (and equal lattices hash and reveal alike).
    ab, ba = a.merge(b), b.merge(a)
    assert ab == ba
    assert hash(ab) == hash(ba)
    assert ab.reveal() == ba.reveal()
    assert repr(ab) == repr(ba)
    # Idempotent, and the merge is an upper bound of both operands.
    assert a.merge(a) == a
    assert ab.merge(a) == ab
    assert ab.merge(b) == ab
    # Operands never change.
    assert (a, b, c) == snapshot
    assert (repr(a), repr(b), repr(c)) == reprs


@pytest.mark.parametrize("name", NAMES)
@settings(LAWS, max_examples=50)
@given(data=st.data())
def test_merge_of_different_types_raises(name: str, data: st.DataObject) -> None:
    a = data.draw(STRATEGIES[name])
    others = [n for n in NAMES if n != name]
    b: Any = data.draw(STRATEGIES[data.draw(st.sampled_from(others))])
    if type(b) is type(a):
        # Two MapLattices with different inner types: refused where their keys meet.
        shared = set(a.keys()) & set(b.keys())
        if not any(type(a[k]) is not type(b[k]) for k in shared):
            return
    with pytest.raises(LatticeTypeMismatch):
        a.merge(b)
    with pytest.raises(LatticeTypeMismatch):
        b.merge(a)


@pytest.mark.parametrize("name", NAMES)
@settings(LAWS, max_examples=30)
@given(data=st.data())
def test_immutable(name: str, data: st.DataObject) -> None:
    x = data.draw(STRATEGIES[name])
    slots = [n for k in type(x).__mro__ for n in getattr(k, "__slots__", ())]
    assert slots, "every lattice declares its fields in __slots__"
    assert not hasattr(x, "__dict__")
    for attr in [*slots, "not_a_field"]:
        with pytest.raises(AttributeError):
            setattr(x, attr, None)
    with pytest.raises(AttributeError):
        delattr(x, slots[0])
