"""Key-wise merge of inner lattices: :class:`MapLattice`."""

from __future__ import annotations

from collections.abc import ItemsView, Iterable, Iterator, KeysView, Mapping
from typing import Any, Generic, Self, TypeVar

from lattices.base import Lattice, LatticeError

K = TypeVar("K")
V = TypeVar("V", bound=Lattice[Any])


class MapLattice(Lattice[dict[K, V]], Generic[K, V]):
    """A map from keys to lattices; merge takes the union of keys and merges the inner
    lattices of shared keys. Has no Anna payload of its own.

    >>> from lattices.scalars import MaxLattice
    >>> a = MapLattice({"x": MaxLattice(1)}); b = MapLattice({"x": MaxLattice(3), "y": MaxLattice(2)})
    >>> a.merge(b)["x"].reveal()
    3
    """

    __slots__ = ("_items",)
    _items: dict[K, V]

    def __init__(self, items: Mapping[K, V] | Iterable[tuple[K, V]] = ()) -> None:
        d: dict[K, V] = dict(items)
        for k, v in d.items():
            if not isinstance(v, Lattice):
                raise LatticeError(
                    f"MapLattice values must be lattices; key {k!r} has {type(v).__name__}"
                )
        object.__setattr__(self, "_items", d)

    @classmethod
    def _make(cls, items: dict[K, V]) -> Self:
        obj = object.__new__(cls)
        object.__setattr__(obj, "_items", items)
        return obj

    def merge(self, other: Self) -> Self:
        if type(other) is not type(self):
            self._check_type(other)
        if not other._items:
            return self
        if not self._items:
            return other
        out = dict(self._items)
        changed = False
        for k, v in other._items.items():
            mine = out.get(k)
            if mine is None:
                out[k] = v
                changed = True
            else:
                merged = mine.merge(v)
                if merged is not mine and merged != mine:
                    out[k] = merged
                    changed = True
        return self._make(out) if changed else self

    def reveal(self) -> dict[K, V]:
        """A fresh ``dict`` of the inner lattices."""
        return dict(self._items)

    def get(self, key: K, default: V | None = None) -> V | None:
        return self._items.get(key, default)

    def keys(self) -> KeysView[K]:
        return self._items.keys()

    def items(self) -> ItemsView[K, V]:
        return self._items.items()

    def __getitem__(self, key: K) -> V:
        return self._items[key]

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[K]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, MapLattice)
        return self._items == other._items

    def __hash__(self) -> int:
        return hash((MapLattice, frozenset(self._items.items())))

    def __repr__(self) -> str:
        # Sorted so equal maps print the same whatever their insertion order.
        try:
            keys = sorted(self._items)  # type: ignore[type-var]
        except TypeError:
            keys = sorted(self._items, key=repr)
        return "MapLattice({" + ", ".join(f"{k!r}: {self._items[k]!r}" for k in keys) + "})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self._items,))
