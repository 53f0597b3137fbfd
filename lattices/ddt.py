"""Differentiable data types (DDTs): lattices that grow by deltas.

A DDT's state is built by merging **deltas**, and every delta is itself a value of the
same lattice, so a reader that applies the deltas it receives in any order, with
duplicates, ends at the same state (``merge`` is associative, commutative and
idempotent). The stream layer (``cache.streams`` and ``cloudburst.ddt``) carries the
deltas; this module is only the algebra: pure Python, no I/O.

=============  ==============================  ==========================================
type           delta                           merge
=============  ==============================  ==========================================
DLog           items of one writer, (w, seq)   union on (writer, seq); per-writer order
DCounter       {writer: running total}         per-writer max; value = sum
DMap           {key: delta of inner lattice}   key-wise merge of the inner lattice
DSet           added elements                  union
DTensor        (writer, numpy array)           union on writer; value = sum or mean
DRegister      (timestamp, writer, value)      last writer wins
=============  ==============================  ==========================================

Example::

    >>> a = DCounter.increment("w1", 3); b = DCounter.increment("w2", 4)
    >>> a.merge(b).merge(a).reveal()
    7

:class:`StreamMeta` is the lattice of a stream's bookkeeping: declared writers, the
writers that sealed and those that failed; a stream is final when all declared writers
have sealed.
"""

from __future__ import annotations

import pickle
from abc import abstractmethod
from collections.abc import Hashable, Iterable, Iterator, Mapping
from typing import Any, ClassVar, Self

import numpy as np

from lattices.base import Lattice, LatticeDecodeError, LatticeError

__all__ = [
    "DCounter",
    "DDT_TYPES",
    "DDTLattice",
    "DLog",
    "DMap",
    "DRegister",
    "DSet",
    "DTensor",
    "StreamMeta",
    "decode_delta",
    "encode_delta",
]


class DDTLattice(Lattice[Any]):
    """Base of every DDT: immutable, with a plain (picklable) state for the wire.

    ``to_plain`` returns builtins (and numpy arrays) only, so a delta travels as a small
    pickle without any class of ours in it; ``from_plain`` is its inverse.
    """

    __slots__ = ()

    #: The name deltas travel under (the key of :data:`DDT_TYPES`).
    type_name: ClassVar[str] = ""

    @abstractmethod
    def to_plain(self) -> Any:
        """The state as builtins and numpy arrays (what travels on the wire)."""

    @classmethod
    @abstractmethod
    def from_plain(cls, plain: Any) -> Self:
        """Inverse of :meth:`to_plain`; ``None`` gives the empty state."""

    @classmethod
    def bottom(cls) -> Self:
        """The empty state (the identity of ``merge``)."""
        return cls.from_plain(None)

    @classmethod
    def join(cls, values: Iterable[Self]) -> Self:
        """Merge many values at once (cheaper than folding ``merge`` for big states)."""
        out = cls.bottom()
        for v in values:
            out = out.merge(v)
        return out

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.type_name, self.to_plain()))

    def __repr__(self) -> str:
        text = repr(self.reveal())
        if len(text) > 80:
            text = text[:77] + "..."
        return f"{type(self).__name__}({text})"


def _rebuild(type_name: str, plain: Any) -> DDTLattice:
    return DDT_TYPES[type_name].from_plain(plain)


