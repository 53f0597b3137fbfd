"""The DDT stream hub: the node cache's state agent for differentiable data types.

Pure logic (no sockets, no clock: ``now`` is passed in). The cache shell hands it
every ``stream.*`` op: ``handle(sender, op, frames, now)`` with ``sender`` the ROUTER
identity of a local client (``None`` for a message from another node's cache), and
calls ``tick(now)`` every few milliseconds. It answers with
:class:`cache.actions.Reply` (to a local client) and :class:`cache.actions.SendPeer`
(to another cache's peer socket) actions.

The model
---------
A stream (id ``sid``, e.g. ``b"<call id>/words"``) is an append-only log of
**entries** at this hub. An entry is a writer's delta (or its seal, or a failure
notice), identified by ``(writer, seq)``; duplicates are dropped. The hub never
decodes deltas: readers merge them (``lattices.ddt``), the hub only orders, dedupes,
buffers and forwards bytes.

* Local writers append entries (``stream.write``); each write is acknowledged at once
  unless the slowest consumer is more than ``cfg.ddt.buffer_max_bytes`` behind, in
  which case the acknowledgement waits: a slow reader slows its writer.
* Local readers pull with a cursor (``stream.read``): the hub answers with the entries
  from the cursor on (up to ``max_bytes``), or parks the request until one arrives. A
  reader that opens late starts at cursor 0 (everything retained: the snapshot) and
  then gets the rest; nothing twice because the cursor is the reader's own.
* Other nodes: a reader's hub subscribes to a writer's hub (``stream.psub``), or a
  writer's hub pushes to the readers' hubs it was told about (``push_to``). The
  writer's hub forwards its *local* writers' entries (``stream.pdelta``) within a
  window of ``buffer_max_bytes``; the reader's hub acknowledges them
  (``stream.pack``) as its own local readers consume them, so back-pressure crosses
  nodes. Data never goes through the scheduler.
* Liveness: writers (and readers) heartbeat (``stream.hb``). A writer that stops
  heartbeating without sealing gets a FAIL entry, so readers raise instead of waiting
  forever; a reader that stops heartbeating stops holding writers back. Hubs
  heartbeat the hubs they push to; a silent source hub fails its writers there.
* Memory: a stream opened with ``retain=False`` (DAG edges) frees entries once every
  expected reader has consumed them; ``stream.free`` drops a call's streams (the
  executor sends it when the call ends) and idle streams expire after ``ttl``.

Wire framing (``frames`` after the op; integers are 8-byte little-endian)
--------------------------------------------------------------------------
Local clients (replies go to the ROUTER identity):

=====================  ===========================================  ============================
op                     request frames                               reply frames
=====================  ===========================================  ============================
``stream.open``        ``sid, json``                                ``stream.opened, sid, json``
``stream.write``       ``sid, writer, rid, header, payload``        ``stream.wack, sid, rid``
``stream.read``        ``sid, reader, rid, cursor, max_bytes``      ``stream.data, sid, rid,
                                                                    next_cursor, error,
                                                                    (writer, header, payload)*``
``stream.close``       ``sid, reader``                              (none)
``stream.hb``          ``(sid, member)*``                           (none)
``stream.free``        ``prefix``                                   (none)
``stream.stat``        ``sid``                                      ``stream.stat, sid, json``
=====================  ===========================================  ============================

A ``stream.wack`` has a fourth frame :data:`ABANDONED` when every expected reader left
before the end (or the call's streams were freed): the writer should stop.
``header`` is :data:`HEADER` ``(seq, flags, declared writers)``; ``flags`` is
:data:`DELTA`, :data:`SEAL` or :data:`FAIL` (payload = the failure message).
``json`` of ``stream.open``: ``{"role": "w"|"r", "member": id, "type": name,
"writers": n, "readers": n, "retain": bool, "push_to": [addr], "pull_from": [addr]}``.

Peers (``sender`` is ``None``): ``stream.pmeta sid json``, ``stream.psub sid addr
json``, ``stream.pdelta sid src src_pos writer header payload``, ``stream.pack sid
addr pos``, ``stream.phb addr sid*``, ``stream.pfree prefix``.
"""

from __future__ import annotations

import json
import logging
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from cache.actions import Reply, SendPeer

log = logging.getLogger(__name__)

HEADER = struct.Struct("<QBI")  # seq, flags, declared writers
U64 = struct.Struct("<Q")
DELTA, SEAL, FAIL = 0, 1, 2
#: seq of the FAIL entry a hub writes for a dead writer (never a real batch number).
FAIL_SEQ = 2**63

