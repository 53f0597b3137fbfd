"""Stream handles: what ``cb.stream(...)`` returns inside a function.

A :class:`Stream` is both ends of one DDT stream, opened lazily: the first write
makes this handle a writer (one writer id per handle), the first read makes it a
reader. Writes are batched by size (``batch_bytes``) and time (``batch_ms``) into one
delta each and sent to the node cache's stream hub over ``ipc``; reads pull deltas
from the hub with a cursor. See :mod:`cache.streams` for the hub and its framing.

    out = cb.stream("words", DMap, writers=2)
    for w in text.split():
        out.update(w, 1)
    out.seal()

    inp = cb.stream("words", DMap)
    counts = inp.wait(timeout=30)          # {word: count} once both writers sealed
"""

from __future__ import annotations

import atexit
import itertools
import json
import logging
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import zmq

from cache import streams as hubproto
from cloudburst.shared.errors import CloudburstException, CloudburstTimeoutError
from lattices.ddt import (
    DCounter,
    DDTLattice,
    DLog,
    DMap,
    DRegister,
    DSet,
    DTensor,
    StreamMeta,
    decode_delta,
    encode_delta,
)

log = logging.getLogger(__name__)

HEARTBEAT_S = 0.5
#: How many writes may await the hub's acknowledgement before the writer blocks.
MAX_INFLIGHT = 4
DEFAULT_TIMEOUT_S = 60.0


class StreamError(CloudburstException):
    """A stream cannot be used (freed, unknown, wrong role, misuse)."""


class StreamWriterFailed(StreamError):
    """A writer of the stream died or aborted before sealing it."""


class StreamAbandoned(StreamError):
    """Every reader left before the end (or the call ended): stop writing."""


_ctx_lock = threading.Lock()
_ctx: zmq.Context[Any] | None = None


def _context() -> zmq.Context[Any]:
    global _ctx
    with _ctx_lock:
        if _ctx is None:
            _ctx = zmq.Context()
        return _ctx


def _dealer(address: str) -> zmq.Socket[Any]:
    sock = _context().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 1000)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.connect(address)
    return sock


