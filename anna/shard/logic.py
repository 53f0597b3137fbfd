"""Storage shard state machine: requests in, actions out (no sockets, clock or disk).

The shell (:mod:`anna.shard.server`) decodes messages, feeds them here and carries out
the returned actions: :class:`Reply` (PUSH a KeyResponse), :class:`Append` (write to
the WAL before any reply of the same batch is sent), :class:`SendInternal` (gossip and
hand-off to other shards).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from anna.membership import METADATA_PREFIX, Placement, merge_membership
from anna.proto import anna_pb2 as pb
from anna.wire import KIND_GOSSIP, single_key_response
from anna.wire import parse_lww_payload as _parse_lww
from lattices import codec
from lattices.base import Lattice, LatticeError
from lattices.lww import LWWPairLattice

log = logging.getLogger(__name__)

GET = pb.GET
PUT = pb.PUT
NONE = pb.NONE
NO_ERROR = pb.NO_ERROR
KEY_DNE = pb.KEY_DNE
WRONG_THREAD = pb.WRONG_THREAD
LATTICE = pb.LATTICE
LWW = pb.LWW

#: Gossip messages carry at most this many payload bytes (several messages otherwise).
GOSSIP_BATCH_BYTES = 4 * 1024 * 1024


Record = tuple[str, int, bytes]


# Actions are NamedTuples: immutable like frozen dataclasses, and several times cheaper
# to build (one per request on the hot path).
class Reply(NamedTuple):
    """PUSH ``response`` to ``address`` (a message, or already serialized bytes)."""

    address: str
    response: pb.KeyResponse | bytes


class Append(NamedTuple):
    """Append these ``(key, lattice_type, payload)`` records (NONE = drop) to the WAL."""

    tuples: list[Record]


class SendInternal(NamedTuple):
    """PUSH an internal two-frame message to another shard's gossip port."""

    address: str
    kind: bytes
    message: pb.Gossip


Action = Reply | Append | SendInternal

#: Types whose payload can be stored as received when the incoming value wins the merge
#: (a single value, no ordering to normalize): saves re-serializing on the next GET.
_KEEP_PAYLOAD = frozenset({pb.LWW, pb.PRIORITY})


class Entry:
    """A stored value: its lattice and, once asked for, its serialized payload."""

    __slots__ = ("lattice_type", "lattice", "payload")

    def __init__(self, lattice_type: Any, lattice: Lattice[Any], payload: bytes | None) -> None:
        self.lattice_type = lattice_type
        self.lattice = lattice
        self.payload = payload

    def get_payload(self) -> bytes:
        if self.payload is None:
            self.payload = self.lattice.serialize()
        return self.payload