OP_OPEN = b"stream.open"
OP_WRITE = b"stream.write"
OP_READ = b"stream.read"
OP_CLOSE = b"stream.close"
OP_HB = b"stream.hb"
OP_FREE = b"stream.free"
OP_STAT = b"stream.stat"
OP_PMETA = b"stream.pmeta"
OP_PSUB = b"stream.psub"
OP_PDELTA = b"stream.pdelta"
OP_PACK = b"stream.pack"
OP_PHB = b"stream.phb"
OP_PFREE = b"stream.pfree"
R_OPENED = b"stream.opened"
R_WACK = b"stream.wack"
R_DATA = b"stream.data"
R_STAT = b"stream.stat"
#: Extra frame of a ``stream.wack``: every reader left (or the call ended) before the
#: stream was final; the writer should stop producing.
ABANDONED = b"abandoned"

#: Defaults for settings the config does not carry (``cfg.ddt.<name>`` wins if present).
WRITER_TIMEOUT_S = 5.0
STREAM_TTL_S = 600.0
PEER_HB_S = 0.5
READ_MAX_BYTES = 1 << 20


def u64(n: int) -> bytes:
    return U64.pack(n)


def from_u64(b: bytes) -> int:
    return int(U64.unpack(b)[0])


@dataclass
class Entry:
    writer: bytes
    header: bytes
    payload: bytes
    size: int
    source: str | None  # peer address of the hub it came from; None if written here
    src_pos: int


@dataclass
class LocalReader:
    cursor: int = 0
    last_seen: float = 0.0
    parked: tuple[bytes, bytes, int] | None = None  # identity, rid, max_bytes


@dataclass
class PeerSub:
    """A downstream hub receiving this hub's local entries."""

    next_pos: int = 0  # next local position to consider sending
    acked: int = 0  # every local entry below this was consumed there
    inflight: deque[tuple[int, int]] = field(default_factory=deque)  # (pos, size)
    inflight_bytes: int = 0


@dataclass
class Stream:
    sid: bytes
    meta: dict[str, Any]
    created: float
    last_active: float
    entries: list[Entry] = field(default_factory=list)
    base: int = 0  # absolute position of entries[0]
    cum: list[int] = field(default_factory=lambda: [0])  # bytes before entries[i - base]
    seen: set[tuple[bytes, int]] = field(default_factory=set)
    writers: dict[bytes, float] = field(default_factory=dict)  # local writer -> last hb
    done_writers: set[bytes] = field(default_factory=set)  # sealed or failed
    sealed: set[bytes] = field(default_factory=set)
    readers: dict[bytes, LocalReader] = field(default_factory=dict)
    subs: dict[str, PeerSub] = field(default_factory=dict)
    held_acks: list[tuple[bytes, bytes]] = field(default_factory=list)  # identity, rid
    sources: dict[str, float] = field(default_factory=dict)  # upstream hub -> last heard
    src_acked: dict[str, int] = field(default_factory=dict)
    scanned: int = 0  # entries below this were checked for upstream acks
    pull_from: set[str] = field(default_factory=set)
    readers_seen: int = 0
    abandoned: bool = False

    @property
    def end(self) -> int:
        return self.base + len(self.entries)

    def bytes_at(self, pos: int) -> int:
        return self.cum[max(0, pos - self.base)]

    def entry(self, pos: int) -> Entry:
        return self.entries[pos - self.base]


