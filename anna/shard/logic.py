"""Storage shard state machine: requests in, actions out (no sockets, clock or disk).

The shell (:mod:`anna.shard.server`) decodes messages, feeds them here and carries out
the returned actions: :class:`Reply` (PUSH a KeyResponse), :class:`Append` (write to
the WAL before any reply of the same batch is sent), :class:`SendInternal` (gossip,
anti-entropy and hand-off to other shards).

Replica-to-replica merges (gossip, anti-entropy, hand-off, WAL replay) resolve a
lattice *type* conflict deterministically: the larger ``LatticeType`` number wins (the
stored value is replaced by the incoming one if that decodes; an incoming smaller type
is ignored). Per key, the state is then the join of every accepted value under the
order (type, lattice order), so replicas converge whatever the arrival order. A client
PUT of a type different from the stored one still answers LATTICE.

Anti-entropy: for each peer shard, a digest of ``AE_BUCKETS`` XORs of
``hash(key, type, payload)`` over the keys both replicate, maintained incrementally
(keys changed since the last refresh are re-hashed lazily, a bounded number per tick,
never on the request path). See :meth:`ShardState.anti_entropy_tick`.
"""

from __future__ import annotations

import hashlib
import logging
import struct
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from anna.membership import METADATA_PREFIX, Placement, merge_membership
from anna.proto import anna_pb2 as pb
from anna.wire import KIND_ANTI_ENTROPY, KIND_GOSSIP, single_key_response
from anna.wire import parse_lww_payload as _parse_lww
from lattices import codec
from lattices.base import Lattice, LatticeError
from lattices.lww import LWWPairLattice

log = logging.getLogger(__name__)

GET = pb.GET
PUT = pb.PUT
DELETE = pb.DELETE
TOMBSTONE = pb.TOMBSTONE
NONE = pb.NONE
NO_ERROR = pb.NO_ERROR
KEY_DNE = pb.KEY_DNE
WRONG_THREAD = pb.WRONG_THREAD
LATTICE = pb.LATTICE
VALUE_TOO_LARGE = pb.VALUE_TOO_LARGE
#: kvs.max_value_bytes's default: the largest PUT payload a shard accepts.
MAX_VALUE_BYTES = 1536 * 1024 * 1024
LWW = pb.LWW

#: Gossip messages carry at most this many payload bytes (several messages otherwise).
GOSSIP_BATCH_BYTES = 4 * 1024 * 1024

#: Anti-entropy digest: this many buckets (8 bytes each) per peer.
AE_BUCKETS = 1024
#: At most this many (key, hash) pairs in one step-2 answer (more buckets next period).
AE_MAX_KEYS = 20_000
#: Lazy re-hash budget per call (each gossip and anti-entropy tick): at most this many
#: keys and payload bytes (~12 ms for 2000 small keys here; 100k keys: ~25 s of ticks).
AE_REHASH_KEYS = 2_000
AE_REHASH_BYTES = 4 * 1024 * 1024
_AE_DIGEST = struct.Struct(f"<{AE_BUCKETS}Q")
#: LWW payloads larger than this are hashed by their length, first and last AE_SAMPLE
#: bytes (the timestamp is in the first bytes).
AE_SAMPLE = 1 << 20
AE_SAMPLE_ABOVE = 4 << 20


Record = tuple[str, int, bytes]


# Actions are NamedTuples: immutable like frozen dataclasses, and several times cheaper
# to build (one per request on the hot path).
class Reply(NamedTuple):
    """PUSH ``response`` to ``address`` (a message, or already serialized bytes)."""

    address: str
    response: pb.KeyResponse | bytes


class ReplyParts(NamedTuple):
    """PUSH the concatenation of ``parts`` to ``address`` (an answer carrying a large
    value: the shell builds it off its loop)."""

    address: str
    parts: list[bytes]


class Append(NamedTuple):
    """Append these ``(key, lattice_type, payload)`` records (NONE = drop) to the WAL."""

    tuples: list[Record]


class SendInternal(NamedTuple):
    """PUSH an internal two-frame message to another shard's gossip port."""

    address: str
    kind: bytes
    message: pb.Gossip | pb.AntiEntropy


Action = Reply | ReplyParts | Append | SendInternal

#: GET answers carrying at least this many payload bytes are ReplyParts.
BIG_REPLY = 4 * 1024 * 1024

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


