"""Anna's Python client module layout: ``from anna.lattices import LWWPairLattice``.

Code written for the original Anna/Cloudburst clients (the Cloudburst benchmarks'
functions, for instance) imports its lattices from here; they are this project's
lattices (:mod:`lattices`), so values move between both APIs unchanged::

    from anna.lattices import LWWPairLattice, SetLattice
    cloudburst.put(key, LWWPairLattice(0, cp.dumps(my_id)))   # in a function
    cp.loads(cloudburst.get(key).reveal())

Differences from the original module (docs/differences.md): the lattices are
immutable (``merge`` returns the merged lattice, there is no ``assign``; the original
``MaxIntLattice``/``MapLattice`` merged in place), ``serialize()`` returns the Anna
payload bytes instead of ``(protobuf, type)``, and the constructors take any iterable
where the original insisted on a ``set``/``ListBasedOrderedSet``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from anna.proto.anna_pb2 import (
    LWW,
    MULTI_CAUSAL,
    ORDERED_SET,
    PRIORITY,
    SET,
    SINGLE_CAUSAL,
    LWWValue,
    MultiKeyCausalValue,
    PriorityValue,
    SetValue,
    SingleKeyCausalValue,
)
from lattices import (
    Lattice,
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

#: The original name of the max lattice over integers.
MaxIntLattice = MaxLattice


class ListBasedOrderedSet:
    """A sorted list without duplicates (the original's input of ``OrderedSetLattice``).

    >>> OrderedSetLattice(ListBasedOrderedSet([b"b", b"a", b"b"])).reveal()
    (b'a', b'b')
    """

    def __init__(self, iterable: Iterable[Any] = ()) -> None:
        self.lst: list[Any] = sorted(set(iterable))

    def insert(self, value: Any) -> None:
        if value not in self.lst:
            self.lst.append(value)
            self.lst.sort()

    def __iter__(self) -> Iterator[Any]:
        return iter(self.lst)

    def __len__(self) -> int:
        return len(self.lst)


__all__ = [
    "LWW",
    "MULTI_CAUSAL",
    "ORDERED_SET",
    "PRIORITY",
    "SET",
    "SINGLE_CAUSAL",
    "LWWPairLattice",
    "LWWValue",
    "Lattice",
    "ListBasedOrderedSet",
    "MapLattice",
    "MaxIntLattice",
    "MultiKeyCausalLattice",
    "MultiKeyCausalValue",
    "OrderedSetLattice",
    "PriorityLattice",
    "PriorityValue",
    "SetLattice",
    "SetValue",
    "SingleKeyCausalLattice",
    "SingleKeyCausalValue",
    "VectorClock",
]
