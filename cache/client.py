"""Executor-side client of the node cache: :class:`CacheClient`.

Same ``get``/``put`` surface as :class:`anna.client.AnnaTcpClient`, so executor code
can take either::

    from cache.client import CacheClient
    from lattices import LWWPairLattice, make_timestamp

    cc = CacheClient("node0", cfg, kvs_addr="127.0.0.1:6450")
    cc.put("k", LWWPairLattice(make_timestamp(), b"v"))   # True once the KVS acked
    cc.get(["k"])["k"].reveal()                           # b"v" (now cached)
    cc.cached_key_sizes()                                 # {"k": 14} for the heartbeat
    cc.close()

Every call is bounded by ``timeout``. When the cache is unreachable (not started, dead,
or not answering in time) the call goes straight to the KVS through a lazily created
:class:`AnnaTcpClient`, with one logged warning per outage; the client returns to the
cache by itself once it is reachable again. It never hangs.

Thread-safe (one lock around the socket); one client per process is enough.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from cache import pins, protocol
from cache.logic import put_slack
from cache.shm import SHM_DIR, lww_file_pieces, map_segment, put_prefix, write_segment
from cloudburst.shared import serializer
from cloudburst.shared.config import Config, load_config
from cloudburst.shared.errors import CloudburstException, CloudburstTimeoutError, WireError
from cloudburst.shared.logs import CURRENT_CALL
from cloudburst.shared.spans import lww_value_span
from lattices import codec
from lattices.base import Lattice, LatticeError
from lattices.lww import LWWPairLattice, make_timestamp

log = logging.getLogger(__name__)

#: How long a fresh client waits for its ipc connection before using the fallback.
CONNECT_WAIT_S = 0.5

_ids = itertools.count()
_put_files = itertools.count()
#: After the cache refused to adopt a segment, values are sent this long.
ADOPT_RETRY_S = 60.0
#: :meth:`CacheClient.put_direct` of a payload this large goes through the cache.
DIRECT_PUT_BYTES = 64 * 1024


class CacheError(CloudburstException):
    """The cache answered with an error for a key (e.g. the KVS timed out)."""


class CacheClient:
    """Talks to this node's cache over ``ipc://``; falls back to the KVS directly.

    ``node_id`` + ``cfg.cache.ipc_dir`` name the socket (or pass ``address``);
    ``kvs_addr`` (``host[:port]``, default ``cfg.ip:cfg.kvs.routing_port``) is used
    only by the fallback; ``timeout`` bounds each call (default: the KVS request
    timeout plus one second, since a miss waits for the KVS).
    """

    def __init__(
        self,
        node_id: str | None = None,
        cfg: Config | None = None,
        *,
        address: str | None = None,
        kvs_addr: str | None = None,
        timeout: float | None = None,
        ip: str | None = None,
        context: zmq.Context[Any] | None = None,
        local_bytes: int | None = None,
    ) -> None:
        self.cfg = cfg or load_config()
        if address is None:
            if node_id is None:
                raise ValueError("CacheClient needs a node_id or an address")
            address = protocol.ipc_address(self.cfg.cache.ipc_dir, node_id)
        self.address = address
        self.kvs_addr = kvs_addr or f"{self.cfg.ip}:{self.cfg.kvs.routing_port}"
        self.timeout = timeout if timeout is not None else self.cfg.kvs.request_timeout_s + 1.0
        self.ip = ip
        self.ctx = context or zmq.Context.instance()
        self._lock = threading.RLock()
        n = next(_ids)
        self._prefix = f"{os.getpid()}-{n}-".encode()
        # The cache reads the pid in the identity to drop a dead worker's pins.
        self._identity = f"p{os.getpid()}-{n}".encode()
        # Shared-memory values (cache/shm.py): ask with getm, map MAPPED answers.
        self.shm = self.cfg.cache.shm_threshold_bytes > 0
        self._pins: list[bytes] = []  # segments mapped since the last release_pins()
        #: put_direct's acknowledged values the cache has not been told yet
        self._notes: list[tuple[str, int, bytes]] = []
        # cb.put of large values through segments (put_value); after a refusal (shared
        # memory off, another filesystem) not tried again before this time.
        self._adopt_after = 0.0
        self._seq = itertools.count()
        self._sock: zmq.Socket[Any] | None = None
        self._monitor: zmq.Socket[Any] | None = None
        self._up = False
        self._ever_up = False
        self._waited = False
        self._fallback: Any = None
        self._degraded = False
        self.fallback_calls = 0
        # Decoded lattices of this process, revalidated with the cache on every read
        # (conditional GET): a hit moves no payload and decodes nothing.
        self.local_bytes = (
            self.cfg.cache.capacity_bytes // 2 if local_bytes is None else local_bytes
        )
        self._memo: OrderedDict[str, tuple[bytes, Lattice[Any], int]] = OrderedDict()
        self._memo_used = 0
        self._open()

    # ---- plumbing ---------------------------------------------------------------------

    def _open(self) -> None:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        # No queueing toward an absent peer: a send fails at once when the cache is down.
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.RECONNECT_IVL, 50)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 500)
        sock.setsockopt(zmq.ROUTING_ID, self._identity)
        self._monitor = sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
        )
        sock.connect(self.address)
        self._sock = sock
        self._up = False
        self._poller = zmq.Poller()
        self._poller.register(sock, zmq.POLLIN)
        self._poller.register(self._monitor, zmq.POLLIN)

    def _drain_monitor(self, wait: float = 0.0) -> None:
        """Apply pending connect/disconnect events; while down, wait up to ``wait``."""
        mon = self._monitor
        assert mon is not None
        deadline = time.monotonic() + wait
        while True:
            try:
                if not int(mon.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                    raise zmq.Again
                event = recv_monitor_message(mon, zmq.NOBLOCK)
            except zmq.Again:
                remaining = deadline - time.monotonic()
                if self._up or remaining <= 0 or not mon.poll(int(remaining * 1000) + 1):
                    return
                continue
            # With IMMEDIATE the pipe exists only once the ZMTP handshake is done.
            if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._up = self._ever_up = True
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                self._up = False

    def _next_rid(self) -> bytes:
        call = CURRENT_CALL[0]  # the worker's current call: the cache logs it (DEBUG)
        rid = self._prefix + str(next(self._seq)).encode()
        return rid + b"@" + call.encode() if call else rid

    def _request(self, frames: list[bytes], timeout: float | None = None) -> list[bytes] | None:
        """Send one request, return the reply body; None if the cache is unreachable."""
        sock = self._sock
        if sock is None:
            raise CloudburstException("CacheClient is closed")
        timeout = self.timeout if timeout is None else timeout
        if self._notes:  # the cache reads them before this request
            self._send_notes()
        first = not self._waited
        self._waited = True
        self._drain_monitor(CONNECT_WAIT_S if first else 0.0)
        if not self._up:
            return None
        rid = frames[1]
        try:
            sock.send_multipart(frames, zmq.NOBLOCK, copy=sum(map(len, frames)) < 65536)
        except zmq.Again:
            return None
        deadline = time.monotonic() + timeout
        poller = self._poller
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning("cache %s did not answer within %.1fs", self.address, timeout)
                return None
            events = dict(poller.poll(max(1, int(remaining * 1000))))
            if self._monitor in events:
                self._drain_monitor()
                if not self._up:
                    return None
            if sock in events:
                while True:
                    try:
                        reply = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    if len(reply) >= 2 and reply[1] == rid:
                        _, _, body = protocol.decode_reply(reply)
                        return body
                    # a late answer to an earlier request that timed out: drop it

    def _kvs(self) -> Any:
        if self._fallback is None:
            from anna.client import AnnaTcpClient
            from cloudburst.shared import security

            sec = security.current()
            self._fallback = AnnaTcpClient(
                self.kvs_addr,
                ip=self.ip,
                timeout=self.cfg.kvs.request_timeout_s,
                context=self.ctx,
                curve=None if sec is None else sec.zmtp_client(),
            )
        return self._fallback

    def _degrade(self, what: str) -> Any:
        """The cache is unreachable: log once per outage and return the KVS client."""
        if not self._degraded:
            self._degraded = True
            log.warning(
                "node cache %s unreachable; %s goes directly to the KVS at %s (fallback)",
                self.address,
                what,
                self.kvs_addr,
            )
        self.fallback_calls += 1
        return self._kvs()

    def _recovered(self) -> None:
        if self._degraded:
            self._degraded = False
            log.warning("node cache %s reachable again; leaving the KVS fallback", self.address)

    @property
    def using_fallback(self) -> bool:
        """Whether the last call went to the KVS directly."""
        return self._degraded

    # ---- public API ---------------------------------------------------------------------

    def get(
        self, keys: str | Iterable[str], timeout: float | None = None
    ) -> dict[str, Lattice[Any] | None]:
        """``{key: lattice or None}`` (None: never written), through the cache."""
        klist = [keys] if isinstance(keys, str) else list(keys)
        if not klist:
            return {}
        memo = self._memo
        with self._lock:
            if self.local_bytes > 0 or self.shm:
                known = [memo[k][0] if k in memo else b"" for k in klist]
                op = protocol.OP_GETM if self.shm else protocol.OP_GETV
                frames = protocol.encode_getv(self._next_rid(), klist, known, op)
            else:
                frames = protocol.encode_get(self._next_rid(), klist)
            body = self._request(frames, timeout)
            if body is None:
                return self._degrade("GET").get(klist)  # type: ignore[no-any-return]
            self._recovered()
            if self.local_bytes > 0 or self.shm:
                results = protocol.decode_getv_body(body, len(klist))
            else:
                results = [(*r, b"") for r in protocol.decode_get_body(body, len(klist))]
            out: dict[str, Lattice[Any] | None] = {}
            for key, (ltype, err, payload, version) in zip(klist, results, strict=True):
                if err == protocol.NOT_MODIFIED and key in memo:
                    memo.move_to_end(key)
                    out[key] = memo[key][1]
                elif err == protocol.NO_ERROR:
                    lattice = codec.from_payload(ltype, payload)
                    out[key] = lattice
                    if version:
                        self._remember(key, version, lattice, len(payload))
                elif err == protocol.MAPPED:
                    self._pins.append(bytes(payload).rsplit(b":", 1)[0])
                    lattice = self._map(bytes(payload), self.cfg.cache.shm_dir)
                    out[key] = lattice
                    # The mapping stays valid after the cache unlinks the file.
                    self._remember(key, version, lattice, len(lattice.value))
                elif err == protocol.KEY_DNE:
                    self._forget(key)
                    out[key] = None
                elif err == protocol.TIMEOUT:
                    raise CloudburstTimeoutError(
                        f"cache {self.address}: the KVS did not answer for {key!r}"
                    )
                else:
                    raise CacheError(f"cache {self.address}: GET {key!r} failed with error {err}")
            return out

    @staticmethod
    def _map(ref: bytes, directory: str = SHM_DIR) -> Lattice[Any]:
        """The LWW lattice in segment ``b"name:offset"``, its value a read-only view."""
        name, _, off = ref.rpartition(b":")
        try:
            view = map_segment(name.decode(), int(off), directory)
            ts, start, end = lww_value_span(view)
        except (OSError, ValueError) as exc:
            raise CacheError(f"cannot map shared-memory segment {ref!r}: {exc}") from None
        return LWWPairLattice._make(ts, view[start:end])  # type: ignore[arg-type]

    def release_pins(self) -> None:
        """Tell the cache that the segments read since the last call may be dropped
        (mappings kept by this process stay valid; the executor calls this after each
        function call), and the values it PUT with :meth:`put_direct`. No reply is
        awaited."""
        if self._notes:
            with self._lock:
                if self._notes:
                    self._send_notes()
        if not self._pins:
            return
        with self._lock:
            names, self._pins = self._pins, []
            if self._sock is None or not self._up:
                return  # a restarted cache has no pins of ours
            try:
                self._sock.send_multipart(
                    [protocol.OP_RELEASE, self._next_rid(), *names], zmq.NOBLOCK
                )
            except zmq.ZMQError:
                pass

    def _forget(self, key: str) -> None:
        old = self._memo.pop(key, None)
        if old is not None:
            self._memo_used -= old[2]

    def _remember(self, key: str, version: bytes, lattice: Lattice[Any], size: int) -> None:
        self._forget(key)
        if size > self.local_bytes:
            return
        self._memo[key] = (version, lattice, size)
        self._memo_used += size
        while self._memo_used > self.local_bytes:
            _, (_, _, old_size) = self._memo.popitem(last=False)
            self._memo_used -= old_size

    def put_errors(
        self,
        keys: str | Sequence[str],
        values: Lattice[Any] | Sequence[Lattice[Any]],
        timeout: float | None = None,
    ) -> dict[str, int]:
        """PUT through the cache; ``{key: AnnaError}`` (0 acknowledged, 4 LATTICE, ...)."""
        if isinstance(keys, str):
            klist, vlist = [keys], [values]
        else:
            klist, vlist = list(keys), list(values)  # type: ignore[arg-type]
            if len(klist) != len(vlist):
                raise ValueError(f"{len(klist)} keys but {len(vlist)} values")
        tuples: list[tuple[str, int, bytes]] = []
        for k, v in zip(klist, vlist, strict=True):
            try:
                ltype, payload = codec.to_payload(v)  # type: ignore[arg-type]
            except LatticeError as exc:
                raise CacheError(f"cannot PUT {k!r}: {exc}") from None
            tuples.append((k, ltype, payload))
        timeout = self._put_timeout(sum(len(t[2]) for t in tuples), timeout)
        with self._lock:
            body = self._request(protocol.encode_put(self._next_rid(), tuples), timeout)
            if body is None:
                kvs = self._degrade("PUT")
                res = kvs.put(klist, vlist)
                return {k: protocol.NO_ERROR if ok else protocol.LATTICE for k, ok in res.items()}
            self._recovered()
        if len(body) != 1 or len(body[0]) != len(tuples):
            raise WireError("cache put reply: bad error vector")
        return {k: e for (k, _, _), e in zip(tuples, body[0], strict=True)}

    def put_value(self, key: str, obj: Any, timeout: float | None = None) -> bool:
        """PUT a user value (``cb.put``): True once the KVS acknowledged it.

        A value whose body is at least ``cache.shm_threshold_bytes`` (a numpy array,
        ``bytes``, a pickle with out-of-band buffers) is serialized **once**, straight
        into a new shared-memory segment (the LWW payload ``put`` would send, byte for
        byte), which the cache adopts (``adopt`` op: no copy; it becomes the cached
        entry once the KVS acknowledged). Anything else, or any failure to use a
        segment, takes the ordinary ``put`` (a dead worker's file: the cache removes
        files of dead processes every second; after a refusal, ``ADOPT_RETRY_S``).
        """
        from cloudburst.shared.values import to_lattice

        adopt = self.shm and time.monotonic() >= self._adopt_after
        if not adopt or isinstance(obj, Lattice | set | frozenset):
            return bool(self.put(key, to_lattice(obj), timeout))
        lay = serializer.bytes_or_layout(obj, self.cfg.cache.shm_threshold_bytes)
        if isinstance(lay, bytes):  # small: the socket path (serialized once)
            return bool(self.put(key, LWWPairLattice(make_timestamp(), lay), timeout))
        size, offset, pieces = lww_file_pieces(make_timestamp(), lay)
        directory = self.cfg.cache.shm_dir
        name = f"{put_prefix(self.address)}{os.getpid()}-{next(_put_files)}"
        try:
            write_segment(directory, name, size, pieces)
        except OSError as exc:  # /dev/shm full or missing: the socket path
            log.warning("cb.put of %r: no shared-memory segment (%s); sending it", key, exc)
            return bool(self.put(key, to_lattice(obj), timeout))
        body_frames: list[bytes] | None = None
        refused = ""
        timeout = self._put_timeout(size, timeout)
        try:
            with self._lock:
                frames = protocol.encode_adopt(self._next_rid(), key, name, offset)
                try:
                    body_frames = self._request(frames, timeout)
                except WireError as exc:
                    refused = str(exc)
                if body_frames is not None:
                    self._recovered()
        finally:
            if body_frames is None:  # not taken over: ours to remove
                try:
                    os.unlink(os.path.join(directory, name))
                except FileNotFoundError:
                    pass
        if refused:
            log.warning("cache refused a shared-memory put (%s); sending values", refused)
            self._adopt_after = time.monotonic() + ADOPT_RETRY_S
            return bool(self.put(key, to_lattice(obj), timeout))
        if body_frames is None:
            kvs = self._degrade("PUT")
            return bool(kvs.put(key, to_lattice(obj)))
        if len(body_frames) != 1 or len(body_frames[0]) != 1:
            raise WireError("cache adopt reply: bad error vector")
        return body_frames[0][0] == protocol.NO_ERROR

    def _put_timeout(self, size: int, timeout: float | None) -> float:
        """A PUT's timeout: the cache's own deadline grows with the payload
        (``cache.logic.put_slack``), so must ours."""
        return (self.timeout if timeout is None else timeout) + put_slack(size)

    def put(
        self,
        keys: str | Sequence[str],
        values: Lattice[Any] | Sequence[Lattice[Any]],
        timeout: float | None = None,
    ) -> bool | dict[str, bool]:
        """PUT one key (-> bool) or several (-> ``{key: bool}``); True once the KVS acked.

        A lattice of another type than the key's stored one is refused (False; the
        AnnaError is LATTICE, see :meth:`put_errors`).
        """
        errs = self.put_errors(keys, values, timeout)
        if isinstance(keys, str):
            return errs[keys] == protocol.NO_ERROR
        return {k: e == protocol.NO_ERROR for k, e in errs.items()}

    def put_direct(self, key: str, lattice: Lattice[Any], timeout: float | None = None) -> bool:
        """PUT one key straight to the KVS; the cache learns the acknowledged value after
        the call (:meth:`release_pins` sends it as a ``note``, as does this client's next
        request, which it precedes): it then holds it as if the PUT had gone through it.
        True once the KVS acknowledged (False: a LATTICE error).

        The executor stores a DAG's ``output_key`` this way: one round trip to the shard
        (this client's own KVS client, as ``CloudburstConnection.put_object``) instead of
        two libzmq hops more through the cache (worker -> cache -> shard -> cache ->
        worker), which cost more than the PUT itself (docs/benchmarks.md). A payload of
        ``DIRECT_PUT_BYTES`` or more takes :meth:`put` (a note would copy it again).
        """
        try:
            ltype, payload = codec.to_payload(lattice)
        except LatticeError as exc:
            raise CacheError(f"cannot PUT {key!r}: {exc}") from None
        if len(payload) >= DIRECT_PUT_BYTES:
            return bool(self.put(key, lattice, timeout))
        with self._lock:  # the KVS client is not thread-safe
            ok = bool(self._kvs().put(key, lattice, timeout=timeout))
            if ok:
                self._notes.append((key, ltype, payload))
        return ok

    def _send_notes(self) -> None:
        """Send the pending notes of :meth:`put_direct` (under the lock)."""
        notes, self._notes = self._notes, []
        sock = self._sock
        if sock is None:
            return
        try:  # (no connection: ZMQ_IMMEDIATE refuses it; a new cache reads the KVS)
            sock.send_multipart(protocol.encode_note(self._next_rid(), notes), zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    # ---- session pins (SINGLE/MULTI DAG calls: cache/pins.py) ----------------------------

    def pin_get(
        self, call: str, keys: Sequence[str], locations: Sequence[str]
    ) -> list[tuple[int, int, bytes]] | None:
        """``(status, lattice_type, payload)`` per key (``cache.pins`` OLD/NEW/MISS/LOST);
        None if the cache is unreachable (the caller keeps the versions itself)."""
        with self._lock:
            body = self._request(pins.encode_pin_get(self._next_rid(), call, keys, locations))
        return None if body is None else pins.decode_pin_get_body(body, len(keys))

    def pin_put(
        self, call: str, key: str, ltype: int, payload: bytes, overwrite: bool = False
    ) -> tuple[int, bytes] | None:
        """Pin a version for ``call`` (first one wins unless ``overwrite``); the pinned
        ``(lattice_type, payload)``, or None if the cache is unreachable."""
        with self._lock:
            frames = pins.encode_pin_put(self._next_rid(), call, key, ltype, payload, overwrite)
            body = self._request(frames)
        if body is None:
            return None
        if len(body) != 2 or len(body[0]) != 1:
            raise WireError("pin.put reply: bad frames")
        return body[0][0], bytes(body[1])

    def pin_release(self, call: str, holders: Sequence[str]) -> None:
        """Drop ``call``'s pins in this cache and in the caches ``holders`` (peer
        addresses); no reply is awaited."""
        with self._lock:
            if self._sock is None or not self._up:
                return  # the pins expire (cache ttl)
            try:
                self._sock.send_multipart(
                    pins.encode_pin_release(self._next_rid(), call, holders), zmq.NOBLOCK
                )
            except zmq.ZMQError:
                pass

    def peer_address(self) -> str:
        """The cache's peer address (where other caches fetch this node's pins); "" if
        unreachable."""
        if not getattr(self, "_peer_address", ""):
            info = self.info()
            self._peer_address = str(info.get("peer_address", "")) if info else ""
        return self._peer_address

    def _json(self, op: bytes, timeout: float) -> dict[str, Any] | None:
        # Never wait behind a long read of another thread (a cold miss of large
        # values): the heartbeat thread asks for the summary and must not stall.
        if not self._lock.acquire(timeout=timeout):
            return None
        try:
            body = self._request(protocol.encode_simple(op, self._next_rid()), timeout)
        finally:
            self._lock.release()
        if body is None or not body:
            return None
        out: dict[str, Any] = json.loads(body[0])
        return out

    def cached_key_sizes(self, timeout: float = 0.5) -> dict[str, int] | None:
        """``{key: bytes}`` the node cache holds (heartbeat summary); None if unreachable."""
        return self._json(protocol.OP_KEYS, timeout)

    def stats(self, timeout: float = 1.0) -> dict[str, Any] | None:
        """The cache's counters (hits, misses, evictions, bytes, ...); None if unreachable."""
        return self._json(protocol.OP_STATS, timeout)

    def info(self, timeout: float = 1.0) -> dict[str, Any] | None:
        """The cache's addresses (``peer_address`` for streams, ...); None if unreachable."""
        return self._json(protocol.OP_INFO, timeout)

    def ping(self, timeout: float = 0.5) -> bool:
        """Whether the cache answers right now."""
        with self._lock:
            return (
                self._request(protocol.encode_simple(protocol.OP_PING, self._next_rid()), timeout)
                is not None
            )

    def close(self) -> None:
        """Close the sockets (and the fallback KVS client, if one was made)."""
        with self._lock:
            if self._notes and self._sock is not None:
                self._send_notes()
            if self._sock is not None:
                try:
                    self._sock.disable_monitor()
                except zmq.ZMQError:
                    pass
                self._sock.close(0)
                self._sock = None
            if self._monitor is not None:
                self._monitor.close(0)
                self._monitor = None
            if self._fallback is not None:
                self._fallback.close()
                self._fallback = None

    def __enter__(self) -> CacheClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