class Tomb(Entry):
    """A deleted key: ``lattice_type`` TOMBSTONE, ``payload`` the serialized
    ``Tombstone``, ``lattice`` the deleted value ("floor", of type ``floor_type``; for
    LWW only its timestamp). An incoming value the floor already covers stays deleted.
    """

    __slots__ = ("floor_type", "deleted_at_ms")

    def __init__(self, floor_type: int, floor: Lattice[Any], deleted_at_ms: int) -> None:
        payload = pb.Tombstone(
            deleted_at_ms=deleted_at_ms, lattice_type=floor_type, payload=floor.serialize()
        ).SerializeToString()
        super().__init__(TOMBSTONE, floor, payload)
        self.floor_type = floor_type
        self.deleted_at_ms = deleted_at_ms

    @staticmethod
    def parse(payload: bytes) -> Tomb | None:
        """The tombstone of a serialized ``Tombstone``; None if malformed."""
        try:
            msg = pb.Tombstone.FromString(payload)
            floor = codec.from_payload(msg.lattice_type, msg.payload)
        except Exception:
            return None
        if msg.lattice_type == LWW:
            assert isinstance(floor, LWWPairLattice)
            floor = LWWPairLattice(floor.timestamp, b"")
        return Tomb(msg.lattice_type, floor, msg.deleted_at_ms)

    def covers(self, lattice_type: int, value: Lattice[Any]) -> bool:
        """Whether ``value`` is no newer than what the delete removed."""
        if lattice_type != self.floor_type:
            return False
        floor = self.lattice
        if lattice_type == LWW:
            assert isinstance(value, LWWPairLattice) and isinstance(floor, LWWPairLattice)
            return value.timestamp <= floor.timestamp
        try:
            merged = floor.merge(value)
        except (LatticeError, ValueError, TypeError):
            return False
        return merged is floor or merged.serialize() == floor.serialize()

    def join(self, other: Tomb) -> Tomb:
        """Both deletes (deterministic: replicas converge whatever the order)."""
        at = max(self.deleted_at_ms, other.deleted_at_ms)
        if self.floor_type != other.floor_type:
            win = self if self.floor_type > other.floor_type else other
            return Tomb(win.floor_type, win.lattice, at)
        if self.floor_type == LWW:
            a, b = self.lattice, other.lattice
            assert isinstance(a, LWWPairLattice) and isinstance(b, LWWPairLattice)
            return Tomb(LWW, LWWPairLattice(max(a.timestamp, b.timestamp), b""), at)
        try:
            floor = self.lattice.merge(other.lattice)
        except (LatticeError, ValueError, TypeError):
            floor = self.lattice if self.payload >= other.get_payload() else other.lattice
        return Tomb(self.floor_type, floor, at)


def tomb_for(entry: Entry | None, timestamp: int, now_ms: int) -> Tomb:
    """The tombstone a DELETE (LWW clock ``timestamp``) leaves over ``entry``: it
    removes what the shard holds (LWW: every write up to the later of the two
    timestamps)."""
    if entry is None:
        return Tomb(LWW, LWWPairLattice(timestamp, b""), now_ms)
    if type(entry) is Tomb:
        return entry.join(Tomb(LWW, LWWPairLattice(timestamp, b""), now_ms))
    lattice = entry.lattice
    if entry.lattice_type == LWW:
        assert isinstance(lattice, LWWPairLattice)
        return Tomb(LWW, LWWPairLattice(max(timestamp, lattice.timestamp), b""), now_ms)
    return Tomb(entry.lattice_type, lattice, now_ms)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


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
    #: client GETs and PUTs per key in the current window, and the most accessed keys
    #: of the last one (``roll_accesses``; the autoscaler's hot keys)
    accesses: Counter[str] = field(default_factory=Counter)
    hot_keys: dict[str, int] = field(default_factory=dict)
    anti_entropy: bool = True  # keep the anti-entropy digests (the shell: period > 0)
    tombstone_ttl_ms: int = 3_600_000  # a tombstone is dropped this long after its delete
    max_value_bytes: int = MAX_VALUE_BYTES  # a larger PUT payload: VALUE_TOO_LARGE
    wall_ms: Any = _wall_ms  # () -> wall clock in ms (tombstone times; tests replace it)

    def __post_init__(self) -> None:
        self.placement = self._placement()
        self.dirty: set[str] = set()  # changed by a client PUT: gossip to other replicas
        self.dirty_since_ms = 0  # wall clock of the oldest write in ``dirty``
        # Gossip lag: per sender, the wall clock (ms) of its last gossip received; and
        # write -> arrival delays (seconds) the shell drains into a histogram.
        self.gossip_heard: dict[str, int] = {}
        self.gossip_lags: list[float] = []
        self.handoff: set[str] = set()  # stored here but owned elsewhere: send and drop
        self.subscribers: dict[str, set[str]] = {}
        self.changed: set[str] = set()  # subscribed keys changed since the last push
        # New subscribers owed the current value: address -> keys (only they get it).
        self.welcome: dict[str, set[str]] = {}
        self.tombs: set[str] = set()  # keys that may hold a tombstone (for the GC)
        self.my_gossip = ""
        # key -> (this shard owns it, number of replicas), for the placement it was
        # computed with (reset when the placement object changes).
        self._own: dict[str, tuple[bool, int]] = {}
        self._own_for = self.placement
        # Anti-entropy index. key -> (hash, bucket, peers' gossip addresses) as counted
        # in the digests; peer -> bucket XORs; peer -> bucket -> keys. Keys changed since
        # they were indexed wait in ae_pending (re-hashed by _ae_refresh, bounded).
        self._ae_key: dict[str, tuple[int, int, tuple[str, ...]]] = {}
        self._ae_xor: dict[str, list[int]] = {}
        self._ae_idx: dict[str, dict[int, set[str]]] = {}
        self.ae_pending: set[str] = set()
        self._peers_for: Placement | None = None
        self._peers: frozenset[str] = frozenset()
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

    def roll_accesses(self, top: int = 20) -> dict[str, int]:
        """End the access-count window: keep its ``top`` most accessed keys (and their
        counts) as ``hot_keys``, start a new one."""
        self.hot_keys = dict(self.accesses.most_common(top))
        self.accesses = Counter()
        return self.hot_keys

    def departed(self) -> bool:
        return self.node_id not in self.placement.nodes

    # ---- client requests ---------------------------------------------------------------

    def handle_request(self, req: pb.KeyRequest) -> list[Action]:
        """A KeyRequest from a client: the reply (if wanted) and the WAL appends."""
        rtype = req.type
        if rtype == GET or rtype == PUT:
            accesses = self.accesses
            for t in req.tuples:
                accesses[t.key] += 1
        if rtype == GET:
            self.stats["get"] += 1
            resp = self._get(req)
            actions: list[Action] = []
        elif rtype == PUT:
            self.stats["put"] += 1
            resp, appended = self._put(req)
            actions = [Append(appended)] if appended else []
        elif rtype == DELETE:
            resp = pb.KeyResponse(type=DELETE)
            appended = []
            for t in req.tuples:
                self.stats["delete"] += 1
                rt = resp.tuples.add(key=t.key)
                rt.error, rt.invalidate, rec = self._delete(t.key, t.payload, t.address_cache_size)
                if rec is not None:
                    appended.append(rec)
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
        decoded: Lattice[Any] | None = None,
    ) -> list[Action]:
        """A one-tuple KeyRequest, already decoded (the hot path): the same answer as
        :meth:`handle_request`, with the reply already serialized (a large GET answer:
        :class:`ReplyParts`). ``decoded``: the PUT payload's lattice, if the caller
        decoded it already (large values, off the loop)."""
        if rtype == GET:
            self.stats["get"] += 1
            self.accesses[key] += 1
            owned, nrep = self.ownership(key)
            lt = 0
            value = b""
            invalidate = False
            if not owned:
                error = WRONG_THREAD
            else:
                invalidate = bool(cache_size) and cache_size != nrep
                entry = self.store.get(key)
                if entry is None or entry.lattice_type == TOMBSTONE:
                    error = KEY_DNE
                else:
                    error = NO_ERROR
                    lt = entry.lattice_type
                    value = entry.get_payload()
            if not address:
                return []
            parts = single_key_response(GET, key, lt, error, value, invalidate, request_id)
            if len(value) >= BIG_REPLY:
                return [ReplyParts(address, parts)]
            return [Reply(address, b"".join(parts))]
        if rtype == PUT:
            self.stats["put"] += 1
            self.accesses[key] += 1
            owned, nrep = self.ownership(key)
            invalidate = False
            actions: list[Action] = []
            if not owned:
                error = WRONG_THREAD
            else:
                invalidate = bool(cache_size) and cache_size != nrep
                if len(payload) > self.max_value_bytes:
                    error = VALUE_TOO_LARGE
                    self.stats["put_too_large"] += 1
                elif key.startswith(METADATA_PREFIX) or not self._merge(
                    key, lattice_type, payload, True, decoded
                ):
                    error = LATTICE
                    self.stats["put_lattice_error"] += 1
                else:
                    error = NO_ERROR
                    actions.append(Append([(key, lattice_type, payload)]))
                    if nrep > 1:
                        self._mark_dirty(key)
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
        if rtype == DELETE:
            self.stats["delete"] += 1
            error, invalidate, rec = self._delete(key, payload, cache_size)
            actions = [Append([rec])] if rec is not None else []
            if address:
                actions.append(
                    Reply(
                        address,
                        b"".join(
                            single_key_response(DELETE, key, 0, error, b"", invalidate, request_id)
                        ),
                    )
                )
            return actions
        self.stats["bad_request_type"] += 1
        return []

    def _delete(self, key: str, payload: bytes, cache_size: int) -> tuple[int, bool, Record | None]:
        """A client DELETE: ``(error, invalidate, WAL record)``. ``payload`` is an
        ``LWWValue`` whose timestamp (the deleter's LWW clock) bounds the LWW writes it
        removes; empty: the shard's wall clock in ns."""
        owned, nrep = self.ownership(key)
        if not owned:
            return WRONG_THREAD, False, None
        invalidate = bool(cache_size) and cache_size != nrep
        if key.startswith(METADATA_PREFIX):
            return LATTICE, invalidate, None
        timestamp = 0
        if payload:
            lww = _parse_lww(payload)
            if lww is None:
                try:
                    lat = codec.from_payload(LWW, payload)
                except (LatticeError, ValueError, TypeError):
                    return LATTICE, invalidate, None
                assert isinstance(lat, LWWPairLattice)
                lww = (lat.timestamp, b"")
            timestamp = lww[0]
        now = self.wall_ms()
        if not timestamp:
            timestamp = now * 1_000_000
        tomb = tomb_for(self.store.get(key), timestamp, now)
        self._set_tomb(key, tomb)
        if nrep > 1:
            self._mark_dirty(key)
        return NO_ERROR, invalidate, (key, TOMBSTONE, tomb.payload or b"")

    def _set_tomb(self, key: str, tomb: Tomb) -> None:
        self.store[key] = tomb
        self.tombs.add(key)
        self.stats["tombstones_set"] += 1
        if key in self.subscribers:
            self.changed.add(key)

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
            if entry is None or entry.lattice_type == TOMBSTONE:
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
            if len(payload) > self.max_value_bytes:
                rt.error = VALUE_TOO_LARGE
                self.stats["put_too_large"] += 1
                continue
            if key.startswith(METADATA_PREFIX) or not self._merge(key, lt, payload):
                rt.error = LATTICE
                self.stats["put_lattice_error"] += 1
                continue
            appended.append((key, lt, payload))
            if len(replicas) > 1:
                self._mark_dirty(key)  # other replicas hear of it at the next gossip
        return resp, appended

    def _merge(
        self,
        key: str,
        lattice_type: int,
        payload: bytes,
        client: bool = True,
        decoded: Lattice[Any] | None = None,
    ) -> bool:
        """Merge a payload into the store; False (nothing stored) if it is not valid.

        Over a tombstone (see :meth:`_merge_over_tomb`) ``client`` tells a client PUT
        from a replica's value."""
        if lattice_type == NONE or lattice_type == TOMBSTONE:
            return False
        entry = self.store.get(key)
        if entry is not None and entry.lattice_type != lattice_type:
            if type(entry) is Tomb:
                return self._merge_over_tomb(key, entry, lattice_type, payload, client)
            return False
        try:
            # LWW in canonical form (what clients send) is decoded by hand; anything
            # else goes through the codec (protobuf semantics).
            lww = _parse_lww(payload) if lattice_type == LWW and decoded is None else None
            if lww is not None:
                incoming: Lattice[Any] = LWWPairLattice(lww[0], lww[1])
            elif decoded is not None:
                incoming = decoded
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

    def _merge_over_tomb(
        self, key: str, tomb: Tomb, lattice_type: int, payload: bytes, client: bool
    ) -> bool:
        """A value for a deleted key. A value the tombstone covers (LWW: timestamp not
        after the delete's) stays deleted: True for a client (acknowledged, like an
        older LWW write), False for a replica (nothing changed). A newer one, or any
        client PUT of a non-LWW type, replaces the tombstone."""
        try:
            incoming = codec.from_payload(lattice_type, payload)
        except (LatticeError, ValueError, TypeError):
            return False
        if (client and lattice_type != LWW) or not tomb.covers(lattice_type, incoming):
            keep = payload if lattice_type in _KEEP_PAYLOAD else None
            self.store[key] = Entry(lattice_type, incoming, keep)
            self.stats["tombstones_overwritten"] += 1
            if key in self.subscribers:
                self.changed.add(key)
            return True
        self.stats["tombstone_shadowed"] += 1
        return client

    def _merge_tomb_in(self, key: str, payload: bytes) -> bool:
        """A tombstone from a replica or the WAL; True if the state changed."""
        tomb = Tomb.parse(payload)
        if tomb is None:
            return False
        entry = self.store.get(key)
        if entry is not None:
            if type(entry) is Tomb:
                tomb = entry.join(tomb)
                if tomb.payload == entry.payload:
                    return False
            elif not tomb.covers(entry.lattice_type, entry.lattice):
                return False  # written after that delete: the value stays
        self._set_tomb(key, tomb)
        return True

    def tombstone_gc(self) -> list[Action]:
        """Drop the tombstones older than ``tombstone_ttl_ms`` (logged as drops)."""
        if not self.tombs:
            return []
        limit = self.wall_ms() - self.tombstone_ttl_ms
        drops: list[Record] = []
        for key in list(self.tombs):
            entry = self.store.get(key)
            if type(entry) is not Tomb:
                self.tombs.discard(key)
            elif entry.deleted_at_ms <= limit:
                del self.store[key]
                self.tombs.discard(key)
                drops.append((key, NONE, b""))
                if self.anti_entropy:
                    self.ae_pending.add(key)
        self.stats["tombstones_dropped"] += len(drops)
        return [Append(drops)] if drops else []

    # ---- replication ---------------------------------------------------------------------

    def _mark_dirty(self, key: str) -> None:
        if not self.dirty:
            self.dirty_since_ms = self.wall_ms()
        self.dirty.add(key)

    def handle_gossip(self, msg: pb.Gossip) -> list[Action]:
        """Lattices from another replica (or a hand-off): merge and log them."""
        self.stats["gossip_in"] += 1
        if msg.sender or msg.written_ms:
            now = self.wall_ms()
            if msg.sender:
                self.gossip_heard[msg.sender] = now
            if msg.written_ms and len(self.gossip_lags) < 10_000:
                self.gossip_lags.append(max(0.0, (now - msg.written_ms) / 1000.0))
        appended: list[Record] = []
        for t in msg.tuples:
            key = t.key
            if key.startswith(METADATA_PREFIX):
                continue
            lt, payload = t.lattice_type, t.payload
            if self.merge_replica(key, lt, payload):
                appended.append((key, lt, payload))
                if self.anti_entropy:
                    self.ae_pending.add(key)
                if not self.owns(key):
                    self.handoff.add(key)
            else:
                self.stats["gossip_rejected"] += 1
        return [Append(appended)] if appended else []

    def merge_replica(self, key: str, lattice_type: int, payload: bytes) -> bool:
        """Merge a value from another replica (or the WAL), resolving a type conflict:
        the larger lattice type number wins. False if nothing changed for a reason
        (invalid payload, or a smaller type than the stored one)."""
        if lattice_type == TOMBSTONE:
            return self._merge_tomb_in(key, payload)
        entry = self.store.get(key)
        if entry is None or entry.lattice_type == lattice_type or lattice_type == NONE:
            return self._merge(key, lattice_type, payload, False)
        if type(entry) is Tomb:
            return self._merge_over_tomb(key, entry, lattice_type, payload, False)
        if lattice_type < entry.lattice_type:
            self.stats["type_conflict_ignored"] += 1
            return False
        del self.store[key]
        if self._merge(key, lattice_type, payload):
            self.stats["type_conflict_replaced"] += 1
            return True
        self.store[key] = entry  # the larger type did not decode: keep what we had
        return False

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
        if self.anti_entropy:
            self.ae_pending.update(self.dirty)
        written_ms = self.dirty_since_ms if self.dirty else 0
        self.dirty.clear()
        self.dirty_since_ms = 0
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
                if self.anti_entropy:
                    self.ae_pending.add(key)
        self.handoff.clear()
        if self.anti_entropy and self.ae_pending:
            self._ae_refresh()
        actions: list[Action] = []
        if drops:
            actions.append(Append(drops))
        for addr, tuples in per_addr.items():
            for batch in _batches(tuples):
                gossip = pb.Gossip(tuples=batch, sender=self.my_gossip, written_ms=written_ms)
                actions.append(SendInternal(addr, KIND_GOSSIP, gossip))
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
        if self.anti_entropy:
            self.ae_pending.update(self.store)  # the peers of (some) keys changed
            self.ae_pending.update(self._ae_key)
        log.info(
            "shard %s/%d: membership now %d live node(s); %d key(s) to re-place",
            self.node_id,
            self.index,
            len(self.placement.live),
            moved,
        )
        return []

    # ---- anti-entropy ----------------------------------------------------------------

    def _ae_refresh(self, max_keys: int = AE_REHASH_KEYS, max_bytes: int = AE_REHASH_BYTES) -> bool:
        """Re-index up to ``max_keys`` pending keys (or ``max_bytes`` of payload);
        True when nothing is pending any more."""
        pending = self.ae_pending
        n = hashed = 0
        while pending and n < max_keys and hashed < max_bytes:
            key = pending.pop()
            n += 1
            hashed += self._ae_index_key(key)
        self.stats["ae_rehashed"] += n
        return not pending

    def _ae_index_key(self, key: str) -> int:
        """Replace ``key``'s contribution to the digests; the payload bytes hashed."""
        old = self._ae_key.pop(key, None)
        if old is not None:
            old_h, old_b, old_peers = old
            for p in old_peers:
                self._ae_xor[p][old_b] ^= old_h
                keys = self._ae_idx[p][old_b]
                keys.discard(key)
                if not keys:
                    del self._ae_idx[p][old_b]
                    if not self._ae_idx[p]:
                        del self._ae_idx[p]
                        del self._ae_xor[p]
        entry = self.store.get(key)
        if entry is None:
            return 0
        peers: list[str] = []
        mine = False
        for ref in self.placement.replicas(key):
            if ref.index == self.index and ref.node_id == self.node_id:
                mine = True
            else:
                peers.append(ref.gossip_address)
        if not mine or not peers:
            return 0
        payload = entry.get_payload()
        h = ae_hash(key, entry.lattice_type, payload)
        b = ae_bucket(key)
        for p in peers:
            xor = self._ae_xor.get(p)
            if xor is None:
                xor = self._ae_xor[p] = [0] * AE_BUCKETS
                self._ae_idx[p] = {}
            xor[b] ^= h
            self._ae_idx[p].setdefault(b, set()).add(key)
        self._ae_key[key] = (h, b, tuple(peers))
        return len(payload)

    def ae_digest(self, peer: str) -> bytes:
        """The digest of the keys this shard replicates with ``peer`` (as indexed)."""
        xor = self._ae_xor.get(peer)
        return _AE_DIGEST.pack(*xor) if xor is not None else bytes(8 * AE_BUCKETS)

    def _known_peer(self, address: str) -> bool:
        """Whether ``address`` is the gossip address of a shard in the membership."""
        if self._peers_for is not self.placement:
            self._peers = frozenset(
                a for n in self.membership.nodes for a in n.gossip_addresses if a
            )
            self._peers_for = self.placement
        return address in self._peers and address != self.my_gossip

    def anti_entropy_tick(self) -> list[Action]:
        """Step 1: a digest to every peer this shard shares replicated keys with.

        Deferred (counted in ``ae_deferred``) while changed keys still wait to be
        re-hashed after this tick's bounded budget."""
        if not self.anti_entropy:
            return []
        self.ae_pending.update(self.dirty)
        if not self._ae_refresh():
            self.stats["ae_deferred"] += 1
            return []
        actions: list[Action] = []
        for peer, xor in self._ae_xor.items():
            msg = pb.AntiEntropy(
                sender=self.my_gossip, buckets=AE_BUCKETS, digest=_AE_DIGEST.pack(*xor)
            )
            actions.append(SendInternal(peer, KIND_ANTI_ENTROPY, msg))
        self.stats["ae_digest_out"] += len(actions)
        return actions

    def handle_anti_entropy(self, msg: pb.AntiEntropy) -> list[Action]:
        """Steps 1-3 of the exchange (see ``AntiEntropy`` in proto/anna.proto)."""
        peer = msg.sender
        if not self.anti_entropy or not self._known_peer(peer):
            self.stats["ae_ignored"] += 1
            return []
        if msg.digest:
            if msg.buckets != AE_BUCKETS or len(msg.digest) != 8 * AE_BUCKETS:
                self.stats["malformed"] += 1
                self.stats["ae_malformed"] += 1
                return []
            return self._ae_compare(peer, msg.digest)
        if msg.bucket_ids:
            return self._ae_diff(peer, msg)
        if msg.want:
            return self._ae_send(peer, msg.want[:AE_MAX_KEYS])
        self.stats["ae_empty"] += 1
        return []

    def _ae_compare(self, peer: str, digest: bytes) -> list[Action]:
        """Step 2: the buckets that differ, with (key, hash) of what we hold there."""
        self.stats["ae_digest_in"] += 1
        self._ae_refresh()
        theirs = _AE_DIGEST.unpack(digest)
        mine = self._ae_xor.get(peer) or [0] * AE_BUCKETS
        idx = self._ae_idx.get(peer, {})
        out = pb.AntiEntropy(sender=self.my_gossip, buckets=AE_BUCKETS)
        n = 0
        for b in range(AE_BUCKETS):
            if mine[b] == theirs[b]:
                continue
            keys = idx.get(b, ())
            if n and n + len(keys) > AE_MAX_KEYS:
                self.stats["ae_buckets_postponed"] += 1
                continue
            out.bucket_ids.append(b)
            for key in keys:
                out.keys.add(key=key, hash=self._ae_key[key][0])
            n += len(keys)
        if not out.bucket_ids:
            self.stats["ae_in_sync"] += 1
            return []
        self.stats["ae_buckets_differ"] += len(out.bucket_ids)
        return [SendInternal(peer, KIND_ANTI_ENTROPY, out)]

    def _ae_diff(self, peer: str, msg: pb.AntiEntropy) -> list[Action]:
        """Step 3: send the peer what it lacks or holds differently, ask for the rest."""
        self._ae_refresh()
        theirs: dict[str, int] = {kh.key: kh.hash for kh in msg.keys[:AE_MAX_KEYS]}
        idx = self._ae_idx.get(peer, {})
        send: list[str] = []
        for b in set(msg.bucket_ids):
            if b >= AE_BUCKETS:
                self.stats["ae_malformed"] += 1
                continue
            for key in idx.get(b, ()):
                if theirs.get(key) != self._ae_key[key][0]:
                    send.append(key)
        want = pb.AntiEntropy(sender=self.my_gossip, buckets=AE_BUCKETS)
        for key, h in theirs.items():
            known = self._ae_key.get(key)
            if known is not None and known[0] == h:
                continue
            if key.startswith(METADATA_PREFIX) or not self.ownership(key)[0]:
                continue
            want.want.append(key)
        actions = self._ae_send(peer, send)
        if want.want:
            self.stats["ae_keys_wanted"] += len(want.want)
            actions.append(SendInternal(peer, KIND_ANTI_ENTROPY, want))
        return actions

    def _ae_send(self, peer: str, keys: Iterable[str]) -> list[Action]:
        """Gossip messages to ``peer`` with the stored tuples of ``keys``."""
        tuples = []
        for key in keys:
            entry = self.store.get(key)
            if entry is not None:
                tuples.append(
                    pb.KeyTuple(
                        key=key, lattice_type=entry.lattice_type, payload=entry.get_payload()
                    )
                )
        self.stats["ae_keys_sent"] += len(tuples)
        return [
            SendInternal(peer, KIND_GOSSIP, pb.Gossip(tuples=batch, sender=self.my_gossip))
            for batch in _batches(tuples)
        ]

    # ---- cache push ----------------------------------------------------------------------

    def handle_subscription(self, msg: pb.CacheSubscription) -> None:
        """A cache (un)subscribes to keys; a new subscriber gets the current value first.

        Caches re-send their subscriptions periodically (a restarted shard forgot
        them): a repeat from a cache already subscribed to the key changes nothing."""
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
                subs = self.subscribers.setdefault(key, set())
                if addr in subs:
                    self.stats["resubscribed"] += 1
                    continue
                subs.add(addr)
                if key in self.store:  # a tombstone too: the cache may hold the old value
                    self.welcome.setdefault(addr, set()).add(key)

    def push_tick(self) -> list[Action]:
        """KeyResponses (type PUT, full merged payload) for changed subscribed keys, and
        the current value of each key to the subscribers that are new to it."""
        if not self.changed and not self.welcome:
            return []
        per_addr: dict[str, pb.KeyResponse] = {}
        sent: dict[str, set[str]] = {}
        for key in self.changed:
            entry = self.store.get(key)
            subs = self.subscribers.get(key)
            if entry is None or not subs:
                continue
            for addr in subs:
                resp = per_addr.get(addr)
                if resp is None:
                    resp = per_addr[addr] = pb.KeyResponse(type=PUT)
                if entry.lattice_type == TOMBSTONE:
                    resp.tuples.add(key=key, error=KEY_DNE)  # deleted: caches drop it
                else:
                    resp.tuples.add(
                        key=key, lattice_type=entry.lattice_type, payload=entry.get_payload()
                    )
                sent.setdefault(addr, set()).add(key)
        for addr, keys in self.welcome.items():
            done = sent.get(addr, ())
            for key in keys:
                entry = self.store.get(key)
                if entry is None or key in done or addr not in self.subscribers.get(key, ()):
                    continue
                resp = per_addr.get(addr)
                if resp is None:
                    resp = per_addr[addr] = pb.KeyResponse(type=PUT)
                if entry.lattice_type == TOMBSTONE:
                    resp.tuples.add(key=key, error=KEY_DNE)
                else:
                    resp.tuples.add(
                        key=key, lattice_type=entry.lattice_type, payload=entry.get_payload()
                    )
        self.changed.clear()
        self.welcome.clear()
        return [Reply(addr, resp) for addr, resp in per_addr.items()]

    # ---- durability ------------------------------------------------------------------------

    def replay(self, tuples: Iterable[pb.KeyTuple]) -> int:
        """Rebuild state from snapshot + WAL records; returns how many were applied."""
        n = 0
        for t in tuples:
            if t.lattice_type == NONE:
                self.store.pop(t.key, None)
            elif self.merge_replica(t.key, t.lattice_type, t.payload):
                # (the log only holds accepted values: replaying them with the gossip
                # rule rebuilds the same state, type replacements included)
                n += 1
            else:
                self.stats["replay_rejected"] += 1
        for key in self.store:
            if not self.owns(key):
                self.handoff.add(key)
        if self.anti_entropy:
            self.ae_pending.update(self.store)
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


def ae_hash(key: str, lattice_type: int, payload: bytes) -> int:
    """The 64-bit hash of one stored value, XORed into its bucket of the digest."""
    kb = key.encode()
    h = hashlib.blake2b(
        struct.pack("<IQ", len(kb), lattice_type), digest_size=8, person=b"anna-ae-v"
    )
    h.update(kb)
    if lattice_type == LWW and len(payload) > AE_SAMPLE_ABOVE:
        # A large LWW value: its timestamp (the payload's first bytes), its length and
        # its first and last MiB stand for it, so indexing it costs ~2 ms on the shard's
        # loop instead of ~0.3 s per 100 MB.
        view = memoryview(payload)
        h.update(len(payload).to_bytes(8, "little"))
        h.update(view[:AE_SAMPLE])
        h.update(view[-AE_SAMPLE:])
    else:
        h.update(payload)
    return int.from_bytes(h.digest(), "little")


def ae_bucket(key: str) -> int:
    """The digest bucket of ``key`` (the same in every process)."""
    h = hashlib.blake2b(key.encode(), digest_size=4, person=b"anna-ae-b")
    return int.from_bytes(h.digest(), "little") % AE_BUCKETS