@dataclass
class ShardState:
    """Everything one shard knows: its data, the membership, pending gossip and pushes.

    ``node_id``/``index`` identify this shard in the membership; ``placement_args`` are
    passed to :class:`Placement` whenever the membership changes.
    """

    node_id: str
    index: int
    membership: pb.Membership
    virtual_nodes: int = 1024
    default_global: int = 1
    default_local: int = 1
    store: dict[str, Entry] = field(default_factory=dict)
    stats: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.placement = self._placement()
        self.dirty: set[str] = set()  # changed by a client PUT: gossip to other replicas
        self.handoff: set[str] = set()  # stored here but owned elsewhere: send and drop
        self.subscribers: dict[str, set[str]] = {}
        self.changed: set[str] = set()  # subscribed keys changed since the last push
        self.my_gossip = ""
        # key -> (this shard owns it, number of replicas), for the placement it was
        # computed with (reset when the placement object changes).
        self._own: dict[str, tuple[bool, int]] = {}
        self._own_for = self.placement
        for node in self.membership.nodes:
            if node.node_id == self.node_id and self.index < len(node.gossip_addresses):
                self.my_gossip = node.gossip_addresses[self.index]

    def _placement(self) -> Placement:
        return Placement(
            self.membership, self.virtual_nodes, self.default_global, self.default_local
        )

    # ---- ownership -------------------------------------------------------------------

    def owns(self, key: str) -> bool:
        for ref in self.placement.replicas(key):
            if ref.index == self.index and ref.node_id == self.node_id:
                return True
        return False

    def ownership(self, key: str) -> tuple[bool, int]:
        """``(this shard replicates key, how many shards replicate it)`` (cached)."""
        if self._own_for is not self.placement:
            self._own = {}
            self._own_for = self.placement
        own = self._own.get(key)
        if own is None:
            replicas = self.placement.replicas(key)
            mine = False
            for r in replicas:
                if r.index == self.index and r.node_id == self.node_id:
                    mine = True
                    break
            own = (mine, len(replicas))
            if len(self._own) > 200_000:
                self._own.clear()
            self._own[key] = own
        return own

    def departed(self) -> bool:
        return self.node_id not in self.placement.nodes

    # ---- client requests ---------------------------------------------------------------

    def handle_request(self, req: pb.KeyRequest) -> list[Action]:
        """A KeyRequest from a client: the reply (if wanted) and the WAL appends."""
        rtype = req.type
        if rtype == GET:
            self.stats["get"] += 1
            resp = self._get(req)
            actions: list[Action] = []
        elif rtype == PUT:
            self.stats["put"] += 1
            resp, appended = self._put(req)
            actions = [Append(appended)] if appended else []
        else:
            self.stats["bad_request_type"] += 1
            return []
        if req.response_address:
            resp.response_id = req.request_id
            actions.append(Reply(req.response_address, resp))
        return actions

    def handle_single(
        self,
        rtype: int,
        key: str,
        lattice_type: int,
        payload: bytes,
        cache_size: int,
        address: str,
        request_id: str,
    ) -> list[Action]:
        """A one-tuple KeyRequest, already decoded (the hot path): the same answer as
        :meth:`handle_request`, with the reply already serialized."""
        if rtype == GET:
            self.stats["get"] += 1
            owned, nrep = self.ownership(key)
            lt = 0
            value = b""
            invalidate = False
            if not owned:
                error = WRONG_THREAD
            else:
                invalidate = bool(cache_size) and cache_size != nrep
                entry = self.store.get(key)
                if entry is None:
                    error = KEY_DNE
                else:
                    error = NO_ERROR
                    lt = entry.lattice_type
                    value = entry.get_payload()
            if not address:
                return []
            return [
                Reply(
                    address,
                    b"".join(
                        single_key_response(GET, key, lt, error, value, invalidate, request_id)
                    ),
                )
            ]
        if rtype == PUT:
            self.stats["put"] += 1
            owned, nrep = self.ownership(key)
            invalidate = False
            actions: list[Action] = []
            if not owned:
                error = WRONG_THREAD
            else:
                invalidate = bool(cache_size) and cache_size != nrep
                if key.startswith(METADATA_PREFIX) or not self._merge(key, lattice_type, payload):
                    error = LATTICE
                    self.stats["put_lattice_error"] += 1
                else:
                    error = NO_ERROR
                    actions.append(Append([(key, lattice_type, payload)]))
                    if nrep > 1:
                        self.dirty.add(key)
            if address:
                actions.append(
                    Reply(
                        address,
                        b"".join(
                            single_key_response(
                                PUT, key, lattice_type, error, b"", invalidate, request_id
                            )
                        ),
                    )
                )
            return actions
        self.stats["bad_request_type"] += 1
        return []

    def _get(self, req: pb.KeyRequest) -> pb.KeyResponse:
        resp = pb.KeyResponse(type=GET)
        out = resp.tuples
        store = self.store
        for t in req.tuples:
            key = t.key
            rt = out.add(key=key)
            replicas = self.placement.replicas(key)
            if not any(r.index == self.index and r.node_id == self.node_id for r in replicas):
                rt.error = WRONG_THREAD
                continue
            if t.address_cache_size and t.address_cache_size != len(replicas):
                rt.invalidate = True
            entry = store.get(key)
            if entry is None:
                rt.error = KEY_DNE
            else:
                rt.lattice_type = entry.lattice_type
                rt.payload = entry.get_payload()
        return resp

    def _put(self, req: pb.KeyRequest) -> tuple[pb.KeyResponse, list[Record]]:
        resp = pb.KeyResponse(type=PUT)
        out = resp.tuples
        appended: list[Record] = []
        for t in req.tuples:
            key = t.key
            lt = t.lattice_type
            rt = out.add(key=key, lattice_type=lt)
            replicas = self.placement.replicas(key)
            if not any(r.index == self.index and r.node_id == self.node_id for r in replicas):
                rt.error = WRONG_THREAD
                continue
            if t.address_cache_size and t.address_cache_size != len(replicas):
                rt.invalidate = True
            payload = t.payload
            if key.startswith(METADATA_PREFIX) or not self._merge(key, lt, payload):
                rt.error = LATTICE
                self.stats["put_lattice_error"] += 1
                continue
            appended.append((key, lt, payload))
            if len(replicas) > 1:
                self.dirty.add(key)  # other replicas hear of it at the next gossip
        return resp, appended

    def _merge(self, key: str, lattice_type: int, payload: bytes) -> bool:
        """Merge a payload into the store; False (nothing stored) if it is not valid."""
        if lattice_type == NONE:
            return False
        entry = self.store.get(key)
        if entry is not None and entry.lattice_type != lattice_type:
            return False
        try:
            # LWW in canonical form (what clients send) is decoded by hand; anything
            # else goes through the codec (protobuf semantics).
            lww = _parse_lww(payload) if lattice_type == LWW else None
            if lww is not None:
                incoming: Lattice[Any] = LWWPairLattice(lww[0], lww[1])
            else:
                incoming = codec.from_payload(lattice_type, payload)
        except (LatticeError, ValueError, TypeError):
            return False
        keep = payload if lattice_type in _KEEP_PAYLOAD else None
        if entry is None:
            self.store[key] = Entry(lattice_type, incoming, keep)
        else:
            try:
                merged = entry.lattice.merge(incoming)
            except (LatticeError, ValueError, TypeError):
                return False
            if merged is not entry.lattice:
                entry.lattice = merged
                entry.payload = keep if merged is incoming else None
        if key in self.subscribers:
            self.changed.add(key)
        return True

    # ---- replication ---------------------------------------------------------------------

    def handle_gossip(self, msg: pb.Gossip) -> list[Action]:
        """Lattices from another replica (or a hand-off): merge and log them."""
        self.stats["gossip_in"] += 1
        appended: list[Record] = []
        for t in msg.tuples:
            key = t.key
            if key.startswith(METADATA_PREFIX):
                continue
            lt, payload = t.lattice_type, t.payload
            if self._merge(key, lt, payload):
                appended.append((key, lt, payload))
                if not self.owns(key):
                    self.handoff.add(key)
            else:
                self.stats["gossip_rejected"] += 1
        return [Append(appended)] if appended else []

    def gossip_tick(self) -> list[Action]:
        """Send changed keys to the other replicas, and keys owned elsewhere away."""
        per_addr: dict[str, list[pb.KeyTuple]] = {}
        for key in self.dirty:
            entry = self.store.get(key)
            if entry is None:
                continue
            for ref in self.placement.replicas(key):
                if ref.index == self.index and ref.node_id == self.node_id:
                    continue
                per_addr.setdefault(ref.gossip_address, []).append(
                    pb.KeyTuple(
                        key=key, lattice_type=entry.lattice_type, payload=entry.get_payload()
                    )
                )
        self.dirty.clear()
        drops: list[Record] = []
        for key in self.handoff:
            entry = self.store.get(key)
            if entry is None:
                continue
            replicas = self.placement.replicas(key)
            if not replicas:
                continue  # nowhere to send it: keep it
            for ref in replicas:
                if ref.index == self.index and ref.node_id == self.node_id:
                    continue
                per_addr.setdefault(ref.gossip_address, []).append(
                    pb.KeyTuple(
                        key=key, lattice_type=entry.lattice_type, payload=entry.get_payload()
                    )
                )
            if not self.owns(key):
                del self.store[key]
                drops.append((key, NONE, b""))
                self.stats["handed_off"] += 1
        self.handoff.clear()
        actions: list[Action] = []
        if drops:
            actions.append(Append(drops))
        for addr, tuples in per_addr.items():
            for batch in _batches(tuples):
                actions.append(
                    SendInternal(addr, KIND_GOSSIP, pb.Gossip(tuples=batch, sender=self.my_gossip))
                )
        self.stats["gossip_out"] += len(per_addr)
        return actions

    def handle_membership(self, msg: pb.Membership) -> list[Action]:
        """A membership table from routing: if it changed, re-place every stored key."""
        if not merge_membership(self.membership, msg):
            return []
        old = self.placement
        self.placement = self._placement()
        for node in self.membership.nodes:
            if node.node_id == self.node_id and self.index < len(node.gossip_addresses):
                self.my_gossip = node.gossip_addresses[self.index]
        moved = 0
        for key in self.store:
            before = old.replicas(key)
            after = self.placement.replicas(key)
            if before != after:
                # New replicas need the value; if we no longer own it, it leaves.
                self.handoff.add(key)
                moved += 1
        log.info(
            "shard %s/%d: membership now %d live node(s); %d key(s) to re-place",
            self.node_id,
            self.index,
            len(self.placement.live),
            moved,
        )
        return []

    # ---- cache push ----------------------------------------------------------------------

    def handle_subscription(self, msg: pb.CacheSubscription) -> None:
        """A cache (un)subscribes to keys; a new subscriber gets the current value first."""
        addr = msg.cache_address
        if not addr:
            self.stats["bad_subscription"] += 1
            return
        for key in msg.keys:
            if msg.unsubscribe:
                subs = self.subscribers.get(key)
                if subs:
                    subs.discard(addr)
                    if not subs:
                        del self.subscribers[key]
            else:
                self.subscribers.setdefault(key, set()).add(addr)
                if key in self.store:
                    self.changed.add(key)

    def push_tick(self) -> list[Action]:
        """KeyResponses (type PUT, full merged payload) for changed subscribed keys."""
        if not self.changed:
            return []
        per_addr: dict[str, pb.KeyResponse] = {}
        for key in self.changed:
            entry = self.store.get(key)
            subs = self.subscribers.get(key)
            if entry is None or not subs:
                continue
            payload = entry.get_payload()
            for addr in subs:
                resp = per_addr.get(addr)
                if resp is None:
                    resp = per_addr[addr] = pb.KeyResponse(type=PUT)
                resp.tuples.add(key=key, lattice_type=entry.lattice_type, payload=payload)
        self.changed.clear()
        return [Reply(addr, resp) for addr, resp in per_addr.items()]

    # ---- durability ------------------------------------------------------------------------

    def replay(self, tuples: Iterable[pb.KeyTuple]) -> int:
        """Rebuild state from snapshot + WAL records; returns how many were applied."""
        n = 0
        for t in tuples:
            if t.lattice_type == NONE:
                self.store.pop(t.key, None)
            elif self._merge(t.key, t.lattice_type, t.payload):
                n += 1
            else:
                self.stats["replay_rejected"] += 1
        for key in self.store:
            if not self.owns(key):
                self.handoff.add(key)
        return n

    def snapshot(self) -> Iterator[pb.KeyTuple]:
        """The whole state as tuples (written to a snapshot file)."""
        for key, entry in self.store.items():
            yield pb.KeyTuple(key=key, lattice_type=entry.lattice_type, payload=entry.get_payload())


def _batches(tuples: list[pb.KeyTuple]) -> Iterator[list[pb.KeyTuple]]:
    batch: list[pb.KeyTuple] = []
    size = 0
    for t in tuples:
        batch.append(t)
        size += len(t.payload) + len(t.key)
        if size >= GOSSIP_BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch
