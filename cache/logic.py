"""The cache's state machine: events in, actions out (no sockets, no clock, no disk).

:class:`CacheState` holds the cached lattices (LRU by bytes), the KVS requests in
flight, the shard address map and the subscriptions. The shell (:mod:`cache.server`)
feeds it client requests, KVS responses, pushed updates and clock ticks and carries out
the :class:`cache.actions.Reply` / :class:`cache.actions.KvsSend` it returns.

Semantics:

* GET: served from the cache when held (a hit); otherwise one KVS GET per key (several
  clients missing the same key share it), the value is kept and the cache subscribes
  to the key at its shards, which then push every update (batched per push period).
* PUT: type checked against the cached lattice (mismatch: LATTICE, nothing sent), then
  written through to the KVS; the client is answered after the KVS acknowledged, and
  only then is the value merged into the cache (so a rejected write never shows).
  A PUT of a key not held subscribes to it: the shard's first push brings the full
  merged value into the cache.
* Capacity: LRU eviction by bytes (key + payload); an evicted key is unsubscribed.

>>> st = CacheState("n0", ["tcp://127.0.0.1:6450"], "tcp://127.0.0.1:7000",
...                 "tcp://127.0.0.1:7001", capacity_bytes=1 << 20)
>>> acts = st.client_get(b"id", b"1", ["k"], now=0.0)
>>> type(acts[0]).__name__          # first, ask routing where "k" lives
'KvsSend'
"""

from __future__ import annotations

import heapq
import logging
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from anna import wire
from anna.proto import anna_pb2 as pb
from cache import protocol
from cache.actions import Action, KvsSend, Reply
from cache.shm import SegmentBook, array_data_offset, pad_for
from cloudburst.shared.spans import lww_value_span
from lattices import codec
from lattices.base import Lattice, LatticeError

log = logging.getLogger(__name__)

#: A shard with request address ``tcp://ip:P`` accepts CacheSubscription on ``P+100``.
SUBSCRIPTION_PORT_OFFSET = 100
#: At most this many keys (the largest) in the summary sent with heartbeats.
SUMMARY_KEYS = 4096
#: Per-entry bookkeeping counted against the capacity besides key and payload.
ENTRY_OVERHEAD = 64
#: PUT payloads at least this long go to the KVS in a KeyRequest built by one join
#: (``anna.wire.key_request_parts``) instead of protobuf's two copies.
JOIN_PUT_BYTES = 64 * 1024
#: A PUT's deadlines grow by one second per this many payload bytes (as
#: ``anna.client.LARGE_VALUE_RATE``): a 100 MB value is not resent every second.
LARGE_VALUE_RATE = 8 * 1024 * 1024


def put_slack(size: int) -> float:
    """Seconds added to a PUT's deadlines for ``size`` payload bytes."""
    return size / LARGE_VALUE_RATE if size >= LARGE_VALUE_RATE else 0.0


def subscription_address(shard_address: str) -> str:
    """``tcp://ip:P`` -> ``tcp://ip:P+100`` (the shard's cache PULL)."""
    host, _, port = shard_address.rpartition(":")
    return f"{host}:{int(port) + SUBSCRIPTION_PORT_OFFSET}"


class Entry:
    """A cached value: Anna payload bytes and, once needed for a merge, the lattice."""

    __slots__ = ("lattice", "lattice_type", "payload", "ref", "segment", "size", "version")

    def __init__(self, key: str, lattice_type: int, payload: bytes | memoryview) -> None:
        self.lattice_type = lattice_type
        self.payload = payload
        self.lattice: Lattice[Any] | None = None
        self.size = len(key) + len(payload) + ENTRY_OVERHEAD
        self.version = b""  # set when the entry is kept (unique per cache incarnation)
        self.segment = ""  # shared-memory segment holding the payload (cache/shm.py)
        self.ref = b""  # what a getm answers: b"<segment>:<offset>"

    def get_lattice(self) -> Lattice[Any]:
        if self.lattice is None:
            self.lattice = codec.from_payload(self.lattice_type, self.payload)
        return self.lattice


@dataclass
class _ClientOp:
    """A client GET/PUT waiting for KVS work: one result slot per key."""

    op: bytes
    identity: bytes
    rid: bytes
    results: list[tuple[int, int, bytes, bytes]]
    remaining: int
    known: Sequence[bytes] = ()  # getv: the client's versions, per key