def _set(obj: object, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


# --------------------------------------------------------------------------- DLog


class DLog(DDTLattice):
    """An append-only log of items written by one or more writers.

    A delta is one batch ``(writer, seq) -> items``; a writer numbers its batches
    0, 1, 2, ... and never reuses a number, so ``(writer, seq)`` identifies the batch.
    ``reveal()`` lists items writer by writer, each writer's items in the order written.

    >>> log = DLog.batch("w", 1, ["c"]).merge(DLog.batch("w", 0, ["a", "b"]))
    >>> log.reveal()
    ['a', 'b', 'c']
    """

    __slots__ = ("batches",)
    type_name: ClassVar[str] = "DLog"
    batches: Mapping[tuple[str, int], tuple[Any, ...]]

    def __init__(self, batches: Mapping[tuple[str, int], Iterable[Any]] | None = None) -> None:
        _set(self, "batches", {k: tuple(v) for k, v in (batches or {}).items()})

    @classmethod
    def batch(cls, writer: str, seq: int, items: Iterable[Any]) -> DLog:
        """The delta holding batch ``seq`` of ``writer``."""
        if seq < 0:
            raise LatticeError(f"seq must be >= 0, got {seq}")
        return cls({(writer, seq): items})

    def merge(self, other: Self) -> Self:
        if type(other) is not type(self):
            self._check_type(other)
        if not other.batches:
            return self
        if not self.batches:
            return other
        big, small = (self, other) if len(self.batches) >= len(other.batches) else (other, self)
        if all(k in big.batches for k in small.batches):
            # (writer, seq) names one batch: equal keys hold equal items, except in
            # values no writer could produce; keep the larger key-wise to stay a lattice.
            if all(big.batches[k] == v for k, v in small.batches.items()):
                return big
        merged = dict(big.batches)
        for k, v in small.batches.items():
            if k not in merged:
                merged[k] = v
            elif merged[k] != v:
                merged[k] = max(merged[k], v, key=_order_key)
        obj = object.__new__(type(self))
        _set(obj, "batches", merged)
        return obj

    @classmethod
    def join(cls, values: Iterable[Self]) -> Self:
        merged: dict[tuple[str, int], tuple[Any, ...]] = {}
        for v in values:
            for k, items in v.batches.items():
                if k not in merged:
                    merged[k] = items
                elif merged[k] != items:
                    merged[k] = max(merged[k], items, key=_order_key)
        obj = object.__new__(cls)
        _set(obj, "batches", merged)
        return obj

    def reveal(self) -> list[Any]:
        out: list[Any] = []
        for k in sorted(self.batches):
            out.extend(self.batches[k])
        return out

    def items_of(self, writer: str) -> list[Any]:
        """The items ``writer`` wrote, in order (gaps in its seqs are skipped)."""
        out: list[Any] = []
        for k in sorted(k for k in self.batches if k[0] == writer):
            out.extend(self.batches[k])
        return out

    def __iter__(self) -> Iterator[Any]:
        return iter(self.reveal())

    def __len__(self) -> int:
        return sum(len(v) for v in self.batches.values())

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, DLog)
        return self.batches == other.batches

    def __hash__(self) -> int:
        return hash(("DLog", frozenset(self.batches)))

    def to_plain(self) -> Any:
        return [(w, s, list(items)) for (w, s), items in self.batches.items()]

    @classmethod
    def from_plain(cls, plain: Any) -> Self:
        obj = object.__new__(cls)
        _set(obj, "batches", {(w, s): tuple(items) for w, s, items in plain or ()})
        return obj


def _order_key(value: Any) -> bytes:
    """A total order on arbitrary values (tie-breaks that keep merge commutative)."""
    try:
        return pickle.dumps(value, protocol=5)
    except Exception:  # unpicklable: fall back to the repr
        return repr(value).encode()


# ------------------------------------------------------------------------ DCounter


class DCounter(DDTLattice):
    """A grow-only counter: each writer's running total, merged by per-writer max.

    A delta is ``{writer: total so far}``, so a duplicated or reordered delta never
    counts twice.

    >>> DCounter({"a": 2}).merge(DCounter({"a": 5, "b": 1})).reveal()
    6
    """

    __slots__ = ("counts",)
    type_name: ClassVar[str] = "DCounter"
    counts: Mapping[str, int]

    def __init__(self, counts: Mapping[str, int] | None = None) -> None:
        clean: dict[str, int] = {}
        for w, n in (counts or {}).items():
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                raise LatticeError(f"counter total for {w!r} must be an int >= 0, got {n!r}")
            clean[w] = n
        _set(self, "counts", clean)

    @classmethod
    def increment(cls, writer: str, total: int) -> DCounter:
        """The delta saying ``writer`` has counted ``total`` so far."""
        return cls({writer: total})

    def merge(self, other: Self) -> Self:
        if type(other) is not type(self):
            self._check_type(other)
        mine = self.counts
        if all(mine.get(w, -1) >= n for w, n in other.counts.items()):
            return self
        merged = dict(mine)
        for w, n in other.counts.items():
            if n > merged.get(w, -1):
                merged[w] = n
        obj = object.__new__(type(self))
        _set(obj, "counts", merged)
        return obj

    def reveal(self) -> int:
        return sum(self.counts.values())

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, DCounter)
        return self.counts == other.counts

    def __hash__(self) -> int:
        return hash(("DCounter", frozenset(self.counts.items())))

    def to_plain(self) -> Any:
        return dict(self.counts)

    @classmethod
    def from_plain(cls, plain: Any) -> Self:
        obj = object.__new__(cls)
        _set(obj, "counts", plain if type(plain) is dict else dict(plain or {}))
        return obj