class _Pump:
    """One thread per process: heartbeats for open handles, time-based flushes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.handles: weakref.WeakSet[Stream] = weakref.WeakSet()
        self.sockets: dict[str, zmq.Socket[Any]] = {}
        self.thread: threading.Thread | None = None
        self.stopping = threading.Event()

    def register(self, handle: Stream) -> None:
        with self.lock:
            self.handles.add(handle)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="ddt-pump", daemon=True)
                self.thread.start()

    def unregister(self, handle: Stream) -> None:
        with self.lock:
            self.handles.discard(handle)

    def _run(self) -> None:
        next_hb = 0.0
        while not self.stopping.is_set():
            with self.lock:
                handles = list(self.handles)
            now = time.monotonic()
            wait = 0.05
            for h in handles:
                try:
                    wait = min(wait, h._timed_flush(now))
                except Exception:  # a broken handle must not stop the heartbeats
                    log.exception("ddt: background flush failed")
            if now >= next_hb:
                next_hb = now + HEARTBEAT_S
                by_addr: dict[str, list[bytes]] = {}
                for h in handles:
                    by_addr.setdefault(h._address, []).extend(h._members())
                for addr, frames in by_addr.items():
                    if not frames:
                        continue
                    sock = self.sockets.get(addr)
                    if sock is None:
                        sock = self.sockets[addr] = _dealer(addr)
                    try:
                        sock.send_multipart([hubproto.OP_HB, *frames], zmq.NOBLOCK)
                    except zmq.ZMQError:
                        pass
            self.stopping.wait(max(0.001, wait))

    def close(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=1)
        for sock in self.sockets.values():
            sock.close(0)
        self.sockets.clear()


_pump = _Pump()
atexit.register(_pump.close)


class Stream:
    """A handle on one DDT stream (see the module docstring).

    ``kind`` is the DDT class (``DLog``, ``DCounter``, ``DMap``, ``DSet``, ``DTensor``,
    ``DRegister``); ``writers`` the number of writers that will seal it (declare it on
    the writer side); ``inner`` the value type of a ``DMap`` (``DCounter`` by default).
    """

    def __init__(
        self,
        address: str,
        sid: str,
        kind: type[DDTLattice],
        writers: int = 0,
        *,
        inner: type[DDTLattice] = DCounter,
        mode: str = "sum",
        readers: int = 0,
        retain: bool = True,
        push_to: Iterable[str] = (),
        pull_from: Iterable[str] = (),
        batch_bytes: int = 64 * 1024,
        batch_ms: float = 10.0,
        member: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        keep: bool = True,
        directory: Any = None,
    ) -> None:
        if kind not in (DLog, DCounter, DMap, DSet, DTensor, DRegister):
            raise StreamError(f"not a DDT type: {kind!r}")
        self._address = address
        self.name = sid
        self._sid = sid.encode()
        self.kind = kind
        self.inner = inner
        self.mode = mode
        self.writers = int(writers)
        self._readers_expected = int(readers)
        self._retain = retain
        self._push_to = list(push_to)
        self._pull_from = list(pull_from)
        # Optional peer directory (named streams across nodes): ``announce(sid)`` when
        # this handle starts writing, ``lookup(sid) -> set of cache peer addresses``.
        self._directory = directory
        self._next_lookup = 0.0
        self.batch_bytes = int(batch_bytes)
        self.batch_s = float(batch_ms) / 1000.0
        self._timeout = timeout
        base = member or uuid.uuid4().hex[:12]
        # writer side
        self._wlock = threading.RLock()
        self._wsock: zmq.Socket[Any] | None = None
        self._writer_id = f"w-{base}".encode()
        self._seq = 0
        self._inflight = 0
        self._rids = itertools.count(1)
        self._pending: list[Any] = []
        self._pending_bytes = 0
        self._pending_since: float | None = None
        self._item_size = 64.0  # running estimate of encoded bytes per item
        self._totals: dict[Any, int] = {}  # DCounter / DMap[DCounter] running totals
        self._dirty: dict[Any, Any] = {}
        self._total = 0
        self.sealed = False
        self._abandoned = False
        # reader side
        self._rsock: zmq.Socket[Any] | None = None
        self._reader_id = f"r-{base}".encode()
        self._cursor = 0
        self._outstanding: bytes | None = None
        self._ready: deque[tuple[bytes, bytes, bytes]] = deque()
        self._deltas: list[DDTLattice] = []
        self._state: DDTLattice = kind.bottom()
        self._declared = 0
        self._sealed_by: set[bytes] = set()
        self._failed: dict[bytes, str] = {}
        self._final = False
        self._keep = keep  # keep deltas for value(); off for pure iteration (DAG edges)
        self._closed = False

    # ------------------------------------------------------------------ writing

    def append(self, item: Any) -> None:
        """DLog: append one item."""
        self._need(DLog)
        self._add_pending(item)

    def extend(self, items: Iterable[Any]) -> None:
        """DLog: append several items, in order."""
        self._need(DLog)
        for item in items:
            self._add_pending(item)

    def add(self, item: Any = 1) -> None:
        """DCounter: add ``item`` (an int >= 0); DSet: add the element ``item``."""
        if self.kind is DCounter:
            if not isinstance(item, int) or item < 0:
                raise StreamError("DCounter.add takes an int >= 0")
            with self._wlock:
                self._total += item
                self._dirty[None] = True
                self._touch(8)
        elif self.kind is DSet:
            self._add_pending(item)
        else:
            raise StreamError(f"add() is for DCounter and DSet streams, not {self.kind.__name__}")

    def update(self, key: Any, value: Any = 1) -> None:
        """DMap: fold ``value`` into ``key`` (count for DCounter, element for DSet, ...)."""
        self._need(DMap)
        with self._wlock:
            if self.inner is DCounter:
                if not isinstance(value, int) or value < 0:
                    raise StreamError("a DMap of DCounter takes increments that are ints >= 0")
                self._totals[key] = self._totals.get(key, 0) + value
                self._dirty[key] = True
            elif self.inner is DSet:
                self._dirty.setdefault(key, set()).add(value)
            elif self.inner is DRegister:
                self._dirty[key] = value
            else:
                raise StreamError(f"DMap over {self.inner.__name__} is not supported")
            self._touch(16 + len(repr(key)))

    def update_many(self, items: Mapping[Any, Any] | Iterable[tuple[Any, Any]]) -> None:
        """DMap: ``update(key, value)`` for many pairs at once (one lock, one size check)."""
        self._need(DMap)
        pairs = items.items() if isinstance(items, Mapping) else items
        with self._wlock:
            if self.inner is DCounter:
                totals, dirty = self._totals, self._dirty
                size = 0
                for key, value in pairs:
                    if not isinstance(value, int) or value < 0:
                        raise StreamError("a DMap of DCounter takes increments that are ints >= 0")
                    totals[key] = totals.get(key, 0) + value
                    dirty[key] = True
                    size += 24
                self._touch(size)
            else:
                for key, value in pairs:
                    self.update(key, value)

    def set(self, value: Any) -> None:
        """DRegister: set the value (last writer wins); sent at once."""
        self._need(DRegister)
        self._send_delta(DRegister(time.time(), self._writer_id.decode(), value))

    def contribute(self, array: Any, mode: str | None = None) -> None:
        """DTensor: contribute this writer's array (sum or mean over writers)."""
        self._need(DTensor)
        self._send_delta(
            DTensor.contribution(
                self._writer_id.decode(), np.asarray(array), self.writers, mode or self.mode
            )
        )

    def flush(self) -> None:
        """Send what is batched now."""
        with self._wlock:
            delta = self._take_delta()
            if delta is not None:
                self._send_delta(delta)

    def seal(self, timeout: float | None = None) -> None:
        """Flush and declare this writer done; waits for the hub to take everything."""
        with self._wlock:
            if self.sealed:
                return
            try:
                self.flush()
                self._send_entry(hubproto.SEAL, b"")
                self._drain_acks(0, timeout)
            except StreamAbandoned:
                pass  # nobody reads any more: nothing left to deliver
            self.sealed = True

    def abort(self, message: str) -> None:
        """Mark this writer failed: readers raise :class:`StreamWriterFailed`."""
        with self._wlock:
            if self.sealed:
                return
            self._pending.clear()
            self._dirty.clear()
            try:
                self._send_entry(hubproto.FAIL, message.encode())
                self._drain_acks(0, 5.0)
            except StreamAbandoned:
                pass
            self.sealed = True

    # ------------------------------------------------------------------ reading

    def deltas(self, timeout: float | None = None) -> Iterator[DDTLattice]:
        """Each delta as it arrives (blocking up to ``timeout`` s for the next one).

        Ends when all declared writers sealed; raises :class:`StreamWriterFailed` if a
        writer died and :class:`CloudburstTimeoutError` if nothing came in time.
        """
        while True:
            delta = self._next_delta(timeout)
            if delta is None:
                return
            yield delta

    def items(self, timeout: float | None = None) -> Iterator[Any]:
        """DLog: the items as they arrive (each writer's in order)."""
        self._need(DLog)
        for delta in self.deltas(timeout):
            assert isinstance(delta, DLog)
            for batch in delta.batches.values():
                yield from batch

    def __iter__(self) -> Iterator[Any]:
        if self.kind is DLog:
            return self.items()
        return self.deltas()

    def value(self) -> Any:
        """The value merged from every delta received so far (does not block long)."""
        # Everything the hub holds now: read until an answer does not come at once
        # (the hub parks a read only when it has nothing new).
        give_up = time.monotonic() + 2.0
        while self._poll_ready(0.05) and time.monotonic() < give_up:
            self._merged()
            if self._final:
                break
        return self._merged().reveal()

    def wait(self, timeout: float | None = None) -> Any:
        """The final value, once all declared writers have sealed."""
        for _ in self.deltas(timeout):
            pass
        return self._merged().reveal()

    def lattice(self) -> DDTLattice:
        """The merged DDT value received so far (not revealed)."""
        return self._merged()

    @property
    def abandoned(self) -> bool:
        """Whether the hub said every reader left before the end (writes now raise)."""
        return self._abandoned

    @property
    def meta(self) -> StreamMeta:
        """What this reader knows of the stream: declared, sealed and failed writers."""
        return StreamMeta(
            self._declared,
            (w.decode() for w in self._sealed_by),
            (w.decode() for w in self._failed),
        )

    @property
    def is_writer(self) -> bool:
        """Whether this handle has written (or batched) anything."""
        return self._wsock is not None or bool(self._pending) or bool(self._dirty)

    @property
    def final(self) -> bool:
        """Whether every declared writer has sealed (as far as this reader knows)."""
        return self._final

    def close(self) -> None:
        """Stop reading (the reader no longer holds writers back) and release sockets."""
        if self._closed:
            return
        self._closed = True
        _pump.unregister(self)
        if self._rsock is not None:
            try:
                self._rsock.send_multipart([hubproto.OP_CLOSE, self._sid, self._reader_id])
            except zmq.ZMQError:
                pass
            self._rsock.close()
            self._rsock = None
        with self._wlock:
            if self._wsock is not None:
                self._wsock.close()
                self._wsock = None

    def __del__(self) -> None:
        # A handle dropped without close(): release its sockets quietly.
        for name in ("_rsock", "_wsock"):
            sock = getattr(self, name, None)
            if sock is not None and not sock.closed:
                try:
                    sock.close(linger=1000)
                except Exception:  # interpreter shutdown
                    pass

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Stream({self.name!r}, {self.kind.__name__}, writers={self.writers})"

    # ------------------------------------------------------------------ internals

    def _need(self, kind: type[DDTLattice]) -> None:
        if self.kind is not kind:
            raise StreamError(f"this is a {self.kind.__name__} stream, not a {kind.__name__}")
        if self.sealed:
            raise StreamError(f"stream {self.name!r}: this writer has sealed it already")

    def _members(self) -> list[bytes]:
        out: list[bytes] = []
        if self._wsock is not None and not self.sealed:
            out += (self._sid, self._writer_id)
        if self._rsock is not None and not self._closed:
            out += (self._sid, self._reader_id)
        return out

    def _open_meta(self, role: str) -> bytes:
        return json.dumps(
            {
                "role": role,
                "member": (self._writer_id if role == "w" else self._reader_id).decode(),
                "type": self.kind.type_name,
                "writers": self.writers,
                "readers": self._readers_expected,
                "retain": self._retain,
                "push_to": self._push_to if role == "w" else [],
                "pull_from": self._pull_from if role == "r" else [],
            }
        ).encode()

    def _writer_sock(self) -> zmq.Socket[Any]:
        if self._wsock is None:
            if self._directory is not None:
                try:
                    self._directory.announce(self.name)
                except Exception:
                    log.exception("ddt: announcing stream %s failed", self.name)
            sock = _dealer(self._address)
            sock.send_multipart([hubproto.OP_OPEN, self._sid, self._open_meta("w")])
            self._wsock = sock
            self._expect(sock, hubproto.R_OPENED, self._timeout)
            _pump.register(self)
        return self._wsock

    def _reader_sock(self) -> zmq.Socket[Any]:
        if self._closed:
            raise StreamError(f"stream {self.name!r} is closed")
        if self._rsock is None:
            self._refresh_sources(time.monotonic(), send=False)
            sock = _dealer(self._address)
            sock.send_multipart([hubproto.OP_OPEN, self._sid, self._open_meta("r")])
            self._rsock = sock
            self._expect(sock, hubproto.R_OPENED, self._timeout)
            _pump.register(self)
        return self._rsock

    def _refresh_sources(self, now: float, send: bool = True) -> None:
        """Ask the directory for writers' caches not pulled from yet (at most 2/s)."""
        if self._directory is None or now < self._next_lookup:
            return
        self._next_lookup = now + 0.5
        try:
            found = set(self._directory.lookup(self.name))
        except Exception:
            log.exception("ddt: looking up stream %s failed", self.name)
            return
        new = sorted(found - set(self._pull_from))
        if not new:
            return
        self._pull_from += new
        if send and self._rsock is not None:
            # The hub subscribes to the new sources; its "opened" answer is skipped.
            self._rsock.send_multipart([hubproto.OP_OPEN, self._sid, self._open_meta("r")])

    def _expect(self, sock: zmq.Socket[Any], op: bytes, timeout: float) -> list[bytes]:
        if not sock.poll(int(timeout * 1000)):
            raise CloudburstTimeoutError(
                f"stream {self.name!r}: the node cache at {self._address} did not answer "
                f"within {timeout:.0f}s (is the cache running with streams?)"
            )
        frames: list[bytes] = sock.recv_multipart()
        if frames[0] != op:
            raise StreamError(f"stream {self.name!r}: unexpected reply {frames[:3]!r}")
        return frames

    def _touch(self, nbytes: int) -> None:
        if self._pending_since is None:
            self._pending_since = time.monotonic()
        self._pending_bytes += nbytes
        if self._pending_bytes >= self.batch_bytes:
            self.flush()
        elif time.monotonic() - self._pending_since >= self.batch_s:
            self.flush()

    def _add_pending(self, item: Any) -> None:
        with self._wlock:
            self._pending.append(item)
            if isinstance(item, bytes | str | bytearray):
                size = len(item) + 16
            elif isinstance(item, np.ndarray):
                size = item.nbytes + 64
            else:
                size = int(self._item_size)
            self._touch(size)

    def _timed_flush(self, now: float) -> float:
        """Called by the pump: flush a batch older than ``batch_ms``; next check in s.

        Never blocks (the pump also sends the heartbeats): a writer held by
        back-pressure keeps its batch until the user's next write or seal.
        """
        since = self._pending_since
        if since is None or self.sealed or self._abandoned:
            return self.batch_s if self.batch_s > 0 else 0.05
        if now - since < self.batch_s:
            return self.batch_s - (now - since)
        if self._wlock.acquire(blocking=False):
            try:
                if self._pending_since is not None and not self.sealed:
                    self._drain_acks(1 << 30, 0)
                    if self._inflight < MAX_INFLIGHT:
                        delta = self._take_delta()
                        if delta is not None:
                            self._send_delta(delta, block=False)
            finally:
                self._wlock.release()
        return self.batch_s

    def _take_delta(self) -> DDTLattice | None:
        """The batched writes as one delta (None if nothing is batched)."""
        writer = self._writer_id.decode()
        delta: DDTLattice | None = None
        if self.kind is DLog and self._pending:
            delta = DLog.batch(writer, self._seq, self._pending)
        elif self.kind is DSet and self._pending:
            delta = DSet(self._pending)
        elif self.kind is DCounter and self._dirty:
            delta = DCounter({writer: self._total})
        elif self.kind is DMap and self._dirty:
            if self.inner is DCounter:
                totals = self._totals
                make = DCounter.from_plain  # trusted: totals were checked on update
                entries: dict[Any, DDTLattice] = {k: make({writer: totals[k]}) for k in self._dirty}
            elif self.inner is DSet:
                entries = {k: DSet(v) for k, v in self._dirty.items()}
            else:
                ts = time.time()
                entries = {k: DRegister(ts, writer, v) for k, v in self._dirty.items()}
            delta = DMap(entries)
        self._pending = []
        self._dirty = {}
        self._pending_bytes = 0
        self._pending_since = None
        return delta

    def _send_delta(self, delta: DDTLattice, block: bool = True) -> None:
        with self._wlock:
            payload = encode_delta(delta)
            if self.kind is DLog:
                n = len(delta)  # type: ignore[arg-type]
                if n:
                    self._item_size = 0.5 * self._item_size + 0.5 * (len(payload) / n)
            self._send_entry(hubproto.DELTA, payload, block)

    def _send_entry(self, flags: int, payload: bytes, block: bool = True) -> None:
        if self._abandoned:
            raise StreamAbandoned(f"stream {self.name!r}: its readers left before the end")
        sock = self._writer_sock()
        header = hubproto.HEADER.pack(self._seq, flags, self.writers)
        self._seq += 1
        rid = hubproto.u64(next(self._rids))
        sock.send_multipart(
            [hubproto.OP_WRITE, self._sid, self._writer_id, rid, header, payload], copy=False
        )
        self._inflight += 1
        self._drain_acks(MAX_INFLIGHT if block else 1 << 30, None)

    def _drain_acks(self, allowed: int, timeout: float | None) -> None:
        """Collect acknowledgements until at most ``allowed`` writes are unacknowledged."""
        sock = self._wsock
        if sock is None:
            return
        limit = self._timeout if timeout is None else timeout
        while self._inflight > 0:
            blocking = self._inflight > allowed
            if not sock.poll(int(limit * 1000) if blocking else 0):
                if not blocking:
                    return
                raise CloudburstTimeoutError(
                    f"stream {self.name!r}: writer blocked for {limit:.0f}s "
                    "(readers too slow or gone: back-pressure)"
                )
            frames = sock.recv_multipart()
            if frames[0] == hubproto.R_WACK:
                self._inflight -= 1
                if len(frames) > 3 and frames[3] == hubproto.ABANDONED:
                    self._abandoned = True

    def _poll_ready(self, timeout: float) -> bool:
        """Make sure a read is outstanding; receive its answer if it comes in time."""
        sock = self._reader_sock()
        if self._ready:
            return True
        if self._final:
            return False
        if self._outstanding is None:
            self._request(sock)
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            self._refresh_sources(now)
            left = max(0.0, deadline - now)
            if self._directory is not None:
                left = min(left, 0.5)  # wake up to look for new writers' caches
            if not sock.poll(int(left * 1000)):
                if time.monotonic() < deadline:
                    continue
                return False
            frames = sock.recv_multipart(copy=True)
            if frames[0] != hubproto.R_DATA or frames[2] != self._outstanding:
                continue  # a stale answer to a read we gave up on
            self._outstanding = None
            if frames[4]:
                raise StreamError(f"stream {self.name!r}: {frames[4].decode()}")
            self._cursor = hubproto.from_u64(frames[3])
            body = frames[5:]
            for i in range(0, len(body), 3):
                self._ready.append((body[i], body[i + 1], body[i + 2]))
            # Ask for more right away so it travels while the caller works. At the
            # end of the stream the request still matters: it reports this reader's
            # final cursor, which releases writers held by back-pressure (a single
            # read may take more than the buffer bound). The hub parks it harmlessly.
            self._request(sock)
            return bool(self._ready)

    def _request(self, sock: zmq.Socket[Any]) -> None:
        rid = hubproto.u64(next(self._rids))
        self._outstanding = rid
        sock.send_multipart(
            [
                hubproto.OP_READ,
                self._sid,
                self._reader_id,
                rid,
                hubproto.u64(self._cursor),
                hubproto.u64(max(self.batch_bytes * 8, 1 << 20)),
            ]
        )

    def _pop_entry(self) -> DDTLattice | None:
        """Process the oldest received entry; the delta it holds (None for a seal)."""
        writer, header, payload = self._ready.popleft()
        _, flags, declared = hubproto.HEADER.unpack(header)
        self._declared = max(self._declared, declared, self.writers)
        if flags == hubproto.DELTA:
            delta = decode_delta(payload)
            if self._keep:
                self._deltas.append(delta)
            return delta
        if flags == hubproto.SEAL:
            self._sealed_by.add(writer)
            if self._declared > 0 and len(self._sealed_by) >= self._declared:
                self._final = True
        elif flags == hubproto.FAIL:
            self._failed[writer] = payload.decode(errors="replace")
            raise StreamWriterFailed(f"stream {self.name!r}: {self._failed[writer]}")
        return None

    def _next_delta(self, timeout: float | None) -> DDTLattice | None:
        limit = self._timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while True:
            while self._ready:
                delta = self._pop_entry()
                if delta is not None:
                    return delta
            if self._final:
                return None
            left = deadline - time.monotonic()
            if left <= 0 or not self._poll_ready(left):
                if self._ready:
                    continue
                raise CloudburstTimeoutError(
                    f"stream {self.name!r}: no delta within {limit:.1f}s "
                    f"({len(self._sealed_by)}/{self._declared or '?'} writers sealed)"
                )

    def _merged(self) -> DDTLattice:
        # Take in what already arrived without blocking, then fold it in.
        while self._ready:
            self._pop_entry()
        if self._deltas:
            self._state = type(self._state).join([self._state, *self._deltas])
            self._deltas = []
        return self._state
