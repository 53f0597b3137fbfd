"""Python client of the KVS: :class:`AnnaTcpClient`.

Same surface as Anna's Python client::

    from anna.client import AnnaTcpClient
    from lattices import LWWPairLattice, make_timestamp

    kvs = AnnaTcpClient("127.0.0.1", local=True)            # routing at :6450
    kvs.put("k", LWWPairLattice(make_timestamp(), b"v"))    # True
    kvs.get(["k"])["k"].reveal()                            # b"v"
    kvs.close()

Response sockets: by default the client binds two PULL sockets on random free ports
of ``ip`` (so many clients share a host); with ``anna_ports=True`` it binds Anna's
fixed ports instead, ``6460 + offset`` (KeyResponse) and ``6760 + offset``
(KeyAddressResponse), as Anna's own client does. The routing address is
``elb_addr`` (``'host'``, ``'host:port'`` or ``'tcp://host:port'``) with the port
defaulting to ``routing_port`` or 6450.

Transport: the client speaks ZMTP itself on plain sockets (:mod:`anna.zmtp`) instead
of going through libzmq, so a request is one ``send`` and its answer one ``poll`` +
``recv`` in the calling thread (libzmq adds an I/O thread on each side). To the
servers it is an ordinary PUSH/PULL peer. While waiting for an answer the client polls
without sleeping for up to ``spin_us`` microseconds (default 100) before it blocks:
answers that come back within that window skip a thread wake-up, which costs
20-40 us on these VMs; ``spin_us=0`` always blocks. With ``curve`` the window is
``zmtp.CURVE_SPIN_EXTRA_US`` longer (the boxes lengthen the round trip).

Not thread-safe: use one client per thread.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import socket as _socket
import struct
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

import zmq

from anna import wire, zmtp
from anna.errors import AnnaError, AnnaTimeoutError, NoServersError
from anna.proto import anna_pb2 as pb
from cloudburst.shared.metrics import timed_kvs

# Submodules, not `from lattices import ...`: lattices/__init__ imports anna.proto, so
# importing lattices first would otherwise see a partially initialized package.
from lattices import codec
from lattices.base import Lattice, LatticeError
from lattices.lww import LWWPairLattice

log = logging.getLogger(__name__)

DEFAULT_ROUTING_PORT = 6450
ANNA_RESPONSE_BASE = 6460
ANNA_ADDRESS_BASE = 6760
DEFAULT_TIMEOUT_S = 5.0
MAX_CACHED_KEYS = 1_000_000
COPY_THRESHOLD = 64 * 1024

_GET = pb.GET
_PUT = pb.PUT
_NO_ERROR = pb.NO_ERROR
_KEY_DNE = pb.KEY_DNE
_WRONG_THREAD = pb.WRONG_THREAD
_from_payload = codec.from_payload
_key_request_parts = wire.key_request_parts
_lww_parts = wire.lww_payload_parts
_parse_response = wire.parse_single_key_response
_parse_lww = wire.parse_lww_payload
_monotonic = time.monotonic
DEFAULT_SPIN_US = 100
_LWW: int = pb.LWW
_to_payload = codec.to_payload

_ids = itertools.count()

#: kvs.max_value_bytes's default (cloudburst.shared.config): the largest PUT payload.
MAX_VALUE_BYTES = 1536 * 1024 * 1024
#: A PUT's timeout grows by one second per this many payload bytes (the shard writes
#: and fsyncs the value before it answers).
LARGE_VALUE_RATE = 8 * 1024 * 1024

#: How long a data request keeps trying to connect to a server that refuses before the
#: client asks routing again (the node may have departed or died; a restarting shard
#: comes back on the same address and is simply connected to on a later attempt).
REROUTE_AFTER_S = 0.25


class _Unreachable(Exception):
    """A server could not be connected to within ``REROUTE_AFTER_S``: re-ask routing."""

    def __init__(self, address: str) -> None:
        super().__init__(address)
        self.address = address


def _parse_elb(elb_addr: str, routing_port: int | None) -> tuple[str, int]:
    addr = elb_addr[6:] if elb_addr.startswith("tcp://") else elb_addr
    host, sep, port = addr.rpartition(":")
    if sep and port.isdigit():
        return host, routing_port or int(port)
    return addr, routing_port or DEFAULT_ROUTING_PORT


def _local_ip_for(host: str) -> str:
    """The local address the kernel would use to reach ``host``."""
    if host.startswith("127.") or host == "localhost":
        return "127.0.0.1"
    try:
        with _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM) as s:
            s.connect((host, 9))
            return str(s.getsockname()[0])
    except OSError:
        return "127.0.0.1"


def _bound_sends(conn: zmtp.PushConnection, timeout: float) -> None:
    """A send that makes no progress for ``timeout`` seconds fails (the connection is
    then closed and the call times out) instead of blocking for ever on a server that
    stopped reading (SIGSTOP, a hung node) while its receive buffer is full."""
    if conn.sock is not None:
        secs = max(0.001, timeout)
        tv = struct.pack("ll", int(secs), int((secs - int(secs)) * 1e6))
        conn.sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDTIMEO, tv)


class AnnaTcpClient:
    """A KVS client: address cache, batched GET/PUT, timeouts on every call.

    ``timeout`` (seconds) bounds every call; a server that does not answer raises
    :class:`anna.errors.AnnaTimeoutError` naming its address. A PUT's timeout grows
    with its size (``LARGE_VALUE_RATE``); while a large answer keeps arriving, the
    timeout counts from its last bytes. A PUT payload over ``max_value_bytes`` (the
    servers' ``kvs.max_value_bytes``) raises :class:`AnnaError` before anything is sent.
    """

    max_value_bytes: int = MAX_VALUE_BYTES

    def __init__(
        self,
        elb_addr: str,
        ip: str | None = None,
        local: bool = False,
        offset: int = 0,
        routing_port: int | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        anna_ports: bool = False,
        context: zmq.Context[Any] | None = None,
        spin_us: int = DEFAULT_SPIN_US,
        curve: zmtp.Curve | None = None,
    ) -> None:
        # ``context`` is accepted for compatibility and unused: no libzmq socket here.
        # ``curve``: CURVE keys (cloudburst.shared.security: Security.zmtp_client()).
        host, port = _parse_elb(elb_addr, routing_port)
        self._curve = curve
        self.local = local
        self.offset = offset
        self.timeout = timeout
        self.spin = zmtp.spin_window_s(spin_us, curve is not None)
        self._call_timeout = timeout  # the timeout of the call in progress (messages)
        self.routing_address = f"tcp://{host}:{port}"
        self.ip = ip or _local_ip_for(host)
        self._closed = True
        if anna_ports:
            self._resp = zmtp.PullListener(self.ip, ANNA_RESPONSE_BASE + offset, curve)
            try:
                self._addr = zmtp.PullListener(self.ip, ANNA_ADDRESS_BASE + offset, curve)
            except OSError:
                self._resp.close()
                raise
        else:
            self._resp = zmtp.PullListener(self.ip, 0, curve)
            self._addr = zmtp.PullListener(self.ip, 0, curve)
        self._closed = False
        self.response_address = self._resp.address
        self.address_response_address = self._addr.address
        self._push: dict[str, zmtp.PushConnection] = {}
        self._cache: dict[str, list[str]] = {}
        self._id_prefix = f"{os.getpid()}-{next(_ids)}-"
        self._seq = itertools.count()
        self._seed = random.randrange(1 << 30)
        self._req = pb.KeyRequest()
        self._resp_msg = pb.KeyResponse()
        self._resp_field = wire.string_field(3, self.response_address)

    # ---- plumbing ---------------------------------------------------------------------

    def _connection(self, addr: str, deadline: float, reroute: bool = False) -> zmtp.PushConnection:
        conn = self._push.get(addr)
        if conn is None or conn.sock is None:
            limit = min(deadline, _monotonic() + REROUTE_AFTER_S) if reroute else deadline
            try:
                conn = zmtp.PushConnection(addr, limit, self._curve)
            except TimeoutError as exc:
                if limit < deadline:
                    raise _Unreachable(addr) from None
                raise AnnaTimeoutError(
                    f"timed out after {self._call_timeout:.1f}s connecting to {addr} ({exc})",
                    addr,
                ) from None
            except (zmtp.ZmtpError, OSError) as exc:
                raise AnnaError(f"cannot talk to {addr}: {exc}") from None
            _bound_sends(conn, self.timeout)
            self._push[addr] = conn
        return conn

    def _send(
        self,
        addr: str,
        data: bytes | list[bytes],
        deadline: float,
        many: bool = False,
        reroute: bool = False,
    ) -> None:
        """One message to ``addr`` (``data`` a list: its pieces; with ``many``: a list
        of whole messages). A broken connection is reopened once and the message sent
        again (requests are idempotent: GETs, and PUTs of lattices). With ``reroute``
        a server refusing connections for ``REROUTE_AFTER_S`` raises ``_Unreachable``
        (the caller asks routing again) instead of being retried until the deadline."""
        for attempt in (0, 1):
            conn = self._connection(addr, deadline, reroute)
            try:
                if many:
                    conn.send_many(data)  # type: ignore[arg-type]
                elif type(data) is list:
                    conn.send_parts(data)
                else:
                    conn.send(data)  # type: ignore[arg-type]
                return
            except zmtp.ZmtpError:
                self._push.pop(addr, None)
                if attempt:
                    raise AnnaError(f"connection to {addr} keeps failing") from None

    def _next_id(self) -> str:
        return self._id_prefix + str(next(self._seq))

    def _deadline(self, timeout: float | None) -> float:
        self._call_timeout = self.timeout if timeout is None else timeout
        return time.monotonic() + self._call_timeout

    # ---- routing ----------------------------------------------------------------------

    def get_addresses(
        self, keys: Iterable[str], timeout: float | None = None, refresh: bool = False
    ) -> dict[str, list[str]]:
        """Every replica address of each key (from the cache, else asking routing)."""
        keys = list(keys)
        cache = self._cache
        missing = keys if refresh else [k for k in keys if k not in cache]
        if missing:
            self._ask_routing(missing, self._deadline(timeout))
        return {k: cache.get(k, []) for k in keys}

    def _ask_routing(self, keys: Sequence[str], deadline: float) -> None:
        rid = self._next_id()
        req = pb.KeyAddressRequest(
            response_address=self.address_response_address,
            keys=list(dict.fromkeys(keys)),
            request_id=rid,
        )
        self._send(self.routing_address, req.SerializeToString(), deadline)
        sock = self._addr
        while True:
            data = self._recv(sock, deadline, "KeyAddressResponse", [self.routing_address])
            try:
                resp = wire.decode_address_response(data)
            except (AnnaError, ValueError):
                continue
            if resp.response_id != rid:
                continue  # a late answer to an earlier, timed-out request
            if resp.error == pb.NO_SERVERS:
                raise NoServersError(
                    f"routing {self.routing_address} knows no storage node (NO_SERVERS)"
                )
            if len(self._cache) > MAX_CACHED_KEYS:
                self._cache.clear()
            for ka in resp.addresses:
                self._cache[ka.key] = list(ka.ips)
            return

    def invalidate(self, key: str) -> None:
        """Forget the cached addresses of ``key``."""
        self._cache.pop(key, None)

    def _pick(self, key: str, addrs: list[str]) -> str:
        if len(addrs) == 1:
            return addrs[0]
        # Sticky per client and key: a client reads its own writes with replication.
        return addrs[(self._seed + zlib.crc32(key.encode())) % len(addrs)]

    # ---- requests ------------------------------------------------------------------------

    def _execute(
        self,
        rtype: int,
        keys: list[str],
        payloads: Mapping[str, tuple[int, bytes]] | None,
        all_replicas: bool,
        timeout: float | None,
    ) -> dict[str, list[pb.KeyTuple]]:
        """Send one KeyRequest per shard; the answer tuples per key (one per replica)."""
        deadline = self._deadline(timeout)
        results: dict[str, list[pb.KeyTuple]] = {}
        pending = list(dict.fromkeys(keys))
        attempt = 0
        unreachable: list[str] = []
        while pending:
            addrs = self.get_addresses(pending, deadline - time.monotonic())
            groups: dict[str, list[str]] = {}
            for key in pending:
                reps = addrs[key]
                if not reps:
                    raise NoServersError(
                        f"routing {self.routing_address} gave no address for {key!r}"
                    )
                for a in reps if all_replicas else (self._pick(key, reps),):
                    groups.setdefault(a, []).append(key)
            outstanding: dict[str, str] = {}
            moved: list[str] = []
            for addr, gkeys in groups.items():
                rid = self._next_id()
                req = self._req
                req.Clear()
                req.type = rtype  # type: ignore[assignment]
                req.response_address = self.response_address
                req.request_id = rid
                tuples = req.tuples
                for key in gkeys:
                    if payloads is None:
                        tuples.add(key=key, address_cache_size=len(addrs[key]))
                    else:
                        lt, payload = payloads[key]
                        tuples.add(
                            key=key,
                            lattice_type=lt,
                            payload=payload,
                            address_cache_size=len(addrs[key]),
                        )
                try:
                    self._send(addr, req.SerializeToString(), deadline, reroute=True)
                except _Unreachable:
                    unreachable.append(addr)
                    moved.extend(gkeys)
                    continue
                outstanding[rid] = addr
            retry: list[str] = moved
            partial: dict[str, list[pb.KeyTuple]] = {}
            self._collect(outstanding, deadline, partial, retry)
            for key, tl in partial.items():
                results.setdefault(key, []).extend(tl)
            if not retry:
                break
            pending = list(dict.fromkeys(retry))
            for key in pending:
                results.pop(key, None)
                self._cache.pop(key, None)
            attempt += 1
            if time.monotonic() + 0.01 * attempt >= deadline:
                if unreachable:
                    raise AnnaTimeoutError(
                        f"timed out after {self._call_timeout:.1f}s connecting to "
                        f"{unreachable[-1]} (routing {self.routing_address} still places "
                        f"keys {pending[:5]} there)",
                        unreachable[-1],
                    )
                raise AnnaTimeoutError(
                    f"keys {pending[:5]} still answered WRONG_THREAD after {attempt} attempts "
                    f"(routing {self.routing_address})",
                    self.routing_address,
                )
            time.sleep(min(0.2, 0.01 * attempt))
        return results

    def _recv(
        self,
        sock: zmtp.PullListener,
        deadline: float,
        what: str,
        waiting: list[str] | str | Callable[[], list[str]],
    ) -> bytes:
        """One single-frame message from ``sock`` (spinning up to ``spin`` first), or
        timeout. A large frame is a bytearray received in place; nothing writes to it,
        so it is typed as bytes."""
        received = -1
        while True:
            frames = sock.recv(deadline, self.spin)
            if frames is None:
                # A large answer still arriving: the timeout counts from its last bytes.
                now = _monotonic()
                arriving = _bytes_arriving(sock)
                if arriving > received:
                    received = arriving
                    deadline = now + self._call_timeout
                    continue
                break
            if len(frames) == 1:
                return cast(bytes, frames[0])
            # A multi-frame message is nothing a KVS server sends to a client: skip it.
        if callable(waiting):
            waiting = waiting()
        if isinstance(waiting, str):
            waiting = [waiting]
        raise AnnaTimeoutError(
            f"timed out after {self._call_timeout:.1f}s waiting for a {what} from "
            f"{', '.join(waiting)}",
            waiting[0],
        )

    def _collect(
        self,
        outstanding: dict[str, str],
        deadline: float,
        results: dict[str, list[pb.KeyTuple]],
        retry: list[str],
    ) -> None:
        sock = self._resp
        resp = pb.KeyResponse()
        while outstanding:
            data = self._recv(sock, deadline, "KeyResponse", sorted(set(outstanding.values())))
            try:
                resp.ParseFromString(data)
            except Exception:
                continue
            if outstanding.pop(resp.response_id, None) is None:
                continue  # late answer to an earlier request
            for t in resp.tuples:
                if t.error == _WRONG_THREAD:
                    retry.append(t.key)
                    continue
                if t.invalidate:
                    self._cache.pop(t.key, None)
                results.setdefault(t.key, []).append(t)
            resp = pb.KeyResponse()

    def _single(
        self, rtype: int, key: str, lt: int, payload_parts: list[bytes], timeout: float | None
    ) -> wire.SingleResponse | None:
        """Fast path: one key whose address is cached; the parsed one-tuple answer
        ``(type, key, lattice_type, error, payload, invalidate, response_id)``.
        None: take the general path."""
        addrs = self._cache.get(key)
        if addrs is None:
            return None
        addr = addrs[0] if len(addrs) == 1 else self._pick(key, addrs)
        self._call_timeout = tmo = self.timeout if timeout is None else timeout
        deadline = _monotonic() + tmo
        rid = self._id_prefix + str(next(self._seq))
        parts = _key_request_parts(rtype, key, lt, payload_parts, len(addrs), self._resp_field, rid)
        try:
            if payload_parts and sum(map(len, payload_parts)) >= COPY_THRESHOLD:
                self._send(addr, parts, deadline, reroute=True)  # a large value: no join
            else:
                self._send(addr, b"".join(parts), deadline, reroute=True)
        except _Unreachable:
            self._cache.pop(key, None)
            return None  # the general path asks routing again
        resp_sock = self._resp
        while True:
            t = self._answer(self._recv(resp_sock, deadline, "KeyResponse", addr))
            if isinstance(t, str):  # an answer with several tuples
                if t != rid:
                    continue
                self._cache.pop(key, None)
                return None
            if t is not None and t[6] == rid:
                break
        if t[3] == _WRONG_THREAD or t[1] != key:
            self._cache.pop(key, None)
            return None
        if t[5]:
            self._cache.pop(key, None)
        return t

    def _answer(self, raw: bytes) -> wire.SingleResponse | str | None:
        """A ``KeyResponse`` with one tuple, parsed (by hand in canonical form, else by
        protobuf); the ``response_id`` of one with several tuples; None if undecodable."""
        # A large answer (a bytearray received in place) is parsed through a view, so
        # its value is copied out once (in _decode_single), not three times.
        t = _parse_response(memoryview(raw) if isinstance(raw, bytearray) else raw)
        if t is not None:
            return t
        msg = self._resp_msg
        try:
            msg.ParseFromString(raw)
        except Exception:
            return None
        if len(msg.tuples) != 1:
            return msg.response_id
        pt = msg.tuples[0]
        return (
            msg.type,
            pt.key,
            pt.lattice_type,
            pt.error,
            pt.payload,
            pt.invalidate,
            msg.response_id,
        )

    # ---- public API --------------------------------------------------------------------

    @timed_kvs("get")
    def get(
        self, keys: str | Iterable[str], timeout: float | None = None
    ) -> dict[str, Lattice[Any] | None]:
        """``{key: lattice or None}`` (None: never written)."""
        if type(keys) is str:
            t = self._single(_GET, keys, 0, [], timeout)
            if t is not None:
                return {keys: _decode_single(keys, t)}
        klist = [keys] if isinstance(keys, str) else list(keys)
        answers = self._execute(_GET, klist, None, False, timeout)
        out: dict[str, Lattice[Any] | None] = {}
        for key in klist:
            out[key] = _decode(answers.get(key, ()))
        return out

    def get_all(
        self, keys: str | Iterable[str], timeout: float | None = None
    ) -> dict[str, Lattice[Any] | None]:
        """Like :meth:`get` but reads every replica and merges what they hold."""
        klist = [keys] if isinstance(keys, str) else list(keys)
        answers = self._execute(_GET, klist, None, True, timeout)
        return {key: _decode(answers.get(key, ())) for key in klist}

    @timed_kvs("put")
    def put(
        self,
        keys: str | Sequence[str],
        values: Lattice[Any] | Sequence[Lattice[Any]],
        timeout: float | None = None,
    ) -> bool | dict[str, bool]:
        """PUT one key (-> bool) or several (-> ``{key: bool}``), acked by one replica."""
        return self._put(keys, values, False, timeout)

    @timed_kvs("put")
    def put_lww_pieces(
        self,
        key: str,
        timestamp: int,
        value_pieces: Sequence[bytes | memoryview],
        timeout: float | None = None,
    ) -> bool:
        """PUT ``LWWPairLattice(timestamp, b"".join(value_pieces))`` without joining
        the pieces: they go out as they are (``sendmsg``), so a large array given as a
        view of its own memory is not copied in this process. True once acked."""
        size = sum(len(p) for p in value_pieces)
        parts: list[Any] = [b"\x08", wire.varint(timestamp)] if timestamp else []
        if size:
            parts += [b"\x12", wire.varint(size), *value_pieces]
        sized = self._sized_timeout(key, size, timeout)
        t = self._single(_PUT, key, _LWW, parts, sized)
        if t is None:
            self.get_addresses([key], sized)  # learn the address: the pieces path
            t = self._single(_PUT, key, _LWW, parts, sized)
        if t is not None:
            return bool(t[3] == _NO_ERROR)
        value = b"".join(value_pieces)  # the general path (retries, rerouting)
        return bool(self._put(key, LWWPairLattice(timestamp, value), False, timeout))

    def put_all(
        self,
        keys: str | Sequence[str],
        values: Lattice[Any] | Sequence[Lattice[Any]],
        timeout: float | None = None,
    ) -> bool | dict[str, bool]:
        """Like :meth:`put` but True only once every replica acknowledged."""
        return self._put(keys, values, True, timeout)

    def _put(
        self,
        keys: str | Sequence[str],
        values: Lattice[Any] | Sequence[Lattice[Any]],
        all_replicas: bool,
        timeout: float | None,
    ) -> bool | dict[str, bool]:
        single = isinstance(keys, str)
        lt: int
        klist: list[str]
        if single and not all_replicas:
            if type(values) is LWWPairLattice:
                # Encoded in pieces: a 1 MB value is copied once, into the message.
                lt = _LWW
                parts = _lww_parts(values.timestamp, values.value)
            else:
                try:
                    lt, payload = _to_payload(values)  # type: ignore[arg-type]
                except LatticeError as exc:
                    raise AnnaError(f"cannot PUT {keys!r}: {exc}") from None
                parts = [payload]
            size = sum(map(len, parts))
            sized = self._sized_timeout(keys, size, timeout)  # type: ignore[arg-type]
            t = self._single(_PUT, keys, lt, parts, sized)  # type: ignore[arg-type]
            if t is None and size >= COPY_THRESHOLD:
                # A large value: learn the key's address so it goes out in pieces,
                # not copied into a protobuf message.
                self.get_addresses([keys], sized)  # type: ignore[list-item]
                t = self._single(_PUT, keys, lt, parts, sized)  # type: ignore[arg-type]
            if t is not None:
                return t[3] == _NO_ERROR
        if single:
            klist = [keys]  # type: ignore[list-item]
            vlist = [values]
        else:
            klist = list(keys)
            vlist = list(values)  # type: ignore[arg-type]
            if len(klist) != len(vlist):
                raise ValueError(f"{len(klist)} keys but {len(vlist)} values")
        payloads: dict[str, tuple[int, bytes]] = {}
        for k, v in zip(klist, vlist, strict=True):
            if not isinstance(k, str):
                raise TypeError(f"keys must be str, not {type(k).__name__}")
            try:
                lt, payload = _to_payload(v)  # type: ignore[arg-type]
            except LatticeError as exc:
                raise AnnaError(f"cannot PUT {k!r}: {exc}") from None
            if k in payloads:
                # The same key twice in one batch: send the merge.
                prev = _from_payload(*payloads[k])
                lt, payload = _to_payload(prev.merge(v))  # type: ignore[arg-type]
            payloads[k] = (lt, payload)
        for k, (_, payload) in payloads.items():
            self._sized_timeout(k, len(payload), timeout)
        timeout = self._sized_timeout("", sum(len(p) for _, p in payloads.values()), timeout)
        answers = self._execute(_PUT, list(payloads), payloads, all_replicas, timeout)
        out: dict[str, bool] = {}
        for k in payloads:
            tl = answers.get(k, [])
            ok = bool(tl) and all(t.error == _NO_ERROR for t in tl)
            if all_replicas and ok:
                ok = len(tl) >= len(self._cache.get(k, tl))
            out[k] = ok
        if single:
            return out[klist[0]]
        return out

    def _sized_timeout(self, key: str, size: int, timeout: float | None) -> float | None:
        """The timeout of a PUT of ``size`` payload bytes (``key``'s alone, or several
        keys' with ``key`` empty); raises AnnaError past ``max_value_bytes``."""
        if key and size > self.max_value_bytes:
            raise AnnaError(
                f"cannot PUT {key!r}: its payload is {size} bytes, more than the KVS's "
                f"limit of {self.max_value_bytes} (kvs.max_value_bytes)"
            )
        if size < LARGE_VALUE_RATE:
            return timeout
        return (self.timeout if timeout is None else timeout) + size / LARGE_VALUE_RATE

    @timed_kvs("delete")
    def delete(
        self, keys: str | Iterable[str], timeout: float | None = None
    ) -> bool | dict[str, bool]:
        """DELETE one key (-> bool) or several (-> ``{key: bool}``), acked by one
        replica (the others hear of it by gossip). An extension of Anna's protocol (see
        docs/kvs.md): the shard keeps a tombstone, so a later GET answers None until a
        newer PUT; it removes every LWW write stamped up to now by this clock."""
        return self._delete(keys, False, timeout)

    def delete_all(
        self, keys: str | Iterable[str], timeout: float | None = None
    ) -> bool | dict[str, bool]:
        """Like :meth:`delete` but True only once every replica acknowledged."""
        return self._delete(keys, True, timeout)

    def _delete(
        self, keys: str | Iterable[str], all_replicas: bool, timeout: float | None
    ) -> bool | dict[str, bool]:
        from lattices.lww import make_timestamp

        single = isinstance(keys, str)
        klist = [keys] if isinstance(keys, str) else list(keys)
        for k in klist:
            if not isinstance(k, str):
                raise TypeError(f"keys must be str, not {type(k).__name__}")
        stamp = b"".join(_lww_parts(make_timestamp(), b""))
        payloads = {k: (0, stamp) for k in klist}
        answers = self._execute(pb.DELETE, list(payloads), payloads, all_replicas, timeout)
        out: dict[str, bool] = {}
        for k in payloads:
            tl = answers.get(k, [])
            ok = bool(tl) and all(t.error == _NO_ERROR for t in tl)
            if all_replicas and ok:
                ok = len(tl) >= len(self._cache.get(k, tl))
            out[k] = ok
        return out[klist[0]] if single else out

    def pipeline(self) -> Pipeline:
        """A batch of single-key GETs and PUTs sent without waiting for each answer
        (like a redis-py pipeline); see :class:`Pipeline`."""
        return Pipeline(self)

    def _single_parts(
        self, rtype: int, key: str, value: Lattice[Any] | None
    ) -> tuple[int, list[bytes]]:
        if value is None:
            return 0, []
        if type(value) is LWWPairLattice:
            return _LWW, _lww_parts(value.timestamp, value.value)
        try:
            lt, payload = _to_payload(value)
        except LatticeError as exc:
            raise AnnaError(f"cannot PUT {key!r}: {exc}") from None
        return lt, [payload]

    def _pipelined(
        self,
        ops: list[tuple[int, str, Lattice[Any] | None]],
        timeout: float | None,
        window: int = 1000,
    ) -> list[Any]:
        """Send every op, at most ``window`` unanswered at a time; answers in op order."""
        deadline = self._deadline(timeout)
        for _, key, _ in ops:
            if type(key) is not str:
                raise TypeError(f"keys must be str, not {type(key).__name__}")
        missing = list(dict.fromkeys(k for _, k, _ in ops if k not in self._cache))
        if missing:
            self._ask_routing(missing, deadline)
        encoded = [
            (rtype, key, *self._single_parts(rtype, key, value)) for rtype, key, value in ops
        ]
        results: list[Any] = [None] * len(ops)
        pending: dict[str, tuple[int, str]] = {}  # request id -> (op index, address)
        retry: list[int] = []
        dead: set[str] = set()  # servers that refused connections during this execute
        field = self._resp_field
        nxt = 0
        while nxt < len(ops) or pending:
            # Small requests to one server leave together, one system call per batch.
            batch: dict[str, list[bytes]] = {}
            while nxt < len(ops) and len(pending) < window:
                rtype, key, lt, parts = encoded[nxt]
                addrs = self._cache.get(key)
                if not addrs:
                    retry.append(nxt)  # routing forgot it meanwhile: the slow path
                    nxt += 1
                    continue
                addr = addrs[0] if len(addrs) == 1 else self._pick(key, addrs)
                rid = self._id_prefix + str(next(self._seq))
                msg = _key_request_parts(rtype, key, lt, parts, len(addrs), field, rid)
                if parts and len(parts[-1]) >= COPY_THRESHOLD:
                    queued = batch.pop(addr, None)
                    if addr not in dead:
                        try:
                            if queued:  # keep the order of ops per server
                                self._send(addr, queued, deadline, many=True, reroute=True)
                            self._send(addr, msg, deadline, reroute=True)
                        except _Unreachable:
                            dead.add(addr)
                elif addr not in dead:
                    batch.setdefault(addr, []).append(b"".join(msg))
                pending[rid] = (nxt, addr)
                nxt += 1
            for addr, msgs in batch.items():
                if addr not in dead:
                    try:
                        self._send(addr, msgs, deadline, many=True, reroute=True)
                    except _Unreachable:
                        dead.add(addr)
            if dead:
                # Every op waiting on a server that refuses takes the general path,
                # which asks routing again.
                for rid, (i, a) in list(pending.items()):
                    if a in dead:
                        del pending[rid]
                        retry.append(i)
                        self._cache.pop(ops[i][1], None)
            if not pending:
                continue
            raw = self._recv(
                self._resp,
                deadline,
                "KeyResponse",
                lambda: sorted({a for _, a in pending.values()}),
            )
            t = self._answer(raw)
            if t is None:
                continue
            if isinstance(t, str):  # several tuples: not an answer to a one-key request
                bad = pending.pop(t, None)
                if bad is not None:
                    retry.append(bad[0])
                continue
            entry = pending.pop(t[6], None)
            if entry is None:
                continue  # a late answer to an earlier request
            i = entry[0]
            rtype, key, _ = ops[i]
            if t[3] == _WRONG_THREAD or t[1] != key:
                self._cache.pop(key, None)
                retry.append(i)
                continue
            if t[5]:
                self._cache.pop(key, None)
            results[i] = _decode_single(key, t) if rtype == _GET else t[3] == _NO_ERROR
        # Keys that moved: one at a time on the general path (re-asks routing), in order.
        for i in sorted(retry):
            rtype, key, value = ops[i]
            left = max(0.001, deadline - _monotonic())
            if rtype == _GET:
                results[i] = self.get([key], timeout=left)[key]
            else:
                results[i] = self.put([key], [value], timeout=left)[key]  # type: ignore[index, list-item]
        return results

    def set_replication(
        self, key: str, global_replication: int, local_replication: int = 1
    ) -> None:
        """Ask routing to replicate ``key`` on that many nodes x shards per node."""
        rep = pb.ReplicationFactor(
            key=key,
            global_replication=global_replication,
            local_replication=local_replication,
            timestamp=time.time_ns(),
        )
        msg = pb.Membership(replication=[rep])
        conn = self._connection(self.routing_address, self._deadline(None))
        try:
            conn.send_multipart(wire.encode_internal(wire.KIND_JOIN, msg))
        except zmtp.ZmtpError as exc:
            self._push.pop(self.routing_address, None)
            raise AnnaError(f"cannot reach routing {self.routing_address}: {exc}") from None
        self._cache.pop(key, None)

    def close(self) -> None:
        """Close every socket (the zmq context is shared and stays)."""
        if getattr(self, "_closed", True):
            return
        self._closed = True
        for conn in self._push.values():
            conn.close()
        self._push.clear()
        self._resp.close()
        self._addr.close()

    def __enter__(self) -> AnnaTcpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


class Pipeline:
    """Single-key GETs and PUTs queued, then sent together by :meth:`execute`.

    ::

        p = kvs.pipeline()
        p.get("a").put("b", LWWPairLattice(make_timestamp(), b"v")).get("b")
        a, ok, b = p.execute()          # [lattice or None, True/False, lattice or None]

    Every request is sent before the first answer is awaited (at most 1000 unanswered
    at a time), so the cost per op is the work, not a round trip. Operations on one
    key reach its shard in queue order over one connection, so a GET queued after a
    PUT of the same key sees it. A key whose owner changed (WRONG_THREAD) is retried
    on the general path. ``execute`` empties the queue; the pipeline can be reused.
    """

    def __init__(self, client: AnnaTcpClient) -> None:
        self._client = client
        self._ops: list[tuple[int, str, Lattice[Any] | None]] = []

    def get(self, key: str) -> Pipeline:
        self._ops.append((_GET, key, None))
        return self

    def put(self, key: str, value: Lattice[Any]) -> Pipeline:
        if not isinstance(value, Lattice):
            raise TypeError(f"PUT {key!r}: a lattice is needed, not {type(value).__name__}")
        self._ops.append((_PUT, key, value))
        return self

    def __len__(self) -> int:
        return len(self._ops)

    def execute(self, timeout: float | None = None) -> list[Any]:
        """Answers in queue order: a lattice or None for a GET, a bool for a PUT."""
        ops, self._ops = self._ops, []
        if not ops:
            return []
        return self._client._pipelined(ops, timeout)

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self._ops.clear()


def _bytes_arriving(sock: zmtp.PullListener) -> int:
    """Bytes received so far of the large frames ``sock`` is in the middle of (-1:
    none), so a caller can tell a slow large answer from no answer."""
    got = -1
    for conn in sock.conns.values():
        if conn.big is not None:
            got = max(got, 0) + conn.big_got
    return got


def _decode_single(key: str, t: wire.SingleResponse) -> Lattice[Any] | None:
    """The lattice in a parsed one-tuple answer (None: KEY_DNE or another error)."""
    if t[3] != _NO_ERROR:
        return None
    if t[2] == _LWW:
        lww = _parse_lww(t[4])
        if lww is not None:
            return LWWPairLattice(lww[0], lww[1])
    try:
        return _from_payload(t[2], t[4])
    except LatticeError as exc:
        raise AnnaError(f"server returned an undecodable payload for {key!r}: {exc}") from None


def _decode(tuples: Iterable[pb.KeyTuple]) -> Lattice[Any] | None:
    merged: Lattice[Any] | None = None
    for t in tuples:
        if t.error != _NO_ERROR:
            continue
        try:
            lat = _from_payload(t.lattice_type, t.payload)
        except LatticeError as exc:
            raise AnnaError(
                f"server returned an undecodable payload for {t.key!r}: {exc}"
            ) from None
        merged = lat if merged is None else merged.merge(lat)
    return merged
