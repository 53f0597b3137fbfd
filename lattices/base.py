"""The interface every lattice implements.

Lattices are immutable values: ``merge`` returns a new lattice and never mutates
either operand, so a shard can keep ``stored = stored.merge(incoming)`` and a test can
compare before and after. ``merge`` is associative, commutative and idempotent.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Generic, Self, TypeVar

T = TypeVar("T")


class LatticeError(ValueError):
    """Base class of lattice errors."""


class LatticeDecodeError(LatticeError):
    """A payload could not be parsed as the requested lattice type."""


class LatticeTypeMismatch(LatticeError):
    """Two lattices of different types were merged."""


class Lattice(ABC, Generic[T]):
    # Empty slots so that subclasses declaring ``__slots__`` carry no ``__dict__``.
    __slots__ = ()

    #: The ``LatticeType`` enum value (anna_pb2) this lattice travels as; 0 (NONE)
    #: for lattices that have no Anna payload of their own (Max, Bool, Map, VectorClock).
    lattice_type: ClassVar[int] = 0

    @abstractmethod
    def merge(self, other: Self) -> Self:
        """The least upper bound of ``self`` and ``other`` (a new lattice)."""

    @abstractmethod
    def reveal(self) -> T:
        """The plain value this lattice holds."""

    def serialize(self) -> bytes:
        """The Anna payload bytes of this lattice (``KeyTuple.payload``)."""
        raise LatticeError(f"{type(self).__name__} has no Anna payload encoding")

    @classmethod
    def parse(cls, payload: bytes) -> Self:
        """Inverse of :meth:`serialize`; raises :class:`LatticeDecodeError` on garbage."""
        raise LatticeError(f"{cls.__name__} has no Anna payload encoding")

    # Lattices are values: subclasses set their fields once in __init__ with
    # object.__setattr__, and nothing changes them afterwards.
    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _check_type(self, other: Any) -> None:
        if type(other) is not type(self):
            raise LatticeTypeMismatch(
                f"cannot merge {type(self).__name__} with {type(other).__name__}"
            )