@dataclass
class _KvsReq:
    """One key's KVS request (GET shared by all waiters, or one PUT)."""

    rtype: int
    key: str
    deadline: float
    lattice_type: int = 0
    payload: bytes | memoryview = b""
    waiters: list[tuple[_ClientOp, int]] = field(default_factory=list)
    segment: str = ""  # an adopted worker segment holding ``payload`` (until kept)
    ref: bytes = b""
    state: str = "resolve"  # resolve | lookup | sent | backoff
    rid: str = ""
    attempt_deadline: float = 0.0
    retry_at: float = 0.0
    attempts: int = 0


class CacheState:
    """Everything one node's cache knows (see the module docstring)."""

    def __init__(
        self,
        node_id: str,
        routing_addresses: Sequence[str],
        response_address: str,
        address_response_address: str,
        capacity_bytes: int,
        request_timeout: float = 5.0,
        attempt_timeout: float = 1.0,
        epoch: bytes = b"\0" * 8,
        refresh_period: float = 2.0,
        store: Any = None,
        shm_threshold: int = 0,
        numpy_type: int = -1,
    ) -> None:
        if not routing_addresses:
            raise ValueError("the cache needs at least one KVS routing address")
        self.node_id = node_id
        self.routing = list(routing_addresses)
        self.response_address = response_address
        self.address_response_address = address_response_address
        self.capacity = capacity_bytes
        self.request_timeout = request_timeout
        self.attempt_timeout = min(attempt_timeout, request_timeout)
        self.entries: OrderedDict[str, Entry] = OrderedDict()
        self.used = 0
        self.stats: Counter[str] = Counter()
        self.addresses: dict[str, list[str]] = {}  # key -> shard request addresses
        self.subs: dict[str, tuple[str, ...]] = {}  # key -> shard subscription addresses
        self.fetching: dict[str, _KvsReq] = {}  # key -> shared GET in flight
        self.reqs: dict[str, _KvsReq] = {}  # request id -> req sent to a shard
        self.lookups: dict[str, tuple[float, list[str]]] = {}  # rid -> (deadline, keys)
        self.looking_up: dict[str, list[_KvsReq]] = {}  # key -> reqs waiting for addresses
        self.subscribe_found: set[str] = set()  # noted keys to subscribe once located
        self.waiting: list[_KvsReq] = []  # reqs in backoff
        self._seq = 0
        self._rr = 0
        # Entry versions are epoch + counter: a restarted cache (new epoch) never
        # confirms a version its predecessor handed out.
        self.epoch = epoch
        self._version = 0
        # Held keys' owners are re-asked this often, so subscriptions follow keys that
        # move between shards (0 disables).
        self.refresh_period = refresh_period
        self._next_refresh = 0.0
        # Large LWW values live in shared-memory segments (cache.shm.ShmStore: create /
        # unlink) when a store is given; the book tracks their pins and lifetimes.
        self.store = store
        self.shm_threshold = shm_threshold if store is not None else 0
        self.numpy_type = numpy_type
        self.book = SegmentBook()
        self.adopting = 0  # bytes of adopted segments whose PUT is in flight

    # ---- helpers ----------------------------------------------------------------------

    def _next_rid(self) -> str:
        self._seq += 1
        return f"{self.node_id}:{self._seq}"

    def key_sizes(self, limit: int = SUMMARY_KEYS) -> dict[str, int]:
        """``{key: payload bytes}`` of the cached keys (the scheduler's summary): all of
        them, or the ``limit`` largest (locality matters for large values; the summary
        travels in every heartbeat)."""
        sizes = {k: len(e.payload) for k, e in self.entries.items()}
        if len(sizes) <= limit:
            return sizes
        return dict(heapq.nlargest(limit, sizes.items(), key=lambda kv: kv[1]))

    def snapshot_stats(self) -> dict[str, int]:
        out = dict(self.stats)
        out.update(
            bytes=self.used,
            capacity_bytes=self.capacity,
            entries=len(self.entries),
            subscribed=len(self.subs),
            inflight=len(self.fetching) + len(self.reqs),
            shm_bytes=self.book.total_bytes,
            shm_segments=len(self.book.sizes),
            shm_retired_pinned_bytes=self.book.retired_bytes,
            shm_pinned_segments=len(self.book.pins),
            shm_adopting_bytes=self.adopting,
        )
        for name in ("hits", "misses", "evictions", "puts", "pushes"):
            out.setdefault(name, 0)
        return out

    def _drop(self, entry: Entry) -> None:
        """``entry`` left the cache: retire its segment (unlinked once unpinned)."""
        self.used -= entry.size
        if entry.segment:
            self._unlink(self.book.retire(entry.segment))

    def _unlink(self, names: list[str]) -> None:
        for name in names:
            self.store.unlink(name)
            self.stats["shm_unlinked"] += 1

    def _to_segment(self, entry: Entry) -> None:
        """Move a large LWW payload into a new shared-memory segment (never rewritten)."""
        payload = entry.payload
        pad = pad_for(array_data_offset(payload, self.numpy_type))
        try:
            name, view = self.store.create(payload, pad)
        except OSError as exc:  # /dev/shm full: keep it on the heap
            self.stats["shm_errors"] += 1
            log.warning("cache %s: cannot create a segment: %s", self.node_id, exc)
            return
        self.book.add(name, pad + len(payload))
        entry.payload, entry.segment = view, name
        entry.ref = f"{name}:{pad}".encode()
        self.stats["shm_created"] += 1

    def release(self, owner: bytes, names: Sequence[str]) -> None:
        """A worker released its pins of ``names`` (after a call)."""
        self._unlink(self.book.release(owner, names))

    def drop_owner(self, owner: bytes) -> None:
        """A worker died: its pins go."""
        self.stats["shm_dead_owners"] += 1
        self._unlink(self.book.drop_owner(owner))

    def _mapped(self, identity: bytes, entry: Entry) -> tuple[int, int, bytes, bytes]:
        """A getm answer for a segment entry: pin it for ``identity``."""
        self.book.pin(entry.segment, identity)
        self.stats["shm_mapped"] += 1
        return (entry.lattice_type, protocol.MAPPED, entry.ref, entry.version)

    def _insert(self, key: str, entry: Entry) -> list[Action]:
        """Keep ``entry`` (replacing any old one) and evict LRU entries past capacity."""
        old = self.entries.pop(key, None)
        if old is not None:
            self._drop(old)
        if entry.size > self.capacity:
            self.stats["too_large"] += 1
            if entry.segment:  # an adopted segment nobody will read
                self._unlink(self.book.retire(entry.segment))
            return self._unsubscribe([key])
        if (
            self.shm_threshold
            and not entry.segment
            and entry.lattice_type == pb.LWW
            and len(entry.payload) >= self.shm_threshold
        ):
            self._to_segment(entry)
        self._version += 1
        entry.version = self.epoch + self._version.to_bytes(8, "big")
        self.entries[key] = entry
        self.used += entry.size
        return self._evict(keep=1)

    def _evict(self, keep: int) -> list[Action]:
        """Evict LRU entries (all but the newest ``keep``) while over capacity. Pinned
        segments of entries already gone, and adopted segments whose PUT is in
        flight, hold memory too: they count."""
        evicted = []
        while (
            self.used + self.book.retired_bytes + self.adopting > self.capacity
            and len(self.entries) > keep
        ):
            k, e = self.entries.popitem(last=False)
            self._drop(e)
            self.stats["evictions"] += 1
            self.stats["evicted_bytes"] += len(e.payload)
            evicted.append(k)
        return self._unsubscribe(evicted) if evicted else []

    def _subscribe(self, key: str) -> list[Action]:
        shards = self.addresses.get(key)
        if not shards:
            return []
        subs = tuple(subscription_address(a) for a in shards)
        old = self.subs.get(key)
        if old == subs:
            return []
        self.subs[key] = subs
        actions: list[Action] = []
        for addr in subs:
            if old and addr in old:
                continue
            msg = pb.CacheSubscription(cache_address=self.response_address, keys=[key])
            actions.append(KvsSend(addr, msg.SerializeToString()))
        for addr in old or ():
            if addr not in subs:  # the key moved away from that shard
                msg = pb.CacheSubscription(
                    cache_address=self.response_address, keys=[key], unsubscribe=True
                )
                actions.append(KvsSend(addr, msg.SerializeToString()))
        self.stats["subscriptions" if old is None else "resubscriptions"] += 1
        return actions

    def _unsubscribe(self, keys: Sequence[str]) -> list[Action]:
        per_addr: dict[str, list[str]] = {}
        for key in keys:
            for addr in self.subs.pop(key, ()):
                per_addr.setdefault(addr, []).append(key)
        actions: list[Action] = []
        for addr, ks in per_addr.items():
            msg = pb.CacheSubscription(
                cache_address=self.response_address, keys=ks, unsubscribe=True
            )
            actions.append(KvsSend(addr, msg.SerializeToString()))
        return actions

    def resubscribe_all(self, chunk: int = 10000) -> list[Action]:
        """Re-send the subscription of every held key: one ``CacheSubscription`` per
        shard subscription address (``chunk`` keys at most per message).

        A shard keeps subscriptions in memory only, so one that restarted at the same
        address no longer pushes; the shell calls this every
        ``cache.subscription_refresh_s``. A shard that still knows this cache as a
        subscriber of a key ignores the repeat; one that forgot it (restarted) takes it
        as a new subscription and pushes the key's current value.
        """
        per_addr: dict[str, list[str]] = {}
        for key, addrs in self.subs.items():
            for addr in addrs:
                per_addr.setdefault(addr, []).append(key)
        actions: list[Action] = []
        for addr in sorted(per_addr):
            keys = per_addr[addr]
            for i in range(0, len(keys), chunk):
                msg = pb.CacheSubscription(
                    cache_address=self.response_address, keys=keys[i : i + chunk]
                )
                actions.append(KvsSend(addr, msg.SerializeToString()))
        if per_addr:
            self.stats["subscription_refreshes"] += 1
        return actions

    # ---- client requests --------------------------------------------------------------

    def client_get(
        self,
        identity: bytes,
        rid: bytes,
        keys: Sequence[str],
        now: float,
        known: Sequence[bytes] | None = None,
        mapped: bool = False,
    ) -> list[Action]:
        """A client's GET of ``keys``: hits answered now, misses fetched from the KVS.

        With ``known`` (a ``getv``: the client's cached version per key, ``b""`` for
        none) a hit whose version matches is answered NOT_MODIFIED without payload.
        With ``mapped`` (a ``getm``) a value held in a segment is answered MAPPED with
        the segment's name, pinned for ``identity`` until it releases it.
        """
        results: list[tuple[int, int, bytes, bytes]] = []
        misses: list[tuple[int, str]] = []
        entries = self.entries
        for i, key in enumerate(keys):
            entry = entries.get(key)
            if entry is not None:
                entries.move_to_end(key)
                self.stats["hits"] += 1
                if known is not None and known[i] == entry.version:
                    self.stats["not_modified"] += 1
                    results.append((entry.lattice_type, protocol.NOT_MODIFIED, b"", entry.version))
                elif mapped and entry.segment:
                    results.append(self._mapped(identity, entry))
                else:
                    results.append(
                        (entry.lattice_type, protocol.NO_ERROR, entry.payload, entry.version)
                    )
            else:
                self.stats["misses"] += 1
                results.append((0, protocol.KEY_DNE, b"", b""))
                misses.append((i, key))
        op_code = protocol.OP_GET if known is None else protocol.OP_GETV
        if mapped:
            op_code = protocol.OP_GETM
        if not misses:
            return [Reply(identity, self._get_reply(op_code, rid, results))]
        op = _ClientOp(op_code, identity, rid, results, len(misses), known or ())
        actions: list[Action] = []
        for i, key in misses:
            req = self.fetching.get(key)
            if req is None:
                req = _KvsReq(pb.GET, key, now + self.request_timeout)
                self.fetching[key] = req
                req.waiters.append((op, i))
                actions += self._dispatch(req, now)
            else:
                req.waiters.append((op, i))
        return actions

    @staticmethod
    def _get_reply(
        op: bytes, rid: bytes, results: Sequence[tuple[int, int, bytes, bytes]]
    ) -> list[bytes]:
        if op == protocol.OP_GETV or op == protocol.OP_GETM:
            return protocol.reply_getv(rid, results, op)
        return protocol.reply_get(rid, [r[:3] for r in results])

    def client_put(
        self, identity: bytes, rid: bytes, tuples: Sequence[tuple[str, int, bytes]], now: float
    ) -> list[Action]:
        """A client's PUT: type check, write through, answer once the KVS acknowledged."""
        self.stats["puts"] += len(tuples)
        results: list[tuple[int, int, bytes, bytes]] = [(0, protocol.NO_ERROR, b"", b"")] * len(
            tuples
        )
        op = _ClientOp(protocol.OP_PUT, identity, rid, results, 0)
        pending = []
        for i, (key, ltype, payload) in enumerate(tuples):
            entry = self.entries.get(key)
            if ltype == pb.NONE or (entry is not None and entry.lattice_type != ltype):
                self.stats["lattice_errors"] += 1
                results[i] = (ltype, protocol.LATTICE, b"", b"")
                continue
            deadline = now + self.request_timeout + put_slack(len(payload))
            req = _KvsReq(pb.PUT, key, deadline, ltype, payload)
            req.waiters.append((op, i))
            pending.append(req)
        op.remaining = len(pending)
        if not pending:
            return [Reply(identity, protocol.reply_put(rid, [r[1] for r in results]))]
        actions: list[Action] = []
        for req in pending:
            actions += self._dispatch(req, now)
        return actions

    def client_note(self, tuples: Sequence[tuple[str, int, bytes]], now: float) -> list[Action]:
        """A client PUT these values to the KVS itself and the KVS acknowledged them
        (``note``, no reply): taken as acknowledged PUTs (merged into held entries, other
        keys subscribed to). A key whose shards are unknown here is looked up first."""
        self.stats["notes"] += len(tuples)
        actions: list[Action] = []
        for key, ltype, payload in tuples:
            if ltype == pb.NONE:
                continue
            if key in self.entries or key in self.subs or self.addresses.get(key):
                actions += self._acked(key, ltype, payload)
            elif key not in self.subscribe_found:
                self.subscribe_found.add(key)
                if key not in self.looking_up:
                    self.looking_up[key] = []
                    actions += self._lookup(key, now)
        return actions

    def client_adopt(
        self,
        identity: bytes,
        rid: bytes,
        key: str,
        segment: str,
        view: memoryview,
        offset: int,
        now: float,
    ) -> list[Action]:
        """A worker's PUT of an LWW payload it wrote into ``segment`` (which the shell
        has taken over: renamed to one of ours and mapped; ``view`` is the payload at
        ``offset``). Written through to the KVS like a PUT; once acknowledged the
        segment *is* the cached entry (no copy), else it is unlinked. Its bytes count
        in the book (``shm_bytes``) from now on."""
        self.stats["puts"] += 1
        self.stats["shm_adopted"] += 1
        self.book.add(segment, offset + len(view))
        entry = self.entries.get(key)
        if entry is not None and entry.lattice_type != pb.LWW:
            self.stats["lattice_errors"] += 1
            self._unlink(self.book.retire(segment))
            return [Reply(identity, protocol.reply_put(rid, [protocol.LATTICE]))]
        op = _ClientOp(protocol.OP_PUT, identity, rid, [(0, protocol.NO_ERROR, b"", b"")], 1)
        deadline = now + self.request_timeout + put_slack(len(view))
        req = _KvsReq(pb.PUT, key, deadline, pb.LWW, view)
        req.segment, req.ref = segment, f"{segment}:{offset}".encode()
        req.waiters.append((op, 0))
        # The file is in memory already: make room for it now.
        self.adopting += offset + len(view)
        return self._evict(keep=0) + self._dispatch(req, now)

    def _keep_adopted(self, key: str, req: _KvsReq) -> list[Action]:
        """The KVS acknowledged an adopted segment's PUT: cache it (LWW merge with what
        is held: the newer of the two stays; a losing segment is unlinked)."""
        segment, req.segment = req.segment, ""
        self.adopting -= self.book.sizes.get(segment, 0)
        entry = self.entries.get(key)
        if entry is not None:
            try:
                ours = _lww_newer(req.payload, entry.payload)
            except (ValueError, IndexError):
                ours = False  # not comparable: keep the held value, pushes correct it
            if not ours:
                self._unlink(self.book.retire(segment))
                self.entries.move_to_end(key)
                return []
        new = Entry(key, pb.LWW, req.payload)
        new.segment, new.ref = segment, req.ref
        # Subscribing makes the shard push the merged value (a newer write elsewhere).
        actions = [] if key in self.subs else self._subscribe(key)
        return actions + self._insert(key, new)

    # ---- KVS request lifecycle ----------------------------------------------------------

    def _dispatch(self, req: _KvsReq, now: float) -> list[Action]:
        """Send ``req`` to its shard, or ask routing for the shard first."""
        shards = self.addresses.get(req.key)
        if not shards:
            waiting = self.looking_up.get(req.key)
            if waiting is not None:
                waiting.append(req)
                req.state = "lookup"
                return []
            self.looking_up[req.key] = [req]
            req.state = "lookup"
            return self._lookup(req.key, now)
        req.attempts += 1
        shard = shards[(req.attempts - 1) % len(shards)]
        req.rid = self._next_rid()
        req.state = "sent"
        req.attempt_deadline = now + self.attempt_timeout
        if req.rtype == pb.PUT:
            req.attempt_deadline += put_slack(len(req.payload))
        self.reqs[req.rid] = req
        payload = req.payload
        if req.rtype == pb.PUT and (type(payload) is not bytes or len(payload) >= JOIN_PUT_BYTES):
            self.stats["kvs_puts"] += 1
            parts = wire.key_request_parts(
                pb.PUT,
                req.key,
                req.lattice_type,
                [req.payload],  # type: ignore[list-item]
                len(shards),
                wire.string_field(3, self.response_address),
                req.rid,
            )
            return [KvsSend(shard, b"".join(parts))]
        kreq = pb.KeyRequest(
            type=req.rtype,  # type: ignore[arg-type]
            response_address=self.response_address,
            request_id=req.rid,
        )
        t = kreq.tuples.add(key=req.key, address_cache_size=len(shards))
        if req.rtype == pb.PUT:
            t.lattice_type = req.lattice_type
            t.payload = req.payload
            self.stats["kvs_puts"] += 1
        else:
            self.stats["kvs_gets"] += 1
        return [KvsSend(shard, kreq.SerializeToString())]

    def _lookup(self, key: str, now: float) -> list[Action]:
        """Ask routing where ``key`` lives (``looking_up[key]`` is set by the caller)."""
        rid = self._next_rid()
        self.lookups[rid] = (now + self.attempt_timeout, [key])
        msg = pb.KeyAddressRequest(
            response_address=self.address_response_address, keys=[key], request_id=rid
        )
        self._rr += 1
        target = self.routing[self._rr % len(self.routing)]
        self.stats["address_lookups"] += 1
        return [KvsSend(target, msg.SerializeToString())]

    def _retry(self, req: _KvsReq, now: float, why: str) -> list[Action]:
        """A transient failure: forget the key's addresses and try again shortly."""
        self.stats["retries"] += 1
        log.debug("cache %s: retrying %s (%s)", self.node_id, req.key, why)
        self.addresses.pop(req.key, None)
        if now >= req.deadline:
            return self._finish(req, 0, protocol.TIMEOUT, b"", now)
        req.state = "backoff"
        req.retry_at = now + min(0.05 * (1 + req.attempts), 0.5)
        self.waiting.append(req)
        return []

    def _finish(
        self, req: _KvsReq, ltype: int, err: int, payload: bytes, now: float
    ) -> list[Action]:
        """``req`` is done: fill its waiters' slots and answer the complete client ops."""
        if req.rtype == pb.GET and self.fetching.get(req.key) is req:
            del self.fetching[req.key]
        if req.segment:  # an adopted PUT that failed: its segment goes
            segment, req.segment = req.segment, ""
            self.adopting -= self.book.sizes.get(segment, 0)
            self._unlink(self.book.retire(segment))
        if err == protocol.TIMEOUT:
            self.stats["kvs_timeouts"] += 1
        actions: list[Action] = []
        version = b""
        entry = None
        if req.rtype == pb.GET and err == protocol.NO_ERROR:
            entry = self.entries.get(req.key)
            if entry is not None:  # kept: answer its (possibly merged) value and version
                ltype, payload, version = entry.lattice_type, entry.payload, entry.version
        for op, i in req.waiters:
            if entry is not None and entry.segment and op.op == protocol.OP_GETM:
                op.results[i] = self._mapped(op.identity, entry)
            else:
                op.results[i] = (ltype, err, payload, version)
            op.remaining -= 1
            if op.remaining == 0:
                if op.op == protocol.OP_PUT:
                    frames = protocol.reply_put(op.rid, [r[1] for r in op.results])
                else:
                    frames = self._get_reply(op.op, op.rid, op.results)
                actions.append(Reply(op.identity, frames))
        req.waiters.clear()
        return actions

    def address_response(self, resp: pb.KeyAddressResponse, now: float) -> list[Action]:
        """Routing answered: remember the shards and send the waiting requests."""
        lookup = self.lookups.pop(resp.response_id, None)
        if lookup is None:
            self.stats["stale_address_responses"] += 1
            return []
        actions: list[Action] = []
        for ka in resp.addresses:
            if ka.ips:
                self.addresses[ka.key] = list(ka.ips)
                if ka.key in self.subscribe_found:
                    self.subscribe_found.discard(ka.key)
                    actions += self._subscribe(ka.key)
                elif ka.key in self.subs:
                    # A held key whose replicas changed (membership change): subscribe
                    # at the new owners, which push the current value at once.
                    actions += self._subscribe(ka.key)
        for key in lookup[1]:
            self.subscribe_found.discard(key)  # (not located: a later read fetches it)
            reqs = self.looking_up.pop(key, [])
            for req in reqs:
                if self.addresses.get(key):
                    actions += self._dispatch(req, now)
                else:
                    actions += self._retry(
                        req, now, f"no address ({pb.AnnaError.Name(resp.error)})"
                    )
        return actions

    def _refresh_addresses(self, now: float, chunk: int = 1000) -> list[Action]:
        keys = list(self.subs)
        actions: list[Action] = []
        for i in range(0, len(keys), chunk):
            rid = self._next_rid()
            part = keys[i : i + chunk]
            self.lookups[rid] = (now + self.attempt_timeout, part)
            msg = pb.KeyAddressRequest(
                response_address=self.address_response_address, keys=part, request_id=rid
            )
            self._rr += 1
            actions.append(
                KvsSend(self.routing[self._rr % len(self.routing)], msg.SerializeToString())
            )
        self.stats["address_refreshes"] += 1
        return actions

    def key_response(self, resp: pb.KeyResponse, now: float) -> list[Action]:
        """A KVS answer to one of our requests, or (no response id) a pushed update."""
        if not resp.response_id:
            return self._push(resp)
        req = self.reqs.pop(resp.response_id, None)
        if req is None:
            self.stats["stale_responses"] += 1
            return []
        if resp.error not in (pb.NO_ERROR, pb.KEY_DNE) or not resp.tuples:
            return self._retry(req, now, f"request error {resp.error}")
        t = resp.tuples[0]
        if t.error == pb.WRONG_THREAD:
            return self._retry(req, now, "wrong thread")
        if t.error == pb.TIMEOUT:
            return self._retry(req, now, "shard timeout")
        actions = self._complete(req, t, now)
        if t.invalidate:
            # The answer is valid; only our view of the key's replicas is stale.
            self.addresses.pop(req.key, None)
            self.stats["invalidations"] += 1
        return actions

    def _complete(self, req: _KvsReq, t: pb.KeyTuple, now: float) -> list[Action]:
        actions: list[Action] = []
        key = req.key
        if req.rtype == pb.GET:
            if t.error == pb.NO_ERROR:
                actions += self._store(key, t.lattice_type, t.payload)
                actions += self._finish(req, t.lattice_type, protocol.NO_ERROR, t.payload, now)
            else:
                actions += self._finish(req, 0, t.error, b"", now)
            return actions
        if t.error == pb.NO_ERROR:
            if req.segment:
                actions += self._keep_adopted(key, req)
            else:
                actions += self._acked(key, req.lattice_type, req.payload)  # type: ignore[arg-type]
        elif t.error == pb.LATTICE:
            self.stats["lattice_errors"] += 1
        actions += self._finish(req, req.lattice_type, t.error, b"", now)
        return actions

    def _acked(self, key: str, ltype: int, payload: bytes) -> list[Action]:
        """The KVS acknowledged a PUT of ``payload`` under ``key``: merge it into the held
        entry; a key not held is subscribed to (the shard pushes its merged value)."""
        entry = self.entries.get(key)
        if entry is not None:
            return self._merge_into(key, entry, ltype, payload)
        if key not in self.subs:
            return self._subscribe(key)
        return []

    def _store(self, key: str, ltype: int, payload: bytes) -> list[Action]:
        """A fetched value: keep it (merged with what may have been pushed meanwhile)."""
        entry = self.entries.get(key)
        if entry is not None:
            return self._merge_into(key, entry, ltype, payload)
        actions = self._subscribe(key)
        return actions + self._insert(key, Entry(key, ltype, payload))

    def _merge_into(self, key: str, entry: Entry, ltype: int, payload: bytes) -> list[Action]:
        if ltype == entry.lattice_type == pb.LWW:
            # An LWW value (a push of what we hold, a note): decide on the timestamps,
            # without parsing or copying the values.
            try:
                newer = _lww_newer(payload, entry.payload)
            except (ValueError, IndexError):
                newer = None
            if newer is not None:
                if not newer:  # older, or the same value
                    self.entries.move_to_end(key)
                    return []
                return self._insert(key, Entry(key, ltype, payload))
        if _same_bytes(payload, entry.payload):
            self.entries.move_to_end(key)
            return []
        if ltype != entry.lattice_type:
            # Only the KVS's own value reaches here with another type: it is the truth.
            return self._insert(key, Entry(key, ltype, payload))
        try:
            merged = entry.get_lattice().merge(codec.from_payload(ltype, payload))
        except LatticeError:
            # No local merge for this type: take the incoming (KVS-acknowledged) state.
            self.stats["merge_fallbacks"] += 1
            return self._insert(key, Entry(key, ltype, payload))
        if merged is entry.lattice:
            self.entries.move_to_end(key)
            return []
        new = Entry(key, ltype, merged.serialize())
        new.lattice = merged
        return self._insert(key, new)

    def _push(self, resp: pb.KeyResponse) -> list[Action]:
        """Shards pushed the merged values of subscribed keys."""
        actions: list[Action] = []
        for t in resp.tuples:
            self.stats["pushes"] += 1
            key = t.key
            if key not in self.subs:
                self.stats["unsubscribed_pushes"] += 1
                continue
            if t.error == pb.KEY_DNE:
                # Deleted at the KVS: forget the value and the subscription.
                old = self.entries.pop(key, None)
                if old is not None:
                    self._drop(old)
                    self.stats["deleted_pushes"] += 1
                actions += self._unsubscribe([key])
                continue
            if t.error != pb.NO_ERROR or t.lattice_type == pb.NONE:
                continue
            entry = self.entries.get(key)
            if entry is None:
                actions += self._insert(key, Entry(key, t.lattice_type, t.payload))
            else:
                actions += self._merge_into(key, entry, t.lattice_type, t.payload)
        return actions

    # ---- time -----------------------------------------------------------------------------

    def tick(self, now: float) -> list[Action]:
        """Time out attempts and lookups, resend requests whose backoff is over, and
        periodically re-check where the subscribed keys live."""
        actions: list[Action] = []
        if self.refresh_period and now >= self._next_refresh:
            if self._next_refresh and self.subs:
                actions += self._refresh_addresses(now)
            self._next_refresh = now + self.refresh_period
        if self.reqs:
            for rid in [r for r, q in self.reqs.items() if q.attempt_deadline <= now]:
                req = self.reqs.pop(rid)
                actions += self._retry(req, now, "attempt timed out")
        if self.lookups:
            for rid in [r for r, (d, _) in self.lookups.items() if d <= now]:
                _, keys = self.lookups.pop(rid)
                for key in keys:
                    self.subscribe_found.discard(key)
                    for req in self.looking_up.pop(key, []):
                        actions += self._retry(req, now, "address lookup timed out")
        if self.waiting:
            due = [r for r in self.waiting if r.retry_at <= now]
            if due:
                self.waiting = [r for r in self.waiting if r.retry_at > now]
                for req in due:
                    if now >= req.deadline:
                        actions += self._finish(req, 0, protocol.TIMEOUT, b"", now)
                    else:
                        actions += self._dispatch(req, now)
        return actions


def _lww_newer(new: bytes | memoryview, old: bytes | memoryview) -> bool:
    """Whether LWW payload ``new`` wins the merge with ``old`` (larger timestamp, then
    larger value bytes, as ``LWWPairLattice.merge``), without parsing copies."""
    nts, ns, ne = lww_value_span(new)
    ots, os_, oe = lww_value_span(old)
    if nts != ots:
        return nts > ots
    return bytes(new[ns:ne]) > bytes(old[os_:oe])


def _same_bytes(a: bytes | memoryview, b: bytes | memoryview, chunk: int = 1 << 20) -> bool:
    """``a == b`` at memcmp speed (a memoryview compared with ``==`` goes item by item:
    0.8 s for 100 MB, which would stall the cache's loop)."""
    if len(a) != len(b):
        return False
    if type(a) is bytes and type(b) is bytes:
        return a == b
    va, vb = memoryview(a), memoryview(b)
    return all(
        bytes(va[i : i + chunk]) == bytes(vb[i : i + chunk]) for i in range(0, len(va), chunk)
    )
