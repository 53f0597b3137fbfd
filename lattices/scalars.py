"""Single-value lattices without an Anna payload: :class:`MaxLattice`, :class:`BoolLattice`."""

from __future__ import annotations

from typing import Any, Protocol, Self, TypeVar

from lattices.base import Lattice, LatticeError


class SupportsLessThan(Protocol):
    def __lt__(self, other: Any, /) -> bool: ...


C = TypeVar("C", bound=SupportsLessThan)


class MaxLattice(Lattice[C]):
    """The larger of two totally ordered values (ints, floats without NaN, bytes, ...).

    >>> MaxLattice(3).merge(MaxLattice(5)).reveal()
    5
    """

    __slots__ = ("value",)
    value: C

    def __init__(self, value: C) -> None:
        if value != value:  # NaN (or anything else not equal to itself) has no order
            raise LatticeError(f"MaxLattice needs a totally ordered value, got {value!r}")
        object.__setattr__(self, "value", value)

    def merge(self, other: Self) -> Self:
        if type(other) is not type(self):
            self._check_type(other)
        return other if self.value < other.value else self

    def reveal(self) -> C:
        return self.value

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, MaxLattice)
        return bool(self.value == other.value)

    def __hash__(self) -> int:
        return hash((MaxLattice, self.value))

    def __repr__(self) -> str:
        return f"MaxLattice({self.value!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.value,))


class BoolLattice(Lattice[bool]):
    """A flag that, once true, stays true (merge is logical or).

    >>> BoolLattice(False).merge(BoolLattice(True)).reveal()
    True
    """

    __slots__ = ("value",)
    value: bool

    def __init__(self, value: bool = False) -> None:
        if not isinstance(value, bool):
            raise LatticeError(f"BoolLattice needs a bool, not {type(value).__name__}")
        object.__setattr__(self, "value", value)

    def merge(self, other: Self) -> Self:
        if type(other) is not type(self):
            self._check_type(other)
        return other if other.value and not self.value else self

    def reveal(self) -> bool:
        return self.value

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, BoolLattice)
        return self.value == other.value

    def __hash__(self) -> int:
        return hash((BoolLattice, self.value))

    def __repr__(self) -> str:
        return f"BoolLattice({self.value!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.value,))
