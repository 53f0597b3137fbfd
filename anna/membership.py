"""The membership table (a CRDT) and key placement derived from it.

A :class:`Membership` message lists every storage node ever seen with an ``epoch``
(incarnation) and a ``departed`` tombstone. Merging two tables keeps, per node, the
entry with the larger epoch, and on equal epochs the departed one; so every routing
and shard converges to the same table whatever order updates arrive in, and a node
that restarts rejoins with a larger epoch.

:class:`Placement` turns the live nodes into rings and answers "which shards replicate
this key" (global ring over nodes, local ring over the shards of each node).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from anna.hashring import GLOBAL_SALT, LOCAL_SALT, HashRing, stable_hash
from anna.proto import anna_pb2 as pb

#: Keys with this prefix are reserved for the system.
METADATA_PREFIX = "ANNA_METADATA|"


@dataclass(frozen=True)
class ShardRef:
    """One storage shard: its node, index and addresses."""

    node_id: str
    index: int
    address: str  # request PULL, tcp://ip:port
    gossip_address: str


def node_id_for(ip: str, shard_base_port: int) -> str:
    return f"{ip}:{shard_base_port}"


def make_node(
    ip: str,
    shard_base_port: int,
    gossip_base_port: int,
    shards: int,
    epoch: int,
    routing_address: str = "",
) -> pb.StorageNode:
    """The membership entry of a node whose shards listen on the configured ports."""
    node = pb.StorageNode(
        node_id=node_id_for(ip, shard_base_port), epoch=epoch, routing_address=routing_address
    )
    node.shard_addresses.extend(f"tcp://{ip}:{shard_base_port + t}" for t in range(shards))
    node.gossip_addresses.extend(f"tcp://{ip}:{gossip_base_port + t}" for t in range(shards))
    return node


def merge_membership(into: pb.Membership, other: pb.Membership) -> bool:
    """Merge ``other`` into ``into`` (in place); True if ``into`` changed."""
    changed = False
    by_id = {n.node_id: n for n in into.nodes}
    for node in other.nodes:
        mine = by_id.get(node.node_id)
        if mine is None:
            new = into.nodes.add()
            new.CopyFrom(node)
            by_id[node.node_id] = new
            changed = True
        elif (node.epoch, node.departed) > (mine.epoch, mine.departed):
            mine.CopyFrom(node)
            changed = True
    reps = {r.key: r for r in into.replication}
    for rep in other.replication:
        mine_r = reps.get(rep.key)
        if mine_r is None:
            new_r = into.replication.add()
            new_r.CopyFrom(rep)
            reps[rep.key] = new_r
            changed = True
        elif (rep.timestamp, rep.global_replication, rep.local_replication) > (
            mine_r.timestamp,
            mine_r.global_replication,
            mine_r.local_replication,
        ):
            mine_r.CopyFrom(rep)
            changed = True
    have = set(into.routing_addresses)
    for addr in other.routing_addresses:
        if addr not in have:
            into.routing_addresses.append(addr)
            have.add(addr)
            changed = True
    return changed


def digest(membership: pb.Membership) -> bytes:
    """A short fingerprint of the table's content (order independent)."""
    h = hashlib.blake2b(digest_size=8)
    for node in sorted(membership.nodes, key=lambda n: n.node_id):
        h.update(node.SerializeToString(deterministic=True))
    for rep in sorted(membership.replication, key=lambda r: r.key):
        h.update(rep.SerializeToString(deterministic=True))
    for addr in sorted(membership.routing_addresses):
        h.update(addr.encode())
    return h.digest()


class Placement:
    """Replica placement for one membership table (immutable; rebuild on change)."""

    def __init__(
        self,
        membership: pb.Membership,
        virtual_nodes: int = 1024,
        default_global: int = 1,
        default_local: int = 1,
    ) -> None:
        self.live = sorted(
            (n for n in membership.nodes if not n.departed and n.shard_addresses),
            key=lambda n: n.node_id,
        )
        self.nodes = {n.node_id: n for n in self.live}
        self.default_global = max(1, default_global)
        self.default_local = max(1, default_local)
        self.overrides = {
            r.key: (max(1, r.global_replication), max(1, r.local_replication))
            for r in membership.replication
        }
        self.global_ring: HashRing[str] = HashRing(
            [n.node_id for n in self.live], virtual_nodes, GLOBAL_SALT
        )
        self.local_rings: dict[str, HashRing[int]] = {}
        for n in self.live:
            names = {t: f"{n.node_id}#{t}" for t in range(len(n.shard_addresses))}
            self.local_rings[n.node_id] = HashRing(
                range(len(n.shard_addresses)), virtual_nodes, LOCAL_SALT, names
            )
        self._cache: dict[str, tuple[ShardRef, ...]] = {}

    def factors(self, key: str) -> tuple[int, int]:
        return self.overrides.get(key, (self.default_global, self.default_local))

    def replicas(self, key: str) -> tuple[ShardRef, ...]:
        """Every shard replicating ``key`` (empty if no node is live)."""
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        g, loc = self.factors(key)
        raw = key.encode()
        out: list[ShardRef] = []
        if self.live:
            for node_id in self.global_ring.lookup_hash(stable_hash(raw, GLOBAL_SALT), g):
                node = self.nodes[node_id]
                ring = self.local_rings[node_id]
                for t in ring.lookup_hash(stable_hash(raw, LOCAL_SALT), loc):
                    out.append(
                        ShardRef(node_id, t, node.shard_addresses[t], node.gossip_addresses[t])
                    )
        result = tuple(out)
        if len(self._cache) > 200_000:
            self._cache.clear()
        self._cache[key] = result
        return result

    def shard_refs(self) -> list[ShardRef]:
        """Every live shard."""
        return [
            ShardRef(n.node_id, t, n.shard_addresses[t], n.gossip_addresses[t])
            for n in self.live
            for t in range(len(n.shard_addresses))
        ]
