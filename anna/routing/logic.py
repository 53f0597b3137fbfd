"""Routing state machine: membership, failure detection and key placement.

No sockets, no clock: the shell passes ``now`` (monotonic seconds) and ``wall_ns``
(for new epochs) in, and carries out the returned :class:`Send` actions.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from anna import wire
from anna.membership import Placement, digest, merge_membership
from anna.proto import anna_pb2 as pb

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Send:
    """PUSH ``frames`` (one frame: an Anna message; two: an internal one) to ``address``."""

    address: str
    frames: list[bytes]


@dataclass
class RoutingState:
    """What one routing node knows.

    ``own_node`` is the storage node started beside this routing (None for a routing
    with no storage of its own); ``own_address`` is this routing's PULL address.
    """

    own_address: str
    own_node: pb.StorageNode | None
    failure_timeout_s: float = 3.0
    virtual_nodes: int = 1024
    default_global: int = 1
    default_local: int = 1
    seeds: list[str] = field(default_factory=list)
    stats: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.membership = pb.Membership(routing_addresses=[self.own_address])
        if self.own_node is not None:
            self.membership.nodes.append(self.own_node)
        self.last_seen: dict[str, float] = {}
        self.leaving = False
        self._rebuild()

    def _rebuild(self) -> None:
        self.placement = Placement(
            self.membership, self.virtual_nodes, self.default_global, self.default_local
        )
        self.digest = digest(self.membership)

    # ---- clients --------------------------------------------------------------------

    def handle_address_request(self, req: pb.KeyAddressRequest) -> list[Send]:
        """Answer with every replica address of every key (or NO_SERVERS)."""
        self.stats["address_requests"] += 1
        if not req.response_address:
            return []
        resp = pb.KeyAddressResponse(response_id=req.request_id)
        placement = self.placement
        if not placement.live:
            resp.error = pb.NO_SERVERS
        else:
            for key in req.keys:
                addr = resp.addresses.add(key=key)
                addr.ips.extend([r.address for r in placement.replicas(key)])
        return [Send(req.response_address, [resp.SerializeToString()])]

    # ---- membership -----------------------------------------------------------------

    def targets(self) -> tuple[list[str], list[str]]:
        """(other routings, every live shard's gossip address) to tell about changes."""
        routings = {n.routing_address for n in self.placement.live if n.routing_address}
        routings.update(self.membership.routing_addresses)
        routings.update(self.seeds)
        routings.discard(self.own_address)
        routings.discard("")
        shards = [r.gossip_address for r in self.placement.shard_refs()]
        # A departed node's shards still need to hear that they departed (hand-off).
        for n in self.membership.nodes:
            if n.departed:
                shards.extend(n.gossip_addresses)
        return sorted(routings), shards

    def broadcast(self) -> list[Send]:
        body = self.membership.SerializeToString()
        routings, shards = self.targets()
        out = [Send(a, [wire.KIND_JOIN, body]) for a in routings]
        out += [Send(a, [wire.KIND_MEMBERSHIP, body]) for a in shards]
        return out

    def _changed(self, now: float, why: str) -> list[Send]:
        before = set(self.placement.nodes)
        self._rebuild()
        for n in self.placement.live:
            if n.node_id not in before:
                # Live again (rejoined after a partition or a restart): its failure
                # clock starts now, not at the heartbeat seen before it was lost, or
                # the next tick declares it dead again and membership flaps for ever.
                self.last_seen[n.node_id] = now
            else:
                self.last_seen.setdefault(n.node_id, now)
        log.info(
            "membership changed (%s): live nodes %s", why, [n.node_id for n in self.placement.live]
        )
        self.stats["membership_changes"] += 1
        return self.broadcast()

    def handle_peer_membership(self, msg: pb.Membership, now: float) -> list[Send]:
        """A table from another routing (join, anti-entropy) or a replication change."""
        if merge_membership(self.membership, msg):
            if self._own_node_wrongly_departed(now):
                # The peer's table (from the far side of a healed partition) says our
                # node died, but we heard it within the failure timeout: rejoin now
                # instead of serving NO_SERVERS until its next heartbeat.
                self._rejoin_own(0)
                return self._changed(now, "peer update; own node alive, rejoined")
            return self._changed(now, "peer update")
        if digest(msg) != self.digest:
            # The peer is missing something we have: answer it directly.
            body = self.membership.SerializeToString()
            routings = {a for a in msg.routing_addresses if a and a != self.own_address}
            routings |= {
                n.routing_address for n in msg.nodes if n.routing_address and not n.departed
            }
            routings.discard(self.own_address)
            return [Send(a, [wire.KIND_JOIN, body]) for a in sorted(routings)]
        return []

    def handle_heartbeat(self, hb: pb.Heartbeat, now: float, wall_ns: int) -> list[Send]:
        self.stats["heartbeats"] += 1
        node = self.placement.nodes.get(hb.node_id)
        out: list[Send] = []
        if node is not None:
            self.last_seen[hb.node_id] = now
        elif self.own_node is not None and hb.node_id == self.own_node.node_id and not self.leaving:
            # Our own node was declared dead (or departed) but is alive: rejoin with
            # a new incarnation.
            self._rejoin_own(wall_ns)
            self.last_seen[hb.node_id] = now
            return self._changed(now, f"own node {hb.node_id} rejoined")
        if hb.membership_digest != self.digest and hb.gossip_address:
            out.append(
                Send(hb.gossip_address, [wire.KIND_MEMBERSHIP, self.membership.SerializeToString()])
            )
        return out

    def _own_node_wrongly_departed(self, now: float) -> bool:
        own = self.own_node
        if own is None or self.leaving:
            return False
        entry = next((n for n in self.membership.nodes if n.node_id == own.node_id), None)
        if entry is None or not entry.departed:
            return False
        seen = self.last_seen.get(own.node_id)
        return seen is not None and now - seen <= self.failure_timeout_s

    def _rejoin_own(self, epoch_floor: int) -> None:
        assert self.own_node is not None
        current = next(n for n in self.membership.nodes if n.node_id == self.own_node.node_id)
        new = pb.StorageNode()
        new.CopyFrom(self.own_node)
        new.epoch = max(epoch_floor, current.epoch + 1)
        new.departed = False
        merge_membership(self.membership, pb.Membership(nodes=[new]))

    def handle_depart(self, msg: pb.Depart, now: float) -> list[Send]:
        """A node leaves: tombstone it; its shards hand their keys off when told."""
        for n in self.membership.nodes:
            if n.node_id == msg.node_id and not n.departed:
                if self.own_node is not None and n.node_id == self.own_node.node_id:
                    self.leaving = True
                n.departed = True
                return self._changed(now, f"node {msg.node_id} departed")
        return []

    def tick(self, now: float) -> list[Send]:
        """Failure detection plus anti-entropy with the other routings."""
        dead = [
            n.node_id
            for n in self.placement.live
            if now - self.last_seen.setdefault(n.node_id, now) > self.failure_timeout_s
        ]
        if dead:
            for n in self.membership.nodes:
                if n.node_id in dead:
                    n.departed = True
            self.stats["failures_detected"] += len(dead)
            return self._changed(now, f"no heartbeat from {dead}")
        body = self.membership.SerializeToString()
        routings, _ = self.targets()
        return [Send(a, [wire.KIND_JOIN, body]) for a in routings]

    def start(self, now: float) -> list[Send]:
        """At startup: announce ourselves to the seeds (and our own shards)."""
        return self._changed(now, "startup")
