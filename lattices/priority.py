"""Lowest-priority-wins register: :class:`PriorityLattice`."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Self

from anna.proto import anna_pb2
from lattices._proto import check_bytes, decode, short_repr
from lattices.base import Lattice, LatticeDecodeError, LatticeError

_PriorityValue = anna_pb2.PriorityValue


class PriorityLattice(Lattice[bytes]):
    """A ``(priority, value)`` pair where the lower priority wins (Anna ``PRIORITY``).

    On equal priorities the smaller value bytes wins, so the merge is deterministic.
    NaN is rejected (it has no order); ``-0.0`` is stored as ``0.0``.

    >>> PriorityLattice(2.0, b"slow").merge(PriorityLattice(1.0, b"fast")).reveal()
    b'fast'
    """

    __slots__ = ("priority", "value")
    lattice_type: ClassVar[int] = anna_pb2.PRIORITY

    priority: float
    value: bytes

    def __init__(self, priority: float, value: bytes) -> None:
        if not isinstance(priority, int | float) or isinstance(priority, bool):
            raise LatticeError(f"priority must be a float, not {type(priority).__name__}")
        p = float(priority)
        if math.isnan(p):
            raise LatticeError("priority must not be NaN")
        object.__setattr__(self, "priority", p + 0.0)  # -0.0 + 0.0 == +0.0
        object.__setattr__(self, "value", check_bytes(value, "value"))

    def merge(self, other: Self) -> Self:
        if type(other) is not type(self):
            self._check_type(other)
        op = other.priority
        if op < self.priority or (op == self.priority and other.value < self.value):
            return other
        return self

    def reveal(self) -> bytes:
        return self.value

    def serialize(self) -> bytes:
        out: bytes = _PriorityValue(priority=self.priority, value=self.value).SerializeToString()
        return out

    @classmethod
    def parse(cls, payload: bytes) -> Self:
        msg = decode(_PriorityValue, payload, "PriorityValue")
        if math.isnan(msg.priority):
            raise LatticeDecodeError("PriorityValue has a NaN priority")
        return cls(msg.priority, msg.value)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, PriorityLattice)
        return self.priority == other.priority and self.value == other.value

    def __hash__(self) -> int:
        return hash((PriorityLattice, self.priority, self.value))

    def __repr__(self) -> str:
        return f"PriorityLattice(priority={self.priority!r}, value={short_repr(self.value)})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.priority, self.value))