# ---------------------------------------------------------------------------- DSet


class DSet(DDTLattice):
    """A grow-only set of hashable elements; a delta is the elements added.

    >>> sorted(DSet({1}).merge(DSet({2, 1})).reveal())
    [1, 2]
    """

    __slots__ = ("elements",)
    type_name: ClassVar[str] = "DSet"
    elements: frozenset[Any]

    def __init__(self, elements: Iterable[Hashable] = ()) -> None:
        _set(self, "elements", frozenset(elements))

    def merge(self, other: Self) -> Self:
        if type(other) is not type(self):
            self._check_type(other)
        if other.elements <= self.elements:
            return self
        if self.elements <= other.elements:
            return other
        obj = object.__new__(type(self))
        _set(obj, "elements", self.elements | other.elements)
        return obj

    def reveal(self) -> frozenset[Any]:
        return self.elements

    def __len__(self) -> int:
        return len(self.elements)

    def __contains__(self, item: object) -> bool:
        return item in self.elements

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, DSet)
        return self.elements == other.elements

    def __hash__(self) -> int:
        return hash(("DSet", self.elements))

    def to_plain(self) -> Any:
        return list(self.elements)

    @classmethod
    def from_plain(cls, plain: Any) -> Self:
        obj = object.__new__(cls)
        _set(obj, "elements", frozenset(plain or ()))
        return obj


# ----------------------------------------------------------------------- DRegister


class DRegister(DDTLattice):
    """A last-writer-wins register of ``(timestamp, writer, value)``.

    The larger timestamp wins; ties go to the larger writer name, then to the larger
    pickled value, so every replica picks the same winner.

    >>> DRegister(1.0, "a", "old").merge(DRegister(2.0, "b", "new")).reveal()
    'new'
    """

    __slots__ = ("timestamp", "writer", "value")
    type_name: ClassVar[str] = "DRegister"
    timestamp: float
    writer: str
    value: Any

    def __init__(self, timestamp: float = float("-inf"), writer: str = "", value: Any = None):
        _set(self, "timestamp", float(timestamp))
        _set(self, "writer", writer)
        _set(self, "value", value)

    def _key(self) -> tuple[float, str, bytes]:
        return (self.timestamp, self.writer, _order_key(self.value))

    def merge(self, other: Self) -> Self:
        if type(other) is not type(self):
            self._check_type(other)
        if (other.timestamp, other.writer) != (self.timestamp, self.writer):
            return (
                other if (other.timestamp, other.writer) > (self.timestamp, self.writer) else self
            )
        return other if other._key() > self._key() else self

    def reveal(self) -> Any:
        return self.value

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, DRegister)
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(("DRegister", self._key()))

    def to_plain(self) -> Any:
        return (self.timestamp, self.writer, self.value)

    @classmethod
    def from_plain(cls, plain: Any) -> Self:
        if plain is None:
            return cls()
        ts, writer, value = plain
        return cls(ts, writer, value)


# ------------------------------------------------------------------------- DTensor


