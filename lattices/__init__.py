"""Merge algebra: immutable lattices, their Anna payload encodings and the codec.

Every ``merge`` is associative, commutative and idempotent and returns a lattice
without mutating its operands.
"""

from lattices.base import Lattice, LatticeDecodeError, LatticeError, LatticeTypeMismatch
from lattices.codec import LATTICE_CLASSES, from_payload, to_payload
from lattices.lww import LWWPairLattice, make_timestamp
from lattices.priority import PriorityLattice
from lattices.sets import OrderedSetLattice, SetLattice

__all__ = [
    "LATTICE_CLASSES",
    "LWWPairLattice",
    "Lattice",
    "LatticeDecodeError",
    "LatticeError",
    "LatticeTypeMismatch",
    "OrderedSetLattice",
    "PriorityLattice",
    "SetLattice",
    "from_payload",
    "make_timestamp",
    "to_payload",
]

# DDT types are exported below by lattices/ddt.py
