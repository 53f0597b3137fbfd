"""Hypothesis strategies for every lattice type (shared by the lattice tests).

Values are drawn from small alphabets on purpose: collisions (equal timestamps, equal
clocks, shared set elements) are where merge bugs hide.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from lattices import LWWPairLattice, OrderedSetLattice, PriorityLattice, SetLattice

#: Settings for every law: hundreds of examples, no deadline (the CI box is loaded),
#: no example database written into the tree.
LAWS = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

small_bytes = st.binary(max_size=3)
any_bytes = st.one_of(small_bytes, st.binary(max_size=64))
small_int = st.integers(min_value=0, max_value=4)
uint64 = st.one_of(small_int, st.integers(min_value=0, max_value=2**64 - 1))

lww = st.builds(LWWPairLattice, uint64, any_bytes)
sets = st.builds(SetLattice, st.frozensets(small_bytes, max_size=6))
ordered_sets = st.builds(OrderedSetLattice, st.frozensets(small_bytes, max_size=6))
priorities = st.builds(
    PriorityLattice,
    st.one_of(
        st.sampled_from([0.0, -0.0, 1.0, -1.5]),
        st.floats(allow_nan=False),
    ),
    any_bytes,
)

#: name -> strategy of lattices of that type; extended as types are added.
STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "lww": lww,
    "set": sets,
    "ordered_set": ordered_sets,
    "priority": priorities,
}

#: The subset that has an Anna payload encoding.
PAYLOAD_STRATEGIES: dict[str, st.SearchStrategy[Any]] = dict(STRATEGIES)