class DTensor(DDTLattice):
    """Numpy arrays contributed once per writer, combined by ``sum`` or ``mean``.

    ``writers`` is how many contributions make the tensor complete (0: unknown);
    ``mode`` is ``"sum"`` (the default) or ``"mean"``.
    Merge is union on writer (one writer, one array; if two different arrays ever
    claim the same writer the larger bytes wins, so merge stays commutative).

    >>> import numpy as np
    >>> t = DTensor.contribution("a", np.ones(2), writers=2, mode="mean")
    >>> t = t.merge(DTensor.contribution("b", np.full(2, 3.0), writers=2, mode="mean"))
    >>> t.complete, t.reveal().tolist()
    (True, [2.0, 2.0])
    """

    __slots__ = ("parts", "writers", "mode")
    type_name: ClassVar[str] = "DTensor"
    #: "" means not yet declared (the bottom; combines as "sum").
    MODES: ClassVar[tuple[str, ...]] = ("", "sum", "mean")
    parts: Mapping[str, np.ndarray[Any, Any]]
    writers: int
    mode: str

    def __init__(
        self,
        parts: Mapping[str, Any] | None = None,
        writers: int = 0,
        mode: str = "",
    ) -> None:
        if mode not in self.MODES:
            raise LatticeError(f"DTensor mode must be one of {self.MODES}, got {mode!r}")
        _set(self, "parts", {w: np.asarray(a) for w, a in (parts or {}).items()})
        _set(self, "writers", int(writers))
        _set(self, "mode", mode)

    @classmethod
    def contribution(cls, writer: str, array: Any, writers: int = 0, mode: str = "sum") -> DTensor:
        """The delta holding ``writer``'s array."""
        return cls({writer: np.array(array, copy=True)}, writers, mode)

    def merge(self, other: Self) -> Self:
        if type(other) is not type(self):
            self._check_type(other)
        parts = dict(self.parts)
        changed = False
        for w, a in other.parts.items():
            mine = parts.get(w)
            if mine is None:
                parts[w] = a
                changed = True
            elif not _arrays_equal(mine, a) and _array_key(a) > _array_key(mine):
                parts[w] = a
                changed = True
        writers = max(self.writers, other.writers)
        mode = max(self.mode, other.mode)
        if not changed and writers == self.writers and mode == self.mode:
            return self
        obj = object.__new__(type(self))
        _set(obj, "parts", parts)
        _set(obj, "writers", writers)
        _set(obj, "mode", mode)
        return obj

    @property
    def complete(self) -> bool:
        """Whether every declared writer has contributed."""
        return self.writers > 0 and len(self.parts) >= self.writers

    def reveal(self) -> Any:
        """The sum (or mean) over the contributions so far; ``None`` if there are none."""
        if not self.parts:
            return None
        total = np.sum(np.stack([self.parts[w] for w in sorted(self.parts)]), axis=0)
        if self.mode == "mean":
            return total / len(self.parts)
        return total

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, DTensor)
        return (
            self.writers == other.writers
            and self.mode == other.mode
            and self.parts.keys() == other.parts.keys()
            and all(_arrays_equal(a, other.parts[w]) for w, a in self.parts.items())
        )

    def __hash__(self) -> int:
        return hash(("DTensor", frozenset(self.parts), self.writers, self.mode))

    def to_plain(self) -> Any:
        return (dict(self.parts), self.writers, self.mode)

    @classmethod
    def from_plain(cls, plain: Any) -> Self:
        if plain is None:
            return cls()
        parts, writers, mode = plain
        return cls(parts, writers, mode)


def _arrays_equal(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and bool(np.array_equal(a, b))


def _array_key(a: np.ndarray[Any, Any]) -> tuple[str, tuple[int, ...], bytes]:
    return (a.dtype.str, tuple(a.shape), a.tobytes())


# ---------------------------------------------------------------------------- DMap


class DMap(DDTLattice):
    """A map from keys to inner DDT values, merged key by key.

    A delta holds only the keys that changed. ``reveal()`` gives ``{key: inner
    value}`` (for the default inner :class:`DCounter`, a plain count).

    >>> a = DMap({"apple": DCounter({"w1": 1})}); b = DMap({"apple": DCounter({"w2": 2})})
    >>> a.merge(b).reveal()
    {'apple': 3}
    """

    __slots__ = ("entries",)
    type_name: ClassVar[str] = "DMap"
    entries: Mapping[Any, DDTLattice]

    def __init__(self, entries: Mapping[Any, DDTLattice] | None = None) -> None:
        _set(self, "entries", dict(entries or {}))

    def merge(self, other: Self) -> Self:
        if type(other) is not type(self):
            self._check_type(other)
        if not other.entries:
            return self
        merged = dict(self.entries)
        for k, v in other.entries.items():
            mine = merged.get(k)
            merged[k] = v if mine is None else mine.merge(v)
        obj = object.__new__(type(self))
        _set(obj, "entries", merged)
        return obj

    @classmethod
    def join(cls, values: Iterable[Self]) -> Self:
        merged: dict[Any, DDTLattice] = {}
        for val in values:
            for k, v in val.entries.items():
                mine = merged.get(k)
                merged[k] = v if mine is None else mine.merge(v)
        obj = object.__new__(cls)
        _set(obj, "entries", merged)
        return obj

    def reveal(self) -> dict[Any, Any]:
        return {k: v.reveal() for k, v in self.entries.items()}

    def get(self, key: Any) -> DDTLattice | None:
        """The inner lattice under ``key`` (``None`` if absent)."""
        return self.entries.get(key)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, key: object) -> bool:
        return key in self.entries

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, DMap)
        return dict(self.entries) == dict(other.entries)

    def __hash__(self) -> int:
        return hash(("DMap", frozenset(self.entries)))

    def to_plain(self) -> Any:
        entries = self.entries
        if entries and all(type(v) is DCounter and v.counts for v in entries.values()):
            # The common case (word counts): columnar by writer, a flat {key: total}
            # per writer, so a delta of 10k keys pickles as one dict, not 10k objects.
            by_writer: dict[str, dict[Any, int]] = {}
            for k, v in entries.items():
                for w, n in v.counts.items():  # type: ignore[attr-defined]
                    by_writer.setdefault(w, {})[k] = n
            return ("DCounter", by_writer)
        return ("", [(k, v.type_name, v.to_plain()) for k, v in entries.items()])

    @classmethod
    def from_plain(cls, plain: Any) -> Self:
        obj = object.__new__(cls)
        entries: dict[Any, DDTLattice] = {}
        if plain:
            kind, body = plain
            if kind == "DCounter":
                per_key: dict[Any, dict[str, int]] = {}
                for w, totals in body.items():
                    for k, n in totals.items():
                        per_key.setdefault(k, {})[w] = n
                entries = {k: DCounter.from_plain(c) for k, c in per_key.items()}
            else:
                entries = {k: DDT_TYPES[t].from_plain(p) for k, t, p in body}
        _set(obj, "entries", entries)
        return obj


