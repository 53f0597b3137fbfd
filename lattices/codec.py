"""Lattice <-> Anna ``(lattice_type, payload)`` conversion, as the KVS uses it per request.

>>> from lattices.lww import LWWPairLattice
>>> t, p = to_payload(LWWPairLattice(7, b"v"))
>>> from_payload(t, p)
LWWPairLattice(timestamp=7, value=b'v')
"""

from __future__ import annotations

from typing import Any

from lattices.base import Lattice, LatticeDecodeError, LatticeError
from lattices.causal import MultiKeyCausalLattice, SingleKeyCausalLattice
from lattices.lww import LWWPairLattice
from lattices.priority import PriorityLattice
from lattices.sets import OrderedSetLattice, SetLattice

#: Every lattice class that travels as an Anna payload, by its ``LatticeType`` value.
LATTICE_CLASSES: dict[int, type[Lattice[Any]]] = {
    cls.lattice_type: cls
    for cls in (
        LWWPairLattice,
        SetLattice,
        SingleKeyCausalLattice,
        MultiKeyCausalLattice,
        OrderedSetLattice,
        PriorityLattice,
    )
}

_LWW = LWWPairLattice.lattice_type
_lww_parse = LWWPairLattice.parse


def from_payload(lattice_type: int, payload: bytes) -> Lattice[Any]:
    """Decode an Anna payload of the given ``LatticeType``.

    Raises :class:`LatticeDecodeError` for NONE, an unknown type, or bytes that are not
    a payload of that type.
    """
    if lattice_type == _LWW:
        return _lww_parse(payload)
    cls = LATTICE_CLASSES.get(lattice_type)
    if cls is None:
        raise LatticeDecodeError(f"no lattice has LatticeType {lattice_type!r}")
    return cls.parse(payload)


def to_payload(lattice: Lattice[Any]) -> tuple[int, bytes]:
    """``(lattice_type, payload)`` for a lattice that has an Anna encoding.

    Raises :class:`LatticeError` for lattices without one (Max, Bool, Map, VectorClock).
    """
    lattice_type = lattice.lattice_type
    if lattice_type not in LATTICE_CLASSES:
        raise LatticeError(f"{type(lattice).__name__} has no Anna payload encoding")
    return lattice_type, lattice.serialize()
