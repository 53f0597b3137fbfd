"""Merge algebra: immutable lattices, their Anna payload encodings and the codec.

Every ``merge`` is associative, commutative and idempotent and returns a lattice
without mutating its operands. Lattices with an Anna payload (``lattice_type`` != 0)
convert with ``serialize``/``parse`` or :func:`to_payload`/:func:`from_payload`.
"""

# Imported first, before any lattices submodule: anna/__init__ imports lattices.codec, so
# this order keeps `import lattices` and `import anna` working whichever comes first.
from anna.proto import anna_pb2 as _anna_pb2  # noqa: F401
from lattices.base import Lattice, LatticeDecodeError, LatticeError, LatticeTypeMismatch
from lattices.causal import Dependencies, MultiKeyCausalLattice, SingleKeyCausalLattice
from lattices.codec import LATTICE_CLASSES, from_payload, to_payload
from lattices.lww import LWWPairLattice, make_timestamp
from lattices.maps import MapLattice
from lattices.priority import PriorityLattice
from lattices.scalars import BoolLattice, MaxLattice
from lattices.sets import OrderedSetLattice, SetLattice
from lattices.vector_clock import ClockOrder, VectorClock

__all__ = [
    "LATTICE_CLASSES",
    "BoolLattice",
    "ClockOrder",
    "Dependencies",
    "LWWPairLattice",
    "Lattice",
    "LatticeDecodeError",
    "LatticeError",
    "LatticeTypeMismatch",
    "MapLattice",
    "MaxLattice",
    "MultiKeyCausalLattice",
    "OrderedSetLattice",
    "PriorityLattice",
    "SetLattice",
    "SingleKeyCausalLattice",
    "VectorClock",
    "from_payload",
    "make_timestamp",
    "to_payload",
]

# DDT types are exported below by lattices/ddt.py
from lattices.ddt import (  # noqa: E402 - appended by the DDT module's owner
    DDT_TYPES,
    DCounter,
    DDTLattice,
    DLog,
    DMap,
    DRegister,
    DSet,
    DTensor,
    StreamMeta,
)

__all__ += [
    "DCounter",
    "DDTLattice",
    "DDT_TYPES",
    "DLog",
    "DMap",
    "DRegister",
    "DSet",
    "DTensor",
    "StreamMeta",
]