# ---------------------------------------------------------------------- StreamMeta


class StreamMeta(Lattice[bool]):
    """A stream's bookkeeping: declared writers (max), sealed and failed writers (union).

    ``reveal()`` (and :attr:`final`) is true once all declared writers have sealed.

    >>> m = StreamMeta(2, {"a"}).merge(StreamMeta(0, {"b"}))
    >>> m.final
    True
    """

    __slots__ = ("writers", "sealed", "failed")
    writers: int
    sealed: frozenset[str]
    failed: frozenset[str]

    def __init__(
        self, writers: int = 0, sealed: Iterable[str] = (), failed: Iterable[str] = ()
    ) -> None:
        object.__setattr__(self, "writers", int(writers))
        object.__setattr__(self, "sealed", frozenset(sealed))
        object.__setattr__(self, "failed", frozenset(failed))

    def merge(self, other: Self) -> Self:
        if type(other) is not type(self):
            self._check_type(other)
        return type(self)(
            max(self.writers, other.writers),
            self.sealed | other.sealed,
            self.failed | other.failed,
        )

    @property
    def final(self) -> bool:
        """All declared writers sealed (a stream with no declared writers never is)."""
        return self.writers > 0 and len(self.sealed) >= self.writers

    def reveal(self) -> bool:
        return self.final

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("StreamMeta is immutable")

    def __reduce__(self) -> tuple[Any, ...]:
        return (StreamMeta, (self.writers, tuple(self.sealed), tuple(self.failed)))

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, StreamMeta)
        return (self.writers, self.sealed, self.failed) == (
            other.writers,
            other.sealed,
            other.failed,
        )

    def __hash__(self) -> int:
        return hash(("StreamMeta", self.writers, self.sealed, self.failed))

    def __repr__(self) -> str:
        return f"StreamMeta(writers={self.writers}, sealed={sorted(self.sealed)}, failed={sorted(self.failed)})"


#: name -> DDT class (the names deltas travel under).
DDT_TYPES: dict[str, type[DDTLattice]] = {
    cls.type_name: cls for cls in (DLog, DCounter, DSet, DRegister, DTensor, DMap)
}


def encode_delta(delta: DDTLattice) -> bytes:
    """Wire bytes of a delta (a pickle of builtins and numpy arrays, protocol 5)."""
    return pickle.dumps((delta.type_name, delta.to_plain()), protocol=5)


def decode_delta(payload: bytes | memoryview) -> DDTLattice:
    """Inverse of :func:`encode_delta`; raises :class:`LatticeDecodeError` on garbage."""
    try:
        type_name, plain = pickle.loads(payload)
        return DDT_TYPES[type_name].from_plain(plain)
    except Exception as exc:
        raise LatticeDecodeError(f"malformed DDT delta: {exc}") from exc
