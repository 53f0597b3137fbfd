"""Hypothesis strategies for every lattice type (shared by the lattice tests).

Values are drawn from small alphabets on purpose: collisions (equal timestamps, equal
clocks, shared set elements) are where merge bugs hide.
"""

from __future__ import annotations

from functools import reduce
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from lattices import (
    BoolLattice,
    LWWPairLattice,
    MapLattice,
    MaxLattice,
    MultiKeyCausalLattice,
    OrderedSetLattice,
    PriorityLattice,
    SetLattice,
    SingleKeyCausalLattice,
    VectorClock,
)

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

nodes = st.sampled_from(["a", "b", "c"])
clock_dicts = st.dictionaries(nodes, st.integers(min_value=0, max_value=3), max_size=3)
clocks = st.one_of(
    st.builds(VectorClock, clock_dicts),
    st.builds(
        VectorClock,
        st.dictionaries(st.text(max_size=4), st.integers(0, 2**32 - 1), max_size=3),
    ),
)
small_clocks = st.builds(VectorClock, clock_dicts)
value_sets = st.frozensets(small_bytes, max_size=3)

maxes = st.builds(MaxLattice, st.integers(min_value=-3, max_value=3))
bools = st.builds(BoolLattice, st.booleans())
maps = st.builds(MapLattice, st.dictionaries(nodes, maxes, max_size=3))
maps_of_sets = st.builds(MapLattice, st.dictionaries(nodes, sets, max_size=3))
dependencies = st.builds(MapLattice, st.dictionaries(nodes, small_clocks, max_size=2))

single_causal_one = st.builds(SingleKeyCausalLattice, small_clocks, value_sets)
multi_causal_one = st.builds(MultiKeyCausalLattice, small_clocks, dependencies, value_sets)


def _merged(s: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Lattices reachable by merging 1-2 single-version ones (multi-version states too)."""
    return st.lists(s, min_size=1, max_size=2).map(lambda xs: reduce(lambda a, b: a.merge(b), xs))


single_causal = _merged(single_causal_one)
multi_causal = _merged(multi_causal_one)

#: name -> strategy of lattices of that type, for the laws.
STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "lww": lww,
    "set": sets,
    "ordered_set": ordered_sets,
    "priority": priorities,
    "max": maxes,
    "bool": bools,
    "map": maps,
    "map_of_sets": maps_of_sets,
    "vector_clock": clocks,
    "single_causal": single_causal,
    "multi_causal": multi_causal,
}

#: Types with an Anna payload, as built by constructors (what a payload can carry).
PAYLOAD_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "lww": lww,
    "set": sets,
    "ordered_set": ordered_sets,
    "priority": priorities,
    "single_causal": single_causal_one,
    "multi_causal": multi_causal_one,
}
