"""Consistent hashing: a global ring over storage nodes, a local ring over shards.

The hash is blake2b (8 bytes), stable across processes and runs, unlike Python's
randomized ``hash()``. Every node (and every shard inside a node) owns
``virtual_nodes`` points on its ring; a key belongs to the first point clockwise from
its hash. The local ring hashes the key with a different salt so that the keys a node
owns (a few arcs of the global ring) still spread evenly over its shards.

Example::

    ring = HashRing(["n1", "n2"], virtual_nodes=128)
    ring.lookup("k", 1)          # ['n2']
"""

from __future__ import annotations

import bisect
from collections.abc import Hashable, Iterable, Sequence
from hashlib import blake2b
from typing import Generic, TypeVar

N = TypeVar("N", bound=Hashable)

GLOBAL_SALT = b"g"
LOCAL_SALT = b"l"


def stable_hash(data: bytes, salt: bytes = GLOBAL_SALT) -> int:
    """A 64-bit hash that is the same in every process and every run."""
    return int.from_bytes(blake2b(data, digest_size=8, salt=salt).digest(), "big")


class HashRing(Generic[N]):
    """An immutable consistent-hash ring over ``members`` with virtual nodes."""

    def __init__(
        self,
        members: Iterable[N],
        virtual_nodes: int = 1024,
        salt: bytes = GLOBAL_SALT,
        name: dict[N, str] | None = None,
    ) -> None:
        self.salt = salt
        self.members: tuple[N, ...] = tuple(members)
        points: list[tuple[int, int]] = []
        for idx, member in enumerate(self.members):
            label = (name[member] if name else str(member)).encode()
            for v in range(max(1, virtual_nodes)):
                points.append((stable_hash(label + b"#" + str(v).encode(), salt), idx))
        points.sort()
        self._hashes = [p[0] for p in points]
        self._owners = [p[1] for p in points]

    def __len__(self) -> int:
        return len(self.members)

    def lookup(self, key: str, count: int = 1) -> list[N]:
        """The first ``count`` distinct members clockwise from ``key``'s hash."""
        if not self.members:
            return []
        count = min(count, len(self.members))
        h = stable_hash(key.encode(), self.salt)
        return self.lookup_hash(h, count)

    def lookup_hash(self, h: int, count: int) -> list[N]:
        n = len(self._hashes)
        i = bisect.bisect_right(self._hashes, h)
        out: list[N] = []
        seen: set[int] = set()
        for step in range(n):
            owner = self._owners[(i + step) % n]
            if owner not in seen:
                seen.add(owner)
                out.append(self.members[owner])
                if len(out) == count:
                    break
        return out


def balance(counts: Sequence[int]) -> float:
    """max/mean of per-member key counts (1.0 is perfect balance)."""
    mean = sum(counts) / len(counts)
    return max(counts) / mean if mean else 1.0