class StreamHub:
    """Per-node stream state (see the module docstring for the protocol)."""

    def __init__(self, node_id: str, peer_address: str, cfg: Any) -> None:
        self.node_id = node_id
        self.peer_address = peer_address
        ddt = getattr(cfg, "ddt", None)
        self.buffer_max = int(getattr(ddt, "buffer_max_bytes", 8 << 20))
        self.writer_timeout = float(getattr(ddt, "writer_timeout_s", WRITER_TIMEOUT_S))
        self.ttl = float(getattr(ddt, "stream_ttl_s", STREAM_TTL_S))
        self.streams: dict[bytes, Stream] = {}
        # Prefixes freed recently: late writes to them are acknowledged and dropped
        # (a producer still running when its call ended must not re-create the stream).
        self.tombstones: deque[bytes] = deque(maxlen=1024)
        self.next_peer_hb = 0.0
        self.stats: dict[str, int] = {"entries": 0, "duplicates": 0, "held": 0, "freed": 0}

    # ------------------------------------------------------------------ dispatch

    def handle(
        self, sender: bytes | None, op: bytes, frames: list[bytes], now: float
    ) -> list[Reply | SendPeer]:
        """One op from a local client (``sender``) or a peer hub (``sender is None``)."""
        if sender is not None:
            if op == OP_WRITE:
                return self._write(sender, frames, now)
            if op == OP_READ:
                return self._read(sender, frames, now)
            if op == OP_HB:
                return self._hb(frames, now)
            if op == OP_OPEN:
                return self._open(sender, frames, now)
            if op == OP_CLOSE:
                return self._close(frames, now)
            if op == OP_FREE:
                return self._free(frames[0], forward=True)
            if op == OP_STAT:
                return [
                    Reply(sender, [R_STAT, frames[0], json.dumps(self.status(frames[0])).encode()])
                ]
            log.warning("hub %s: unknown client op %r", self.node_id, op[:40])
            return []
        if op == OP_PDELTA:
            return self._pdelta(frames, now)
        if op == OP_PACK:
            return self._pack(frames, now)
        if op == OP_PHB:
            return self._phb(frames, now)
        if op == OP_PSUB:
            return self._psub(frames, now)
        if op == OP_PMETA:
            self._stream(frames[0], json.loads(frames[1]), now)
            return []
        if op == OP_PFREE:
            return self._free(frames[0], forward=False)
        log.warning("hub %s: unknown peer op %r", self.node_id, op[:40])
        return []

    def tick(self, now: float) -> list[Reply | SendPeer]:
        """Liveness (dead writers, readers, source hubs), peer heartbeats, expiry."""
        out: list[Reply | SendPeer] = []
        for sid in list(self.streams):
            st = self.streams[sid]
            if now - st.last_active > self.ttl:
                del self.streams[sid]
                self.stats["freed"] += 1
                continue
            for writer, seen in list(st.writers.items()):
                if writer not in st.done_writers and now - seen > self.writer_timeout:
                    msg = (
                        f"writer {writer.decode(errors='replace')} of stream "
                        f"{sid.decode(errors='replace')} stopped heartbeating without sealing"
                    )
                    out += self._fail(st, writer, msg, now)
            for reader, rs in list(st.readers.items()):
                if now - rs.last_seen > self.writer_timeout:
                    del st.readers[reader]
                    out += self._check_abandoned(st) + self._progress(st, now)
            for src, heard in list(st.sources.items()):
                if now - heard > self.writer_timeout and not self._final(st):
                    del st.sources[src]
                    out += self._fail(
                        st, f"hub:{src}".encode(), f"node cache {src} stopped answering", now
                    )
        if now >= self.next_peer_hb:
            self.next_peer_hb = now + PEER_HB_S
            by_peer: dict[str, list[bytes]] = {}
            for sid, st in self.streams.items():
                for addr in st.subs:
                    by_peer.setdefault(addr, []).append(sid)
            for addr, sids in by_peer.items():
                out.append(SendPeer(addr, [OP_PHB, self.peer_address.encode(), *sids]))
        return out

    def status(self, sid: bytes) -> dict[str, Any]:
        """What this hub knows of a stream (for ``stream.stat``, tests and debugging)."""
        st = self.streams.get(sid)
        if st is None:
            return {"exists": False}
        sealed, failed, writers = set(), {}, 0
        for e in st.entries:
            seq, flags, declared = HEADER.unpack(e.header)
            writers = max(writers, declared)
            if flags == SEAL:
                sealed.add(e.writer.decode())
            elif flags == FAIL:
                failed[e.writer.decode()] = e.payload.decode(errors="replace")
        return {
            "exists": True,
            "base": st.base,
            "end": st.end,
            "bytes": st.cum[-1],
            "backlog": self._backlog(st),
            "readers": {r.decode(): rs.cursor for r, rs in st.readers.items()},
            "subs": {a: s.acked for a, s in st.subs.items()},
            "writers": max(writers, int(st.meta.get("writers", 0))),
            "sealed": sorted(sealed),
            "failed": failed,
            "held_acks": len(st.held_acks),
        }

    # ------------------------------------------------------------------ streams

    def _stream(self, sid: bytes, meta: dict[str, Any], now: float) -> Stream:
        st = self.streams.get(sid)
        if st is None:
            st = Stream(sid, {"type": "", "writers": 0, "readers": 0, "retain": True}, now, now)
            self.streams[sid] = st
        m = st.meta
        if meta.get("type") and not m["type"]:
            m["type"] = meta["type"]
        m["writers"] = max(int(m["writers"]), int(meta.get("writers") or 0))
        m["readers"] = max(int(m["readers"]), int(meta.get("readers") or 0))
        if meta.get("retain") is False:
            m["retain"] = False
        st.last_active = now
        return st

    def _open(self, sender: bytes, frames: list[bytes], now: float) -> list[Reply | SendPeer]:
        sid, meta = frames[0], json.loads(frames[1])
        st = self._stream(sid, meta, now)
        out: list[Reply | SendPeer] = []
        member = str(meta.get("member", "")).encode()
        if meta.get("role") == "w":
            st.writers[member] = now
        else:
            self._add_reader(st, member, now)
        shared = {k: st.meta[k] for k in ("type", "writers", "readers", "retain")}
        for addr in meta.get("push_to") or ():
            if addr != self.peer_address and addr not in st.subs:
                out.append(SendPeer(addr, [OP_PMETA, sid, json.dumps(shared).encode()]))
                st.subs[addr] = PeerSub()
                out += self._push(st, addr)
        for addr in meta.get("pull_from") or ():
            if addr != self.peer_address and addr not in st.pull_from:
                st.pull_from.add(addr)
                st.sources.setdefault(addr, now)
                out.append(
                    SendPeer(
                        addr,
                        [OP_PSUB, sid, self.peer_address.encode(), json.dumps(shared).encode()],
                    )
                )
        out.append(Reply(sender, [R_OPENED, sid, json.dumps(self.status(sid)).encode()]))
        return out

    def _close(self, frames: list[bytes], now: float) -> list[Reply | SendPeer]:
        st = self.streams.get(frames[0])
        if st is None:
            return []
        st.readers.pop(frames[1], None)
        return self._check_abandoned(st) + self._progress(st, now)

    def _add_reader(self, st: Stream, reader: bytes, now: float) -> LocalReader:
        rs = st.readers.get(reader)
        if rs is None:
            rs = st.readers[reader] = LocalReader(cursor=st.base, last_seen=now)
            st.readers_seen += 1
        return rs

    def _check_abandoned(self, st: Stream) -> list[Reply | SendPeer]:
        """Expected readers came and all left before the end: tell the writers to stop."""
        expected = int(st.meta["readers"])
        if (
            st.abandoned
            or not expected
            or st.readers
            or st.subs
            or st.readers_seen < expected
            or self._final(st)
        ):
            return []
        st.abandoned = True
        out: list[Reply | SendPeer] = [
            Reply(ident, [R_WACK, st.sid, rid, ABANDONED]) for ident, rid in st.held_acks
        ]
        st.held_acks.clear()
        return out

    def _hb(self, frames: list[bytes], now: float) -> list[Reply | SendPeer]:
        for i in range(0, len(frames) - 1, 2):
            st = self.streams.get(frames[i])
            if st is None:
                continue
            member = frames[i + 1]
            if member in st.writers:
                st.writers[member] = now
            rs = st.readers.get(member)
            if rs is not None:
                rs.last_seen = now
            st.last_active = now
        return []

    def _free(self, prefix: bytes, forward: bool) -> list[Reply | SendPeer]:
        out: list[Reply | SendPeer] = []
        if prefix and prefix not in self.tombstones:
            self.tombstones.append(prefix)
        peers: set[str] = set()
        for sid in [s for s in self.streams if s.startswith(prefix)]:
            st = self.streams.pop(sid)
            self.stats["freed"] += 1
            peers.update(st.subs)
            peers.update(st.pull_from)
            for ident, rid in st.held_acks:  # let blocked writers go: nobody will read
                out.append(Reply(ident, [R_WACK, sid, rid, ABANDONED]))
        if forward:
            out += [SendPeer(addr, [OP_PFREE, prefix]) for addr in sorted(peers)]
        return out

    # ------------------------------------------------------------------ writing

    def _append(
        self,
        st: Stream,
        writer: bytes,
        header: bytes,
        payload: bytes,
        source: str | None,
        src_pos: int,
        now: float,
    ) -> tuple[bool, list[Reply | SendPeer]]:
        seq, flags, declared = HEADER.unpack(header)
        key = (writer, seq)
        if key in st.seen:
            self.stats["duplicates"] += 1
            return False, []
        st.seen.add(key)
        size = len(payload) + len(header) + len(writer)
        st.entries.append(Entry(writer, header, payload, size, source, src_pos))
        st.cum.append(st.cum[-1] + size)
        st.last_active = now
        self.stats["entries"] += 1
        if declared > int(st.meta["writers"]):
            st.meta["writers"] = declared
        if flags in (SEAL, FAIL):
            st.done_writers.add(writer)
            if flags == SEAL:
                st.sealed.add(writer)
        out: list[Reply | SendPeer] = []
        for rs in st.readers.values():
            if rs.parked is not None:
                out += self._answer(st, rs)
        if source is None:
            for addr in st.subs:
                out += self._push(st, addr)
        return True, out

    def _write(self, sender: bytes, frames: list[bytes], now: float) -> list[Reply | SendPeer]:
        sid, writer, rid, header, payload = frames[:5]
        st = self.streams.get(sid)
        if st is None:
            if any(sid.startswith(p) for p in self.tombstones):
                return [Reply(sender, [R_WACK, sid, rid, ABANDONED])]
            st = self._stream(sid, {}, now)
        if st.abandoned:
            return [Reply(sender, [R_WACK, sid, rid, ABANDONED])]
        st.writers[writer] = now
        _, out = self._append(st, writer, header, payload, None, 0, now)
        if self._backlog(st) > self.buffer_max and HEADER.unpack(header)[1] == DELTA:
            st.held_acks.append((sender, rid))
            self.stats["held"] += 1
        else:
            out.append(Reply(sender, [R_WACK, sid, rid]))
        return out

    def _fail(self, st: Stream, writer: bytes, msg: str, now: float) -> list[Reply | SendPeer]:
        header = HEADER.pack(FAIL_SEQ, FAIL, 0)
        _, out = self._append(st, writer, header, msg.encode(), None, 0, now)
        log.warning("hub %s: %s", self.node_id, msg)
        return out

    # ------------------------------------------------------------------ reading

    def _read(self, sender: bytes, frames: list[bytes], now: float) -> list[Reply | SendPeer]:
        sid, reader, rid, cursor_b, max_b = frames[:5]
        st = self.streams.get(sid)
        if st is None:
            return [Reply(sender, [R_DATA, sid, rid, cursor_b, b"stream unknown or freed"])]
        rs = self._add_reader(st, reader, now)
        rs.last_seen = now
        st.last_active = now
        cursor = from_u64(cursor_b)
        if cursor < st.base:
            msg = b"entries before %d were freed (the stream does not retain)" % st.base
            return [Reply(sender, [R_DATA, sid, rid, cursor_b, msg])]
        moved = cursor != rs.cursor
        rs.cursor = cursor
        rs.parked = (sender, rid, from_u64(max_b) or READ_MAX_BYTES)
        out = self._answer(st, rs)
        if moved:
            out += self._progress(st, now)
        return out

    def _answer(self, st: Stream, rs: LocalReader) -> list[Reply | SendPeer]:
        """Answer ``rs``'s parked read if entries are there for it."""
        if rs.parked is None or rs.cursor >= st.end:
            return []
        ident, rid, max_bytes = rs.parked
        rs.parked = None
        frames: list[bytes] = []
        pos, budget = rs.cursor, max_bytes
        while pos < st.end:
            e = st.entry(pos)
            if frames and e.size > budget:
                break
            frames += (e.writer, e.header, e.payload)
            budget -= e.size
            pos += 1
        return [Reply(ident, [R_DATA, st.sid, rid, u64(pos), b"", *frames])]

    # ------------------------------------------------------------------ back-pressure

    def _consumer_positions(self, st: Stream) -> list[int]:
        pos = [rs.cursor for rs in st.readers.values()]
        pos += [self._sub_position(st, s) for s in st.subs.values()]
        if len(pos) < int(st.meta["readers"]):
            pos.append(st.base)  # an expected reader that has not opened yet
        return pos

    def _sub_position(self, st: Stream, sub: PeerSub) -> int:
        # The oldest local entry the peer has not consumed (entries from other hubs
        # are never pushed to a peer, so they do not hold it back).
        if sub.inflight:
            return sub.inflight[0][0]
        return self._first_unsent_local(st, sub)

    def _first_unsent_local(self, st: Stream, sub: PeerSub) -> int:
        p = max(sub.next_pos, st.base)
        while p < st.end and st.entry(p).source is not None:
            p += 1
        return p

    def _backlog(self, st: Stream) -> int:
        pos = self._consumer_positions(st)
        if not pos:
            return 0
        return st.cum[-1] - st.bytes_at(min(pos))

    def _progress(self, st: Stream, now: float) -> list[Reply | SendPeer]:
        """A consumer moved: release held writers, ack upstream hubs, free memory."""
        out: list[Reply | SendPeer] = []
        pos = self._consumer_positions(st)
        low = min(pos) if pos else st.end
        if st.held_acks and (st.cum[-1] - st.bytes_at(low)) <= self.buffer_max:
            for ident, rid in st.held_acks:
                out.append(Reply(ident, [R_WACK, st.sid, rid]))
            st.held_acks.clear()
        if st.sources or st.src_acked:
            changed: dict[str, int] = {}
            for p in range(max(st.scanned, st.base), low):
                e = st.entry(p)
                if e.source is not None:
                    changed[e.source] = e.src_pos + 1
            st.scanned = max(st.scanned, low)
            for src, upto in changed.items():
                if upto > st.src_acked.get(src, 0):
                    st.src_acked[src] = upto
                    out.append(
                        SendPeer(src, [OP_PACK, st.sid, self.peer_address.encode(), u64(upto)])
                    )
        if not st.meta["retain"] and low > st.base:
            drop = low - st.base
            if drop >= 64 or drop * 2 >= len(st.entries):
                del st.entries[:drop]
                del st.cum[:drop]
                st.base = low
        return out

    # ------------------------------------------------------------------ peers

    def _psub(self, frames: list[bytes], now: float) -> list[Reply | SendPeer]:
        sid, addr, meta = frames[0], frames[1].decode(), json.loads(frames[2])
        st = self._stream(sid, meta, now)
        # A (re-)subscription starts from the oldest retained entry; the peer dedupes.
        st.subs[addr] = PeerSub(next_pos=st.base, acked=st.base)
        return self._push(st, addr)

    def _push(self, st: Stream, addr: str) -> list[Reply | SendPeer]:
        sub = st.subs[addr]
        out: list[Reply | SendPeer] = []
        pos = max(sub.next_pos, st.base)
        while pos < st.end and sub.inflight_bytes < self.buffer_max:
            e = st.entry(pos)
            if e.source is None:
                out.append(
                    SendPeer(
                        addr,
                        [
                            OP_PDELTA,
                            st.sid,
                            self.peer_address.encode(),
                            u64(pos),
                            e.writer,
                            e.header,
                            e.payload,
                        ],
                    )
                )
                sub.inflight.append((pos, e.size))
                sub.inflight_bytes += e.size
            pos += 1
        sub.next_pos = pos
        return out

    def _pdelta(self, frames: list[bytes], now: float) -> list[Reply | SendPeer]:
        sid, src_b, pos_b, writer, header, payload = frames[:6]
        src = src_b.decode()
        st = self.streams.get(sid)
        if st is None:
            if any(sid.startswith(p) for p in self.tombstones):
                return []
            st = self._stream(sid, {}, now)
        st.sources[src] = now
        st.src_acked.setdefault(src, 0)
        added, out = self._append(st, writer, header, payload, src, from_u64(pos_b), now)
        if not added:  # a duplicate: make sure the sender is not left waiting for it
            out.append(
                SendPeer(src, [OP_PACK, sid, self.peer_address.encode(), u64(from_u64(pos_b) + 1)])
            )
        out += self._progress(st, now)
        return out

    def _pack(self, frames: list[bytes], now: float) -> list[Reply | SendPeer]:
        sid, addr, pos_b = frames[0], frames[1].decode(), frames[2]
        st = self.streams.get(sid)
        if st is None or addr not in st.subs:
            return []
        sub = st.subs[addr]
        upto = from_u64(pos_b)
        if upto > sub.acked:
            sub.acked = upto
        while sub.inflight and sub.inflight[0][0] < sub.acked:
            sub.inflight_bytes -= sub.inflight.popleft()[1]
        st.last_active = now
        out = self._push(st, addr)
        return out + self._progress(st, now)

    def _phb(self, frames: list[bytes], now: float) -> list[Reply | SendPeer]:
        src = frames[0].decode()
        for sid in frames[1:]:
            st = self.streams.get(sid)
            if st is not None:
                st.sources[src] = now
        return []

    def _final(self, st: Stream) -> bool:
        writers = int(st.meta["writers"])
        return writers > 0 and len(st.sealed) >= writers
