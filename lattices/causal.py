"""Causal lattices: :class:`SingleKeyCausalLattice` and :class:`MultiKeyCausalLattice`.

Why a set of versions and not one ``(clock, values)`` pair
-----------------------------------------------------------
PROTOCOL.md describes the merge of a stored pair with an incoming pair: merge the clocks;
if the incoming clock descends from the stored one its values replace them; if the
clocks are concurrent the values are unioned; if it is dominated nothing changes. On
single pairs no rule of that shape is associative. With ``a = ({p:1}, {x})``,
``b = ({q:1}, {y})`` and ``c = ({p:1, q:1}, {z})``: ``(a ⊔ b) ⊔ c`` first unions to
``({p:1, q:1}, {x, y})`` and then meets an equal clock, while ``a ⊔ (b ⊔ c) = c``.
Replicas that see writes in different orders would then disagree.

So a causal lattice holds an *antichain of versions*: every version whose clock no
other version dominates, each with its values (and dependencies). Merge is the union
of versions, values (and dependencies) joined on equal clocks, dominated versions
dropped. That is the lattice of maximal elements: associative, commutative and
idempotent. Seen from outside (``vector_clock``, ``values``, ``dependencies``,
``reveal()``, ``serialize()``) a lattice is *flattened*: the clock is the join of the
versions' clocks, the values the union of their values. For every merge of two
single-version lattices (which is all a payload can carry) the flattened result is
exactly the PROTOCOL.md rule: incoming descends -> its values; dominated -> unchanged;
concurrent -> joined clock, unioned values, dependencies merged key-wise; equal clocks
-> unioned values (replacing on equal clocks would not be commutative).

``parse(serialize(x)) == x`` holds for every single-version lattice (everything built
by the constructor or parsed from a payload); a multi-version lattice serializes to
its flattened form, which is what Anna itself stores.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Generic, Self, TypeVar

from anna.proto import anna_pb2
from lattices._proto import decode
from lattices.base import Lattice, LatticeDecodeError, LatticeError
from lattices.maps import MapLattice
from lattices.sets import _freeze
from lattices.vector_clock import ClockOrder, VectorClock

_SingleKeyCausalValue = anna_pb2.SingleKeyCausalValue
_MultiKeyCausalValue = anna_pb2.MultiKeyCausalValue

X = TypeVar("X")

#: The dependencies of a multi-key causal value: key -> the version it depends on.
Dependencies = MapLattice[str, VectorClock]

_EMPTY_DEPS: Dependencies = MapLattice()


def _merge_versions(
    a: dict[VectorClock, X], b: dict[VectorClock, X], join: Callable[[X, X], X]
) -> dict[VectorClock, X]:
    """Maximal versions of ``a ∪ b``; payloads joined where the clocks are equal."""
    if len(a) == 1 and len(b) == 1:
        # The common case (single versions): one comparison decides it.
        (ca, xa), (cb, xb) = next(iter(a.items())), next(iter(b.items()))
        order = ca.compare(cb)
        if order is ClockOrder.DOMINATES:
            return a
        if order is ClockOrder.DOMINATED:
            return b
        if order is ClockOrder.EQUAL:
            return {ca: join(xa, xb)}
        return {ca: xa, cb: xb}
    combined = dict(a)
    for clock, x in b.items():
        mine = combined.get(clock)
        combined[clock] = x if mine is None else join(mine, x)
    clocks = list(combined)
    return {
        c: combined[c] for c in clocks if not any(o is not c and o.dominates(c) for o in clocks)
    }


def _clock_of(vector_clock: VectorClock | Mapping[str, int]) -> VectorClock:
    if isinstance(vector_clock, VectorClock):
        return vector_clock
    return VectorClock(vector_clock)


def _join_clocks(clocks: Iterable[VectorClock]) -> VectorClock:
    out: VectorClock | None = None
    for c in clocks:
        out = c if out is None else out.merge(c)
    return out if out is not None else VectorClock()


def _set_repr(values: frozenset[bytes]) -> str:
    return "{" + ", ".join(repr(v) for v in sorted(values)) + "}" if values else "set()"


def _deps_repr(deps: Dependencies) -> str:
    return "{" + ", ".join(f"{k!r}: {deps[k]!r}" for k in sorted(deps.keys())) + "}"


def _multi_repr(x: tuple[Dependencies, frozenset[bytes]]) -> str:
    return f"(MapLattice({_deps_repr(x[0])}), {_set_repr(x[1])})"


def _pb_clock(clock: Mapping[str, int], what: str) -> VectorClock:
    try:
        return VectorClock(clock)
    except LatticeError as exc:  # pragma: no cover - uint32 on the wire already
        raise LatticeDecodeError(f"{what}: {exc}") from exc


class _CausalBase(Lattice[frozenset[bytes]], Generic[X]):
    """Shared machinery: an immutable antichain ``clock -> payload`` of versions."""

    __slots__ = ("_versions",)
    _versions: dict[VectorClock, X]

    @classmethod
    def _from_versions(cls, versions: dict[VectorClock, X]) -> Self:
        obj = object.__new__(cls)
        object.__setattr__(obj, "_versions", versions)
        return obj

    @staticmethod
    def _join(a: X, b: X) -> X:
        raise NotImplementedError

    @classmethod
    def _one(cls, clock: VectorClock, payload: X) -> Self:
        raise NotImplementedError

    def merge(self, other: Self) -> Self:
        if type(other) is not type(self):
            self._check_type(other)
        merged = _merge_versions(self._versions, other._versions, self._join)
        if merged is self._versions:
            return self
        if merged is other._versions:
            return other
        return self._from_versions(merged)

    @property
    def vector_clock(self) -> VectorClock:
        """The join of the clocks of all versions held."""
        if len(self._versions) == 1:
            return next(iter(self._versions))
        return _join_clocks(self._versions)

    @property
    def versions(self) -> dict[VectorClock, X]:
        """The concurrent versions held (one unless concurrent writes were merged)."""
        return dict(self._versions)

    def _sorted_versions(self, payload_repr: Callable[[X], str]) -> str:
        # Sorted so that equal lattices always print the same (dict/set order varies).
        parts = sorted(
            (sorted(c.items()), f"{c!r}: {payload_repr(x)}") for c, x in self._versions.items()
        )
        return "{" + ", ".join(p for _, p in parts) + "}"

    @classmethod
    def from_versions(cls, versions: Mapping[VectorClock, X]) -> Self:
        """A lattice holding the given concurrent versions (what :attr:`versions` returns).

        Versions dominated by another one are dropped, as a merge would.
        """
        out: Self | None = None
        for clock, x in versions.items():
            if not isinstance(clock, VectorClock):
                raise LatticeError("versions are keyed by VectorClock")
            one = cls._one(clock, x)
            out = one if out is None else out.merge(one)
        if out is None:
            raise LatticeError("a causal lattice holds at least one version")
        return out

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _CausalBase)
        return self._versions == other._versions

    def __hash__(self) -> int:
        return hash((type(self).__name__, frozenset(self._versions.items())))

    def __reduce__(self) -> tuple[Any, ...]:
        return (self._from_versions, (self._versions,))


class SingleKeyCausalLattice(_CausalBase[frozenset[bytes]]):
    """A set of values under a vector clock (Anna ``SINGLE_CAUSAL``).

    >>> a = SingleKeyCausalLattice({"n1": 1}, {b"v1"})
    >>> b = SingleKeyCausalLattice({"n1": 2}, {b"v2"})
    >>> a.merge(b).reveal()            # b descends from a: its values replace
    frozenset({b'v2'})
    >>> c = SingleKeyCausalLattice({"n2": 1}, {b"v3"})
    >>> sorted(b.merge(c).reveal())    # concurrent: union
    [b'v2', b'v3']
    """

    __slots__ = ()
    lattice_type: ClassVar[int] = anna_pb2.SINGLE_CAUSAL

    def __init__(
        self,
        vector_clock: VectorClock | Mapping[str, int] | None = None,
        values: Iterable[bytes] = (),
    ) -> None:
        clock = _clock_of(vector_clock) if vector_clock is not None else VectorClock()
        object.__setattr__(self, "_versions", {clock: _freeze(values)})

    @staticmethod
    def _join(a: frozenset[bytes], b: frozenset[bytes]) -> frozenset[bytes]:
        return a | b

    @classmethod
    def _one(cls, clock: VectorClock, payload: frozenset[bytes]) -> Self:
        return cls(clock, payload)

    @property
    def values(self) -> frozenset[bytes]:
        """The union of the values of all versions held."""
        if len(self._versions) == 1:
            return next(iter(self._versions.values()))
        return frozenset().union(*self._versions.values())

    def reveal(self) -> frozenset[bytes]:
        return self.values

    def serialize(self) -> bytes:
        msg = _SingleKeyCausalValue(
            vector_clock=self.vector_clock.reveal(), values=sorted(self.values)
        )
        out: bytes = msg.SerializeToString(deterministic=True)
        return out

    @classmethod
    def parse(cls, payload: bytes) -> Self:
        msg = decode(_SingleKeyCausalValue, payload, "SingleKeyCausalValue")
        clock = _pb_clock(msg.vector_clock, "SingleKeyCausalValue")
        return cls._from_versions({clock: frozenset(msg.values)})

    def __repr__(self) -> str:
        if len(self._versions) == 1:
            return f"SingleKeyCausalLattice({self.vector_clock!r}, {_set_repr(self.values)})"
        return f"SingleKeyCausalLattice.from_versions({self._sorted_versions(_set_repr)})"


_MultiPayload = tuple[Dependencies, frozenset[bytes]]


class MultiKeyCausalLattice(_CausalBase[_MultiPayload]):
    """Values under a vector clock plus the versions of other keys they depend on
    (Anna ``MULTI_CAUSAL``). Dependencies merge key-wise (point-wise max of clocks).

    >>> a = MultiKeyCausalLattice({"n1": 1}, {"k2": VectorClock({"n1": 1})}, {b"v"})
    >>> a.dependencies["k2"]
    VectorClock({'n1': 1})
    """

    __slots__ = ()
    lattice_type: ClassVar[int] = anna_pb2.MULTI_CAUSAL

    def __init__(
        self,
        vector_clock: VectorClock | Mapping[str, int] | None = None,
        dependencies: Dependencies | Mapping[str, VectorClock | Mapping[str, int]] | None = None,
        values: Iterable[bytes] = (),
    ) -> None:
        clock = _clock_of(vector_clock) if vector_clock is not None else VectorClock()
        deps: Dependencies
        if dependencies is None:
            deps = _EMPTY_DEPS
        elif isinstance(dependencies, MapLattice):
            deps = dependencies
            for key, dep in dependencies.items():
                if not isinstance(key, str) or not isinstance(dep, VectorClock):
                    raise LatticeError("dependencies map str keys to VectorClock")
        else:
            items: dict[str, VectorClock] = {}
            for k, v in dict(dependencies).items():
                if not isinstance(k, str):
                    raise LatticeError(f"dependency keys are str, not {type(k).__name__}")
                items[k] = _clock_of(v)
            deps = MapLattice(items)
        object.__setattr__(self, "_versions", {clock: (deps, _freeze(values))})

    @staticmethod
    def _join(a: _MultiPayload, b: _MultiPayload) -> _MultiPayload:
        return (a[0].merge(b[0]), a[1] | b[1])

    @classmethod
    def _one(cls, clock: VectorClock, payload: _MultiPayload) -> Self:
        deps, values = payload
        return cls(clock, deps, values)

    @property
    def values(self) -> frozenset[bytes]:
        """The union of the values of all versions held."""
        if len(self._versions) == 1:
            return next(iter(self._versions.values()))[1]
        return frozenset().union(*(v for _, v in self._versions.values()))

    @property
    def dependencies(self) -> Dependencies:
        """The key-wise merge of the dependencies of all versions held."""
        out: Dependencies | None = None
        for deps, _ in self._versions.values():
            out = deps if out is None else out.merge(deps)
        return out if out is not None else _EMPTY_DEPS

    def reveal(self) -> frozenset[bytes]:
        return self.values

    def serialize(self) -> bytes:
        msg = _MultiKeyCausalValue(
            vector_clock=self.vector_clock.reveal(), values=sorted(self.values)
        )
        deps = self.dependencies
        for key in sorted(deps.keys()):
            kv = msg.dependencies.add()
            kv.key = key
            kv.vector_clock.update(deps[key].reveal())
        out: bytes = msg.SerializeToString(deterministic=True)
        return out

    @classmethod
    def parse(cls, payload: bytes) -> Self:
        msg = decode(_MultiKeyCausalValue, payload, "MultiKeyCausalValue")
        clock = _pb_clock(msg.vector_clock, "MultiKeyCausalValue")
        items: dict[str, VectorClock] = {}
        for kv in msg.dependencies:
            dep = _pb_clock(kv.vector_clock, "MultiKeyCausalValue dependency")
            seen = items.get(kv.key)
            items[kv.key] = dep if seen is None else seen.merge(dep)
        deps: Dependencies = MapLattice._make(items) if items else _EMPTY_DEPS
        return cls._from_versions({clock: (deps, frozenset(msg.values))})

    def __repr__(self) -> str:
        if len(self._versions) == 1:
            return (
                f"MultiKeyCausalLattice({self.vector_clock!r}, "
                f"{_deps_repr(self.dependencies)}, {_set_repr(self.values)})"
            )
        return f"MultiKeyCausalLattice.from_versions({self._sorted_versions(_multi_repr)})"
