"""Vector clocks: :class:`VectorClock` (point-wise max) and :class:`ClockOrder`."""

from __future__ import annotations

import enum
from collections.abc import ItemsView, Iterable, Iterator, Mapping
from typing import Any, Self

from lattices._proto import UINT32_MAX
from lattices.base import Lattice, LatticeError


class ClockOrder(enum.Enum):
    """How one vector clock relates to another (``a.compare(b)``)."""

    EQUAL = "equal"
    #: ``a`` is at least ``b`` everywhere and larger somewhere.
    DOMINATES = "dominates"
    #: ``b`` dominates ``a``.
    DOMINATED = "dominated"
    CONCURRENT = "concurrent"


class VectorClock(Lattice[dict[str, int]]):
    """A map from node id to a uint32 counter; merge is the point-wise max.

    A missing node counts as 0, and zero entries are dropped on construction, so equal
    clocks are equal objects whatever zeros they were written with.

    >>> a = VectorClock({"n1": 2}); b = VectorClock({"n1": 1, "n2": 1})
    >>> a.merge(b).reveal() == {"n1": 2, "n2": 1}
    True
    >>> a.compare(b)
    <ClockOrder.CONCURRENT: 'concurrent'>
    """

    __slots__ = ("_clock",)
    _clock: dict[str, int]

    def __init__(self, clock: Mapping[str, int] | Iterable[tuple[str, int]] = ()) -> None:
        d: dict[str, int] = {}
        for node, count in dict(clock).items():
            if not isinstance(node, str):
                raise LatticeError(f"vector clock node ids are str, not {type(node).__name__}")
            if not isinstance(count, int) or isinstance(count, bool):
                raise LatticeError(f"vector clock counts are int, not {type(count).__name__}")
            if not 0 <= count <= UINT32_MAX:
                raise LatticeError(f"vector clock count {count} is outside the uint32 range")
            if count:
                d[node] = int(count)
        object.__setattr__(self, "_clock", d)

    @classmethod
    def _make(cls, clock: dict[str, int]) -> Self:
        # Trusted: non-zero uint32 counts only.
        obj = object.__new__(cls)
        object.__setattr__(obj, "_clock", clock)
        return obj

    def merge(self, other: Self) -> Self:
        if type(other) is not type(self):
            self._check_type(other)
        order = self.compare(other)
        if order is ClockOrder.DOMINATED:
            return other
        if order is not ClockOrder.CONCURRENT:
            return self
        out = dict(self._clock)
        for node, count in other._clock.items():
            if count > out.get(node, 0):
                out[node] = count
        return self._make(out)

    def reveal(self) -> dict[str, int]:
        return dict(self._clock)

    def compare(self, other: VectorClock) -> ClockOrder:
        """Where ``self`` stands relative to ``other``."""
        a, b = self._clock, other._clock
        ge = le = True
        for node, count in a.items():
            oc = b.get(node, 0)
            if count > oc:
                le = False
            elif count < oc:
                ge = False
        if ge:
            for node in b:
                if node not in a:  # b's counts are all > 0
                    ge = False
                    break
        if ge and le:
            return ClockOrder.EQUAL
        if ge:
            return ClockOrder.DOMINATES
        if le:
            return ClockOrder.DOMINATED
        return ClockOrder.CONCURRENT

    def dominates(self, other: VectorClock) -> bool:
        """``self`` >= ``other`` everywhere and > somewhere (strict)."""
        return self.compare(other) is ClockOrder.DOMINATES

    def descends(self, other: VectorClock) -> bool:
        """``self`` dominates or equals ``other`` (it has seen everything ``other`` has)."""
        return self.compare(other) in (ClockOrder.DOMINATES, ClockOrder.EQUAL)

    def concurrent(self, other: VectorClock) -> bool:
        """Neither clock descends from the other."""
        return self.compare(other) is ClockOrder.CONCURRENT

    def increment(self, node: str, by: int = 1) -> VectorClock:
        """A new clock with ``node``'s counter raised by ``by``."""
        return VectorClock({**self._clock, node: self._clock.get(node, 0) + by})

    def get(self, node: str) -> int:
        """``node``'s counter (0 if absent)."""
        return self._clock.get(node, 0)

    def items(self) -> ItemsView[str, int]:
        return self._clock.items()

    def __getitem__(self, node: str) -> int:
        return self._clock.get(node, 0)

    def __contains__(self, node: object) -> bool:
        return node in self._clock

    def __iter__(self) -> Iterator[str]:
        return iter(self._clock)

    def __len__(self) -> int:
        return len(self._clock)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, VectorClock)
        return self._clock == other._clock

    def __hash__(self) -> int:
        return hash((VectorClock, frozenset(self._clock.items())))

    def __repr__(self) -> str:
        return f"VectorClock({dict(sorted(self._clock.items()))!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self._clock,))
