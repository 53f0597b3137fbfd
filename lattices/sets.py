"""Grow-only sets of byte strings: :class:`SetLattice` and :class:`OrderedSetLattice`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, ClassVar, Self, TypeVar

from anna.proto import anna_pb2
from lattices._proto import check_bytes, decode, short_repr
from lattices.base import Lattice, LatticeError

_SetValue = anna_pb2.SetValue

R = TypeVar("R")


def _freeze(values: Iterable[bytes]) -> frozenset[bytes]:
    if isinstance(values, bytes | bytearray | memoryview | str):
        # A lone bytes object is an iterable of ints: almost certainly a caller bug.
        raise LatticeError("values must be an iterable of bytes, not a single bytes/str")
    out = frozenset(values)
    for v in out:
        if type(v) is not bytes:
            return frozenset(check_bytes(v, "set element") for v in out)
    return out


class _BytesSet(Lattice[R]):
    """Shared implementation: an immutable frozenset of bytes merged by union."""

    __slots__ = ("values",)
    values: frozenset[bytes]

    def __init__(self, values: Iterable[bytes] = ()) -> None:
        object.__setattr__(self, "values", _freeze(values))

    @classmethod
    def _make(cls, values: frozenset[bytes]) -> Self:
        obj = object.__new__(cls)
        object.__setattr__(obj, "values", values)
        return obj

    def merge(self, other: Self) -> Self:
        if type(other) is not type(self):
            self._check_type(other)
        if other.values <= self.values:
            return self
        if self.values <= other.values:
            return other
        return self._make(self.values | other.values)

    def serialize(self) -> bytes:
        # Sorted so equal sets always produce identical payload bytes.
        out: bytes = _SetValue(values=sorted(self.values)).SerializeToString()
        return out

    @classmethod
    def parse(cls, payload: bytes) -> Self:
        msg = decode(_SetValue, payload, "SetValue")
        return cls._make(frozenset(msg.values))

    def __len__(self) -> int:
        return len(self.values)

    def __contains__(self, item: object) -> bool:
        return item in self.values

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _BytesSet)
        return self.values == other.values

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.values))

    def __repr__(self) -> str:
        shown = sorted(self.values)
        inner = ", ".join(short_repr(v) for v in shown[:8])
        if len(shown) > 8:
            inner += f", ...<{len(shown)} elements>"
        return f"{type(self).__name__}({{{inner}}})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (tuple(self.values),))


class SetLattice(_BytesSet[frozenset[bytes]]):
    """A grow-only set of bytes (Anna ``SET``); merge is union.

    >>> SetLattice({b"a"}).merge(SetLattice({b"b"})).reveal() == {b"a", b"b"}
    True
    """

    __slots__ = ()
    lattice_type: ClassVar[int] = anna_pb2.SET

    def reveal(self) -> frozenset[bytes]:
        return self.values

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.values)


class OrderedSetLattice(_BytesSet[tuple[bytes, ...]]):
    """A grow-only set of bytes read back sorted by bytes (Anna ``ORDERED_SET``).

    >>> OrderedSetLattice({b"b", b"a"}).reveal()
    (b'a', b'b')
    """

    __slots__ = ()
    lattice_type: ClassVar[int] = anna_pb2.ORDERED_SET

    def reveal(self) -> tuple[bytes, ...]:
        return tuple(sorted(self.values))

    def __iter__(self) -> Iterator[bytes]:
        return iter(sorted(self.values))
