"""A minimal ZMTP 3.0 peer over plain blocking sockets: PUSH out, PULL in.

The KVS client's hot path is one request out and one answer back. Through libzmq each
of those crosses an I/O thread on the client side (the application thread hands the
message to the I/O thread through a mailbox and waits on another for the answer), so
a round trip wakes four threads where a redis-py call wakes two. This module speaks
the wire protocol itself (RFC 23/ZMTP 3.0, NULL mechanism, rfc.zeromq.org/spec/23) on
ordinary sockets owned by the calling thread, so sending is one ``send`` system call
and receiving is one ``poll`` plus one ``recv``. The servers keep using libzmq: to
them this is just another PUSH or PULL peer (Anna's own clients are unaffected).

Only what the KVS client needs: single- and multi-frame messages out
(:class:`PushConnection`), messages from any number of peers in
(:class:`PullListener`, fair between peers as libzmq's PULL is), commands after the
handshake ignored (ZMTP 3.1 PING is only sent when heartbeats are configured, which
our servers do not do). Everything blocks with a deadline; nothing is threaded.
"""

from __future__ import annotations

import errno
import itertools
import os
import select
import socket
import struct
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from anna.curve import (
    SMALL,
    CurveClient,
    CurveCodec,
    CurveError,
    CurveServer,
    decode_metadata,
    encode_metadata,
    error_body,
    parse_error,
)

GREETING_LEN = 64
SIGNATURE = b"\xff" + b"\x00" * 8 + b"\x7f"
# signature, version 3.0, mechanism "NULL" (20 bytes), as-server 0, filler (31 bytes)
GREETING = SIGNATURE + b"\x03\x00" + b"NULL".ljust(20, b"\x00") + b"\x00" + b"\x00" * 31
CURVE_GREETING_CLIENT = SIGNATURE + b"\x03\x00" + b"CURVE".ljust(20, b"\x00") + b"\x00" + bytes(31)
CURVE_GREETING_SERVER = SIGNATURE + b"\x03\x00" + b"CURVE".ljust(20, b"\x00") + b"\x01" + bytes(31)
#: What a server open to NULL peers sends first (signature and major version): the peer
#: then sends its whole greeting, and ours is completed with the mechanism it names.
GREETING_HEAD = SIGNATURE + b"\x03"
#: The largest command frame accepted before a CURVE peer is authenticated (HELLO is
#: 200 bytes, INITIATE 257 + metadata): a huge size header is cut off at once.
HANDSHAKE_MAX_FRAME = 4096

FLAG_MORE = 0x01
FLAG_LONG = 0x02
FLAG_COMMAND = 0x04
# Frames up to the largest KVS value (kvs.max_value_bytes, at most 2 GiB) plus its
# message; the KVS checks its own limit on top of this.
MAX_MESSAGE = 2 * 1024 * 1024 * 1024
RECV_CHUNK = 64 * 1024
MAX_OUT_CONNECTIONS = 4096
COPY_BELOW = 65536  # smaller messages are joined with their header into one buffer
ACCEPT_PAUSE_S = 0.1  # out of descriptors: how long the listener is not watched
#: How much longer both spin-before-sleep windows (the shard's ``kvs.shard_spin_us``,
#: the client's ``spin_us``) are under CURVE, when they are not 0. Each side's
#: turnaround there carries two more boxes (open what came in, seal what goes out,
#: 15-30 us on these VMs): with the NULL-sized windows most CURVE round trips fell just
#: outside them, so both sides slept and paid a thread wake-up each (docs/security.md,
#: "Cost").
CURVE_SPIN_EXTRA_US = 50

_pack_long = struct.Struct(">Q").pack
_unpack_long = struct.Struct(">Q").unpack_from
_monotonic = time.monotonic
_yield = os.sched_yield


class ZmtpError(ConnectionError):
    """The peer broke the protocol or the connection; the message was not delivered."""


class ZmtpRefused(ZmtpError):
    """The CURVE handshake failed: wrong server key, or this side's key not admitted."""


@dataclass(frozen=True)
class Curve:
    """CURVE keys of our side of a connection (raw 32-byte keys, see :mod:`anna.curve`).

    As a CURVE client (:class:`PushConnection`, :class:`PullListener`) ``server_public``
    is the key the server must prove it holds; as a CURVE server (:class:`ZmtpServer`)
    ``authorize(client_public)`` admits or refuses a client that proved its key.
    """

    public: bytes
    secret: bytes
    server_public: bytes = b""
    authorize: Callable[[bytes], bool] | None = None

    def client(self, socket_type: bytes) -> CurveClient:
        return CurveClient(
            self.server_public, self.public, self.secret, {b"Socket-Type": socket_type}
        )

    def server(self, socket_type: bytes) -> CurveServer:
        return CurveServer(
            self.public,
            self.secret,
            self.authorize or (lambda _key: False),
            {b"Socket-Type": socket_type},
        )


class NullPeers(Protocol):
    """Which NULL-mechanism peers a CURVE :class:`ZmtpServer` still serves (see
    :mod:`anna.insecure`, ``kvs.allow_insecure_clients``)."""

    def peer_allowed(self, host: str) -> bool:
        """Whether a connection from ``host`` may greet with NULL."""
        ...

    def reply_address(self, frames: Sequence[bytes | bytearray]) -> str | None:
        """Where a NULL peer's message is answered (over NULL); None: drop it."""
        ...


def command_frame(body: bytes) -> bytes:
    """A command frame (flags, size, ``body``) around a command body."""
    n = len(body)
    if n < 256:
        return bytes((FLAG_COMMAND, n)) + body
    return bytes((FLAG_COMMAND | FLAG_LONG,)) + _pack_long(n) + body


def ready_command(socket_type: bytes) -> bytes:
    """A READY command frame carrying ``Socket-Type`` (RFC 23, NULL mechanism)."""
    body = b"\x05READY" + encode_metadata({b"Socket-Type": socket_type})
    return bytes([FLAG_COMMAND, len(body)]) + body


def frame_header(size: int, more: bool = False) -> bytes:
    """The flags and size octets in front of a message frame of ``size`` bytes."""
    flags = FLAG_MORE if more else 0
    if size < 256:
        return bytes((flags, size))
    return bytes((flags | FLAG_LONG,)) + _pack_long(size)


def spin_window_s(spin_us: int, curve: bool) -> float:
    """A spin-before-sleep window in seconds: ``spin_us`` (0 or less: never spin),
    widened by :data:`CURVE_SPIN_EXTRA_US` under CURVE."""
    if spin_us <= 0:
        return 0.0
    return (spin_us + (CURVE_SPIN_EXTRA_US if curve else 0)) / 1e6


def _remaining(deadline: float) -> float:
    left = deadline - _monotonic()
    if left <= 0:
        raise TimeoutError("deadline passed")
    return left


def _recv_exact(sock: socket.socket, n: int, deadline: float) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        sock.settimeout(_remaining(deadline))
        try:
            chunk = sock.recv(n - len(buf))
        except ConnectionError as exc:
            raise ZmtpError(f"peer reset the connection during the handshake: {exc}") from None
        if not chunk:
            raise ZmtpError("peer closed the connection during the handshake")
        buf += chunk
    return bytes(buf)


def parse_ready(body: bytes) -> dict[bytes, bytes]:
    """Properties of a READY command body (after the flags and size octets)."""
    if len(body) < 6 or body[0] != 5 or body[1:6] != b"READY":
        raise ZmtpError(f"expected a READY command, got {body[:16]!r}")
    try:
        return decode_metadata(body, 6)
    except CurveError as exc:
        raise ZmtpError(f"bad READY command: {exc}") from None


def handshake(sock: socket.socket, socket_type: bytes, deadline: float) -> dict[bytes, bytes]:
    """Greeting and READY exchange; the peer's READY properties."""
    sock.settimeout(_remaining(deadline))
    sock.sendall(GREETING + ready_command(socket_type))
    try:
        greeting = _recv_exact(sock, GREETING_LEN, deadline)
    except ZmtpError as exc:
        # libzmq hangs up at once on a greeting with another mechanism.
        raise ZmtpRefused(
            f"{exc}: the server refused the greeting; it may require CURVE keys "
            "(security.keys_dir, or CLOUDBURST_SECURITY__KEYS_DIR for a client)"
        ) from None
    if greeting[0] != 0xFF or greeting[9] != 0x7F:
        raise ZmtpError("peer is not a ZMTP peer (bad signature)")
    if greeting[10] < 3:
        raise ZmtpError(f"peer speaks ZMTP {greeting[10]}.x, 3.0 or newer is needed")
    if greeting[12:32].rstrip(b"\x00") != b"NULL":
        raise ZmtpRefused(
            f"peer wants security mechanism {greeting[12:32].rstrip(bytes(1)).decode()}: "
            "the server is secured, this side has no keys configured"
        )
    flags = _recv_exact(sock, 1, deadline)[0]
    if not flags & FLAG_COMMAND:
        raise ZmtpError("peer sent a message before its READY command")
    size = (
        _unpack_long(_recv_exact(sock, 8, deadline))[0]
        if flags & FLAG_LONG
        else _recv_exact(sock, 1, deadline)[0]
    )
    if size > 65536:
        raise ZmtpError("READY command too large")
    body = _recv_exact(sock, size, deadline)
    reason = parse_error(body)
    if reason is not None:
        raise ZmtpRefused(f"the server refused this client: ERROR {reason}")
    return parse_ready(body)


def _recv_command(sock: socket.socket, deadline: float) -> bytes:
    flags = _recv_exact(sock, 1, deadline)[0]
    if not flags & FLAG_COMMAND:
        raise ZmtpError("peer sent a message during the CURVE handshake")
    size = (
        _unpack_long(_recv_exact(sock, 8, deadline))[0]
        if flags & FLAG_LONG
        else _recv_exact(sock, 1, deadline)[0]
    )
    if size > HANDSHAKE_MAX_FRAME:
        raise ZmtpError("handshake command too large")
    return _recv_exact(sock, size, deadline)


def curve_handshake(
    sock: socket.socket, socket_type: bytes, deadline: float, curve: Curve
) -> tuple[dict[bytes, bytes], CurveCodec]:
    """Greeting and CURVE handshake as the CURVE client; the peer's metadata and the
    connection's codec. ZmtpRefused: wrong server key or this client's key refused."""
    sock.settimeout(_remaining(deadline))
    client = curve.client(socket_type)
    # The greeting alone first: a NULL server then says so instead of hanging up on
    # our HELLO.
    sock.sendall(CURVE_GREETING_CLIENT)
    try:
        greeting = _recv_exact(sock, GREETING_LEN, deadline)
    except ZmtpError as exc:
        raise ZmtpRefused(
            f"the server hung up during the greeting ({exc}): it does not speak CURVE"
        ) from None
    if greeting[0] != 0xFF or greeting[9] != 0x7F or greeting[10] < 3:
        raise ZmtpError("peer is not a ZMTP 3 peer (bad signature)")
    mechanism = greeting[12:32].rstrip(b"\x00")
    if mechanism != b"CURVE":
        raise ZmtpRefused(
            f"peer speaks the {mechanism.decode(errors='replace')} mechanism, not CURVE: "
            "it is not a secured server (or this side should not use keys)"
        )
    try:
        try:
            sock.sendall(command_frame(client.hello()))
            sock.sendall(command_frame(client.welcome(_recv_command(sock, deadline))))
            props = client.ready(_recv_command(sock, deadline))
        except ZmtpError as exc:
            raise ZmtpRefused(
                f"the server closed the CURVE handshake ({exc}): the server key is not "
                "the one configured here, or this client's key is not authorized"
            ) from None
    except CurveError as exc:
        raise ZmtpRefused(f"CURVE handshake refused: {exc}") from None
    assert client.codec is not None
    return props, client.codec


def _tune(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class PushConnection:
    """One outgoing connection to a libzmq PULL socket (``tcp://host:port``).

    With ``curve`` it is a CURVE client: every frame travels in a MESSAGE box."""

    def __init__(self, address: str, deadline: float, curve: Curve | None = None) -> None:
        self.address = address
        host, port = parse_tcp(address)
        self.sock: socket.socket | None = None
        self.codec: CurveCodec | None = None
        last: OSError | None = None
        delay = 0.005
        # A server that is (re)starting refuses connections for a moment; libzmq would
        # reconnect in the background, we retry until the caller's deadline.
        while True:
            try:
                sock = socket.create_connection((host, port), timeout=_remaining(deadline))
            except TimeoutError:
                raise TimeoutError(f"could not connect to {address}: {last}") from None
            except OSError as exc:
                last = exc
                left = deadline - _monotonic()
                if left <= 0:
                    raise TimeoutError(f"could not connect to {address}: {exc}") from None
                time.sleep(min(delay, left))
                delay = min(delay * 2, 0.1)
                continue
            try:
                _tune(sock)
                if curve is None:
                    props = handshake(sock, b"PUSH", deadline)
                else:
                    props, self.codec = curve_handshake(sock, b"PUSH", deadline, curve)
                if props.get(b"socket-type") != b"PULL":
                    raise ZmtpError(
                        f"{address} is a {props.get(b'socket-type', b'?').decode()} socket, "
                        "not PULL"
                    )
                sock.settimeout(None)
                sock.setblocking(True)
            except BaseException:
                sock.close()
                raise
            self.sock = sock
            # A PULL peer sends nothing after its READY: the socket turning readable
            # means the server went away (EOF) and the connection must be reopened.
            self.poller = select.poll()
            self.poller.register(sock.fileno(), select.POLLIN)
            return

    def _check_peer(self) -> None:
        """Called when the socket is readable: EOF or an error closes the connection."""
        sock = self.sock
        assert sock is not None
        try:
            data = sock.recv(65536, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.close()
            raise ZmtpError(f"connection to {self.address} broke: {exc}") from None
        if not data:
            self.close()
            raise ZmtpError(f"{self.address} closed the connection")
        # Anything else (a PING if the peer has heartbeats on) needs no answer.

    def send(self, data: bytes | bytearray | memoryview) -> None:
        """One single-frame message (blocks until the kernel has taken it).

        ZmtpError: the connection is (now) closed and nothing was sent; reconnect.
        """
        codec = self.codec
        if codec is not None:
            if len(data) <= SMALL:  # the whole frame boxed in the codec's buffer
                self._write([codec.frame(data)], join=True)
                return
            data = codec.seal(data)
        self._write([frame_header(len(data)), data], join=len(data) < COPY_BELOW)

    def send_many(self, messages: list[bytes]) -> None:
        """Several single-frame messages in one system call (a pipeline's batch)."""
        codec = self.codec
        pieces: list[bytes | bytearray] = []
        for m in messages:
            if codec is not None and len(m) <= SMALL:
                pieces.append(codec.frame(m))
                continue
            body: bytes | bytearray = m if codec is None else codec.seal(m)
            pieces.append(frame_header(len(body)))
            pieces.append(body)
        self._write(pieces, join=True)

    def send_parts(self, parts: list[bytes]) -> None:
        """One single-frame message given as pieces (a large value is not joined)."""
        codec = self.codec
        if codec is not None:
            n = sum(map(len, parts))
            if n <= SMALL:
                self._write([codec.frame_parts(parts)], join=True)
                return
            box = codec.seal_parts(parts)
            self._write([frame_header(len(box)), box], join=False)
            return
        self._write([frame_header(sum(len(p) for p in parts)), *parts], join=False)

    def send_multipart(self, frames: list[bytes]) -> None:
        codec = self.codec
        pieces: list[bytes | bytearray] = []
        last = len(frames) - 1
        for i, f in enumerate(frames):
            if codec is not None:
                box = codec.seal(f, more=i < last)
                pieces.append(frame_header(len(box)))
                pieces.append(box)
            else:
                pieces.append(frame_header(len(f), more=i < last))
                pieces.append(f)
        self._write(pieces, join=False)

    def _write(self, pieces: Sequence[bytes | bytearray | memoryview], join: bool) -> None:
        """Send ``pieces`` whole (``join``: as one joined buffer, cheaper for small
        messages; else with ``sendmsg``, no copy). A peer that went away, or a failed
        send, closes the connection and raises ZmtpError."""
        sock = self.sock
        if sock is None:
            raise ZmtpError(f"connection to {self.address} is closed")
        if self.poller.poll(0):
            self._check_peer()
        try:
            if join:
                sock.sendall(b"".join(pieces))
            else:
                self._sendmsg(pieces)
        except OSError as exc:
            self.close()
            raise ZmtpError(f"send to {self.address} failed: {exc}") from exc

    def _sendmsg(self, pieces: Sequence[bytes | bytearray | memoryview]) -> None:
        sock = self.sock
        assert sock is not None
        views = [memoryview(p) for p in pieces if len(p)]
        while views:
            sent = sock.sendmsg(views[:512])
            while sent:
                head = views[0]
                if sent >= len(head):
                    sent -= len(head)
                    views.pop(0)
                else:
                    views[0] = head[sent:]
                    sent = 0

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None


BIG_FRAME = 64 * 1024  # frames at least this large are received in place


class Inbound:
    """The receiving half of one connection: greeting check, then frames -> messages.

    ``read()`` makes one ``recv`` and returns the messages it completed (each a list of
    frames). A frame of ``BIG_FRAME`` bytes or more is received straight into a buffer
    of its size (``recv_into``), so a 1 MB value is not copied on the way in.

    With ``curve`` (and ``server``: which side of the CURVE handshake this is) the
    handshake commands are answered here (small writes straight to the socket) and each
    data frame is a MESSAGE box, opened into the frame it carries; before the peer is
    authenticated only command frames up to ``HANDSHAKE_MAX_FRAME`` bytes are taken.
    """

    __slots__ = (
        "sock",
        "fd",
        "buf",
        "pos",
        "frames",
        "greeted",
        "handshaken",
        "big",
        "big_got",
        "big_more",
        "secure",
        "side",
        "codec",
        "max_frame",
        "max_after",
        "refusal",
        "peer_key",
        "writer",
        "either",
        "plain_peer",
    )

    def __init__(
        self,
        sock: socket.socket,
        curve: Curve | None = None,
        server: bool = True,
        socket_type: bytes = b"PULL",
        max_frame: int = 0,
        either: bool = False,
    ) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.buf: bytes | bytearray = b""
        self.pos = 0
        self.frames: list[bytes | bytearray] = []
        self.greeted = False
        self.handshaken = False  # the peer's READY arrived (CURVE: the handshake is done)
        self.big: bytearray | None = None  # the large frame being received in place
        self.big_got = 0
        self.big_more = False
        self.max_after = max_frame or MAX_MESSAGE
        self.secure = curve is not None
        self.side: CurveClient | CurveServer | None = None
        if curve is not None:
            self.side = curve.server(socket_type) if server else curve.client(socket_type)
        self.codec: CurveCodec | None = None
        self.max_frame = HANDSHAKE_MAX_FRAME if self.secure else self.max_after
        self.refusal = ""  # why the handshake failed (for the caller's logs/errors)
        self.peer_key: bytes | None = None  # the authenticated client key (CURVE server)
        # How handshake replies go out (None: straight to the socket). A server's
        # outbound connection queues them behind its own greeting, in order.
        self.writer: Callable[[bytes], None] | None = None
        # A CURVE server that also takes NULL from this peer: the peer's greeting
        # decides (our greeting is completed with its mechanism); plain_peer: it chose
        # NULL (unauthenticated: the caller vets its messages).
        self.either = either and self.secure and server
        self.plain_peer = False

    def opening(self) -> bytes:
        """What this side sends first on an accepted connection: its greeting (and, as
        CURVE client, HELLO; as NULL, READY); open to NULL too: only the greeting's head."""
        if self.either:
            return GREETING_HEAD
        side = self.side
        if side is None:
            return GREETING + ready_command(b"PULL")
        if isinstance(side, CurveClient):
            return CURVE_GREETING_CLIENT + command_frame(side.hello())
        return CURVE_GREETING_SERVER

    def read(self) -> list[list[bytes | bytearray]] | None:
        """Messages completed by one ``recv`` ([] if none); None: the connection ended
        or broke the protocol (the caller closes it)."""
        big = self.big
        if big is not None:
            try:
                n = self.sock.recv_into(memoryview(big)[self.big_got :])
            except (BlockingIOError, InterruptedError):
                return []
            except OSError:
                return None
            if not n:
                return None
            self.big_got += n
            if self.big_got < len(big):
                return []
            self.big = None
            if self.secure:
                return self._opened(big)
            self.frames.append(big)
            if self.big_more:
                return []
            msg, self.frames = self.frames, []
            return [msg]
        try:
            data = self.sock.recv(RECV_CHUNK)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError:
            return None
        if not data:
            return None
        buf = self.buf
        if self.pos < len(buf):
            # A frame continues: accumulate (a bytearray grows in place).
            if type(buf) is bytes:
                buf = bytearray(memoryview(buf)[self.pos :])
                self.pos = 0
            buf += data
            self.buf = buf
        else:
            self.buf = data  # the common case: parse straight from what recv returned
            self.pos = 0
        try:
            return self._parse()
        except ZmtpError:
            return None

    def _opened(self, body: bytes | bytearray) -> list[list[bytes | bytearray]] | None:
        """A MESSAGE box received in place, opened (None: it does not open)."""
        out: list[list[bytes | bytearray]] = []
        try:
            self._message(body, out)
        except ZmtpError:
            return None
        return out

    def _message(
        self,
        body: bytes | bytearray,
        out: list[list[bytes | bytearray]],
        start: int = 0,
        end: int = -1,
    ) -> None:
        """The MESSAGE box ``body`` (or ``body[start:end]``, read in place), opened."""
        codec = self.codec
        if codec is None:
            raise ZmtpError("message before the CURVE handshake completed")
        payload: bytes | bytearray
        try:
            if end < 0:
                flags, payload = codec.open(body)
            else:
                flags, payload = codec.open_at(body, start, end)
        except CurveError as exc:
            self.refusal = str(exc)
            raise ZmtpError(str(exc)) from None
        if flags & 0x02:
            return  # a command the peer encrypted (PING): nothing to answer
        self.frames.append(payload)
        if not flags & 0x01:
            out.append(self.frames)
            self.frames = []

    def _command(self, body: bytes) -> None:
        """One CURVE handshake command: answer it, or refuse (ERROR) and raise."""
        side = self.side
        reply = b""
        try:
            if isinstance(side, CurveServer):
                if self.codec is not None:
                    return  # PING and the like: nothing to answer
                name = body[:9]
                if name.startswith(b"\x05HELLO"):
                    reply = side.hello(body)
                elif name == b"\x08INITIATE":
                    reply, _props = side.initiate(body)
                    self.codec = side.codec
                    self.peer_key = side.client_public
                    self.handshaken = True
                    self.max_frame = self.max_after
                else:
                    raise CurveError(f"unexpected command {body[:9]!r} in the handshake")
            elif isinstance(side, CurveClient):
                if self.codec is not None:
                    return
                reason = parse_error(body)
                if reason is not None:
                    raise CurveError(f"refused by the peer: {reason}", reason)
                if side.precomputed is None:
                    reply = side.welcome(body)
                else:
                    side.ready(body)
                    self.codec = side.codec
                    self.handshaken = True
                    self.max_frame = self.max_after
        except CurveError as exc:
            self.refusal = str(exc)
            if isinstance(side, CurveServer):
                try:
                    self._write(command_frame(error_body(exc.reason)))
                except (OSError, ZmtpError):
                    pass
            raise ZmtpError(str(exc)) from None
        if reply:
            self._write(command_frame(reply))

    def _write(self, frame: bytes) -> None:
        if self.writer is not None:
            self.writer(frame)
            return
        try:
            sent = self.sock.send(frame)
        except OSError as exc:
            raise ZmtpError(f"handshake send failed: {exc}") from None
        if sent < len(frame):  # a few hundred bytes into a fresh socket: never short
            raise ZmtpError("handshake send was short")

    def _choose(self, mechanism: bytes) -> None:
        """Open to NULL: complete our greeting with the peer's mechanism."""
        self.either = False
        if mechanism == b"CURVE":
            self._write(CURVE_GREETING_SERVER[len(GREETING_HEAD) :])
        elif mechanism == b"NULL":
            self.secure = False
            self.side = None
            self.plain_peer = True
            self.max_frame = self.max_after
            self._write(GREETING[len(GREETING_HEAD) :] + ready_command(b"PULL"))
        else:
            self.refusal = f"peer speaks the {mechanism!r} mechanism"
            raise ZmtpError("peer wants another security mechanism")

    def _parse(self) -> list[list[bytes | bytearray]]:
        buf = self.buf
        pos = self.pos
        end = len(buf)
        out: list[list[bytes | bytearray]] = []
        if not self.greeted:
            if end - pos < GREETING_LEN:
                return out
            if buf[pos] != 0xFF or buf[pos + 9] != 0x7F or buf[pos + 10] < 3:
                raise ZmtpError("not a ZMTP 3 peer")
            mechanism = bytes(buf[pos + 12 : pos + 32]).rstrip(b"\x00")
            if self.either:
                self._choose(mechanism)
            elif mechanism != (b"CURVE" if self.secure else b"NULL"):
                self.refusal = f"peer speaks the {mechanism!r} mechanism"
                raise ZmtpError("peer wants another security mechanism")
            pos += GREETING_LEN
            self.greeted = True
        frames = self.frames
        max_frame = self.max_frame
        secure = self.secure
        while end - pos >= 2:
            flags = buf[pos]
            if flags & FLAG_LONG:
                if end - pos < 9:
                    break
                size = _unpack_long(buf, pos + 1)[0]
                start = pos + 9
            else:
                size = buf[pos + 1]
                start = pos + 2
            if size > max_frame:
                self.refusal = f"frame of {size} bytes over the limit of {max_frame}"
                raise ZmtpError("frame larger than the maximum message size")
            if end - start < size:
                if size >= BIG_FRAME and not flags & FLAG_COMMAND:
                    # Receive the rest of this frame in place.
                    big = _uninitialized(size)
                    have = end - start
                    big[:have] = memoryview(buf)[start:end]
                    self.big, self.big_got, self.big_more = big, have, bool(flags & FLAG_MORE)
                    pos = end
                break
            pos = start + size
            if secure:
                if flags & FLAG_COMMAND:
                    self._command(bytes(buf[start:pos]))
                    max_frame = self.max_frame
                else:
                    self.frames = frames
                    self._message(buf, out, start, pos)
                    frames = self.frames
                continue
            if flags & FLAG_COMMAND:
                # READY (the socket type is checked by the libzmq peer) or PING (only
                # sent when heartbeats are configured): nothing to answer.
                if buf[start : start + 6] == b"\x05READY":
                    self.handshaken = True
                continue
            frames.append(buf[start:pos] if type(buf) is bytes else bytes(buf[start:pos]))
            if not flags & FLAG_MORE:
                out.append(frames)
                frames = []
        self.frames = frames
        if pos >= end:
            self.buf = b""
            self.pos = 0
        elif type(buf) is bytearray and pos > 65536:
            del buf[:pos]
            self.pos = 0
        else:
            self.pos = pos
        return out


try:
    import ctypes

    _new_bytearray = ctypes.pythonapi.PyByteArray_FromStringAndSize
    _new_bytearray.restype = ctypes.py_object
    _new_bytearray.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t]

    def _uninitialized(size: int) -> bytearray:
        """A bytearray of ``size`` bytes, not zeroed: ``bytearray(size)`` zeroes 500 MB
        with the GIL held (0.3-2 s on a busy machine); this is O(1), and the pages are
        filled by ``recv_into``, which releases the GIL."""
        out: bytearray = _new_bytearray(None, size)
        return out

except (ImportError, AttributeError):  # pragma: no cover - not CPython

    def _uninitialized(size: int) -> bytearray:
        return bytearray(size)


def _owned(data: bytes | bytearray | memoryview) -> memoryview:
    """A view of ``data`` safe to queue: copied unless immutable (libzmq copies too)."""
    return memoryview(data if type(data) is bytes else bytes(data))


def _listen(ip: str, port: int) -> socket.socket:
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind((ip, port))
        lsock.listen(512)
    except OSError:
        lsock.close()
        raise
    lsock.setblocking(False)
    return lsock


#: accept() errors that mean "out of descriptors or memory": stop accepting a moment.
_EXHAUSTED = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def _accept(
    lsock: socket.socket, hello: bytes, peers: list[str] | None = None
) -> tuple[list[socket.socket], bool]:
    """Every pending connection, greeted (``hello``, our greeting and READY, already
    sent; CURVE: empty, the caller's :class:`Inbound` opens), and whether accepting
    stopped because descriptors or memory ran out (the listener then stays readable:
    the caller should stop watching it for a moment). ``peers``: filled with each
    connection's peer host, in the same order."""
    out: list[socket.socket] = []
    while True:
        try:
            sock, addr = lsock.accept()
        except (BlockingIOError, InterruptedError):
            return out, False
        except OSError as exc:
            if exc.errno in _EXHAUSTED:
                return out, True
            if isinstance(exc, ConnectionError) or exc.errno in (errno.EPROTO, errno.EPERM):
                continue  # that connection died before we took it: the next one
            return out, False
        sock.setblocking(False)
        try:
            _tune(sock)
            if hello:
                sock.send(hello)  # 64 + 28 bytes into an empty socket buffer
        except OSError:
            sock.close()
            continue
        out.append(sock)
        if peers is not None:
            peers.append(addr[0])


def _open_inbound(sock: socket.socket, conn: Inbound) -> bool:
    """Send a CURVE connection's opening (greeting, HELLO); False: the peer is gone."""
    try:
        sock.send(conn.opening())  # at most a few hundred bytes into an empty buffer
    except OSError:
        sock.close()
        return False
    return True


_NULL_PULL_HELLO = GREETING + ready_command(b"PULL")
_NULL_PUSH_HELLO = GREETING + ready_command(b"PUSH")


class PullListener:
    """A listening socket that libzmq PUSH sockets connect to; messages from all.

    ``recv(deadline)`` returns the next whole message as a list of frames. Connections
    are accepted and their handshakes completed as part of receiving, without blocking
    on one peer: a peer that connects and says nothing cannot stall the others.

    With ``curve`` this side is the CURVE *client* of each connection (the servers
    pushing answers to it hold the cluster key, which ``curve.server_public`` names).
    """

    def __init__(self, ip: str, port: int = 0, curve: Curve | None = None) -> None:
        self.curve = curve
        self.refusals = 0  # connections whose CURVE handshake failed
        self.last_refusal = ""
        self.lsock = _listen(ip, port)
        self.port: int = self.lsock.getsockname()[1]
        self.address = f"tcp://{ip}:{self.port}"
        self.poller = select.poll()
        self.lfd = self.lsock.fileno()
        self.poller.register(self.lfd, select.POLLIN)
        self.conns: dict[int, Inbound] = {}
        self.messages: deque[list[bytes | bytearray]] = deque()
        self.closed = False

    def recv(self, deadline: float, spin: float = 0.0) -> list[bytes | bytearray] | None:
        """The next message, or None once ``deadline`` (monotonic) has passed.

        With ``spin`` (seconds) it first polls without sleeping for that long: an
        answer that arrives meanwhile is taken without a thread wake-up.
        """
        messages = self.messages
        if messages:
            return messages.popleft()
        poll = self.poller.poll
        if spin > 0:
            spin_end = min(deadline, _monotonic() + spin)
            while True:
                events = poll(0)
                if events:
                    self._handle(events)
                    if messages:
                        return messages.popleft()
                if _monotonic() >= spin_end:
                    break
                # If the server shares our core, let it run: spinning would only
                # delay the answer we wait for until our time slice ends.
                _yield()
        while True:
            left = deadline - _monotonic()
            try:
                # Past the deadline: one last look without waiting.
                events = poll(int(left * 1000) + 1 if left > 0 else 0)
            except InterruptedError:
                continue
            if events:
                self._handle(events)
                if messages:
                    return messages.popleft()
            if left <= 0:
                return None

    def _handle(self, events: list[tuple[int, int]]) -> None:
        conns = self.conns
        for fd, _ in events:
            if fd == self.lfd:
                curve = self.curve
                for sock in _accept(self.lsock, b"" if curve else _NULL_PULL_HELLO)[0]:
                    new = Inbound(sock, curve, server=False)
                    if curve is not None and not _open_inbound(sock, new):
                        continue
                    conns[new.fd] = new
                    self.poller.register(new.fd, select.POLLIN)
                continue
            conn = conns.get(fd)
            if conn is None:
                continue
            got = conn.read()
            if got is None:
                if conn.refusal or (self.curve is not None and not conn.handshaken):
                    self.refusals += 1  # a failed CURVE handshake (or a hang-up in one)
                    self.last_refusal = conn.refusal or "peer hung up during the handshake"
                self._drop(conn)
            elif got:
                self.messages.extend(got)

    def _drop(self, conn: Inbound) -> None:
        self.conns.pop(conn.fd, None)
        try:
            self.poller.unregister(conn.fd)
        except KeyError:
            pass
        conn.sock.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for conn in list(self.conns.values()):
            conn.sock.close()
        self.conns.clear()
        self.lsock.close()


class _Outbound:
    """A non-blocking PUSH connection of the server: bytes not yet taken by the kernel."""

    __slots__ = (
        "address",
        "sock",
        "fd",
        "pending",
        "pending_bytes",
        "pending_large",
        "inbound",
        "writing",
        "waiting",
        "key",
        "secure",
    )

    def __init__(
        self, address: str, sock: socket.socket, curve: Curve | None, key: str = ""
    ) -> None:
        self.address = address
        self.key = key or address  # in ZmtpServer.outbound (NULL ones: "null|" + address)
        self.secure = curve is not None
        self.sock = sock
        self.fd = sock.fileno()
        self.pending: deque[memoryview] = deque()
        self.pending_bytes = 0
        # Bytes of large messages (over half the bound) among pending_bytes, at most:
        # they do not count against the bound, so a large answer does not make the
        # replies queued behind it be dropped (reset when the queue empties).
        self.pending_large = 0
        # The peer's greeting and READY (then nothing); CURVE: we are the server of
        # the handshake (the reply listener proves it holds an admitted key).
        self.inbound = Inbound(sock, curve, server=True, socket_type=b"PUSH")
        self.writing = False  # registered for EPOLLOUT
        # Messages queued before the peer's READY: libzmq rejects a message that
        # arrives before it has sent its own READY (ZMTP_UNEXPECTED_COMMAND).
        self.waiting: list[memoryview] | None = []


class ZmtpServer:
    """The server side for a shard: a PULL port for requests and PUSH replies.

    Non-blocking, driven by the caller's loop: :meth:`poll` waits (epoll) up to a
    timeout and returns the messages that arrived; :meth:`send` queues a reply to a
    ``tcp://`` address, connecting on first use, and never blocks: what the kernel does
    not take waits in a bounded queue per peer (``max_pending`` bytes; beyond it replies
    are dropped and counted, like libzmq's send high-water mark with ``NOBLOCK``).
    :meth:`fileno` is the epoll descriptor, readable whenever :meth:`poll` has work,
    so a ``zmq.poll`` over other sockets can include it.

    With ``curve`` it is the CURVE server of every connection, inbound and outbound:
    peers must know its public key and hold a key ``curve.authorize`` admits. Denial of
    service basics: at most ``max_per_peer`` inbound connections per peer host (more
    are closed on accept), frames over ``max_frame`` bytes (before authentication:
    ``HANDSHAKE_MAX_FRAME``) close the connection, and a CURVE handshake not finished
    within ``handshake_timeout`` seconds is dropped.

    ``null_peers`` (with ``curve``; ``kvs.allow_insecure_clients``): a peer it allows
    may greet with NULL instead; only its messages that name an answer address the
    policy accepts are returned (others are dropped and counted), and answers to such
    an address go out over NULL (``plain``: those addresses, shareable between the
    servers of one process). Everyone else is refused as without it.
    """

    def __init__(
        self,
        ip: str,
        port: int,
        stats: dict[str, int],
        max_pending: int = 64 << 20,
        curve: Curve | None = None,
        max_frame: int = MAX_MESSAGE,
        max_per_peer: int = 1024,
        handshake_timeout: float = 5.0,
        null_peers: NullPeers | None = None,
        plain: OrderedDict[str, None] | None = None,
    ) -> None:
        self.curve = curve
        self.null_peers = null_peers if curve is not None else None
        # Answer addresses of NULL peers' requests (most recent last, bounded).
        self.plain: OrderedDict[str, None] = OrderedDict() if plain is None else plain
        self.max_frame = max_frame
        self.max_per_peer = max_per_peer
        self.handshake_timeout = handshake_timeout
        self.per_peer: dict[str, int] = {}
        self.peer_of: dict[int, str] = {}
        # Inbound CURVE connections still in their handshake, oldest first.
        self.handshaking: OrderedDict[int, float] = OrderedDict()
        self.lsock = _listen(ip, port)
        self.lfd = self.lsock.fileno()
        self.epoll = select.epoll()
        self.epoll.register(self.lfd, select.EPOLLIN)
        self.inbound: dict[int, Inbound] = {}
        self.outbound: dict[str, _Outbound] = {}
        self.out_by_fd: dict[int, _Outbound] = {}
        self.stats = stats
        self.max_pending = max_pending
        self.hello_push = CURVE_GREETING_SERVER if curve else GREETING + ready_command(b"PUSH")
        self.corked = False
        self.dirty: dict[int, _Outbound] = {}  # connections with corked messages
        self.accept_paused_until = 0.0

    def fileno(self) -> int:
        return self.epoll.fileno()

    # ---- receiving ----------------------------------------------------------------------

    def poll(self, timeout: float) -> list[list[bytes | bytearray]]:
        """Messages that arrived within ``timeout`` seconds (0: only what is there)."""
        if self.accept_paused_until and _monotonic() >= self.accept_paused_until:
            self.accept_paused_until = 0.0
            self.epoll.register(self.lfd, select.EPOLLIN)
        try:
            events = self.epoll.poll(timeout)
        except InterruptedError:
            return []
        out: list[list[bytes | bytearray]] = []
        inbound = self.inbound
        for fd, ev in events:
            conn = inbound.get(fd)
            if conn is not None:
                got = conn.read()
                if got is None:
                    self._drop_in(conn)
                elif got:
                    if conn.plain_peer:
                        got = self._vet_plain(got)
                    out.extend(got)
            elif fd == self.lfd:
                self._accept_all()
            else:
                oc = self.out_by_fd.get(fd)
                if oc is not None:
                    self._outbound_event(oc, ev)
        if self.handshaking:
            self._expire_handshakes()
        return out

    def _vet_plain(self, messages: list[list[bytes | bytearray]]) -> list[list[bytes | bytearray]]:
        """A NULL peer's messages: only client requests whose answer address the policy
        accepts; those addresses are answered over NULL."""
        policy = self.null_peers
        assert policy is not None
        plain = self.plain
        kept: list[list[bytes | bytearray]] = []
        for msg in messages:
            address = policy.reply_address(msg)
            if address is None:
                self.stats["null_refused"] += 1
                continue
            plain[address] = None
            plain.move_to_end(address)
            if len(plain) > MAX_OUT_CONNECTIONS:
                plain.popitem(last=False)
            self.stats["null_requests"] += 1
            kept.append(msg)
        return kept

    def _accept_all(self) -> None:
        peers: list[str] = []
        curve = self.curve
        socks, exhausted = _accept(self.lsock, b"" if curve else _NULL_PULL_HELLO, peers)
        inbound = self.inbound
        per_peer = self.per_peer
        now = _monotonic()
        for sock, peer in zip(socks, peers, strict=True):
            count = per_peer.get(peer, 0)
            if count >= self.max_per_peer:
                sock.close()
                self.stats["conn_over_limit"] += 1
                continue
            either = self.null_peers is not None and self.null_peers.peer_allowed(peer)
            c = Inbound(sock, curve, server=True, max_frame=self.max_frame, either=either)
            if curve is not None:
                if not _open_inbound(sock, c):
                    continue
                self.handshaking[c.fd] = now
            per_peer[peer] = count + 1
            self.peer_of[c.fd] = peer
            inbound[c.fd] = c
            self.epoll.register(c.fd, select.EPOLLIN)
            self.stats["zmtp_accepted"] += 1
        if exhausted:
            # Out of descriptors: the listener stays readable, so stop watching
            # it for a moment instead of spinning on it.
            self.stats["accept_exhausted"] += 1
            self.epoll.unregister(self.lfd)
            self.accept_paused_until = _monotonic() + ACCEPT_PAUSE_S

    def _expire_handshakes(self) -> None:
        """Forget handshakes that finished; drop those older than the timeout."""
        limit = _monotonic() - self.handshake_timeout
        handshaking = self.handshaking
        while handshaking:
            fd, since = next(iter(handshaking.items()))
            conn = self.inbound.get(fd)
            if conn is None or conn.handshaken:
                del handshaking[fd]
                continue
            if since > limit:
                break
            del handshaking[fd]
            self.stats["handshake_timeouts"] += 1
            self._drop_in(conn)

    def _drop_in(self, conn: Inbound) -> None:
        if conn.refusal:
            self.stats["curve_refused"] += 1
        peer = self.peer_of.pop(conn.fd, None)
        if peer is not None:
            left = self.per_peer.get(peer, 1) - 1
            if left > 0:
                self.per_peer[peer] = left
            else:
                self.per_peer.pop(peer, None)
        self.handshaking.pop(conn.fd, None)
        self.inbound.pop(conn.fd, None)
        try:
            self.epoll.unregister(conn.fd)
        except (KeyError, OSError):
            pass
        conn.sock.close()

    # ---- sending ------------------------------------------------------------------------

    def send(self, address: str, data: bytes | bytearray | memoryview) -> None:
        """Queue one single-frame message to ``address`` (a ``tcp://host:port``)."""
        if self.plain and address in self.plain:
            oc = self.outbound.get("null|" + address) or self._connect(address, True)
        else:
            oc = self.outbound.get(address) or self._connect(address)
        if oc is None:
            return
        if oc.secure:
            codec = oc.inbound.codec
            if codec is None:  # CURVE handshake not finished: wait unsealed
                self._wait_plain(oc, data)
                return
            if len(data) <= SMALL:
                data = codec.frame(data)  # the whole frame, header included
                head = b""
            else:
                data = codec.seal(data)
                head = frame_header(len(data))
            n = len(data)
        else:
            n = len(data)
            head = bytes((0, n)) if n < 256 else b"\x02" + _pack_long(n)
        if oc.waiting is not None:  # handshake not finished
            if self._over(oc, n):
                self.stats["send_dropped"] += 1
                return
            if head:  # (empty: a CURVE frame with its header)
                oc.waiting.append(memoryview(head))
            oc.waiting.append(_owned(data))
            self._queued(oc, len(head) + n)
            return
        if oc.pending or self.corked:
            if self._over(oc, n):
                self.stats["send_dropped"] += 1
                return
            if self.corked and not oc.writing:
                self.dirty[oc.fd] = oc
            self._queued(oc, len(head) + n)
            if head:
                oc.pending.append(memoryview(head))
            oc.pending.append(_owned(data))
            return
        try:
            if n < 65536:
                sent = oc.sock.send(head + data)
                total = len(head) + n
                if sent < total:
                    oc.pending.append(memoryview(head + data)[sent:])
            else:
                sent = oc.sock.sendmsg([head, data])
                total = len(head) + n
                if sent < total:
                    rest = _owned(data)
                    if sent < len(head):
                        oc.pending.append(memoryview(head)[sent:])
                        oc.pending.append(rest)
                    else:
                        oc.pending.append(rest[sent - len(head) :])
        except (BlockingIOError, InterruptedError):
            if head:
                oc.pending.append(memoryview(head))
            oc.pending.append(_owned(data))
            sent, total = 0, len(head) + n
        except OSError:
            self.stats["send_dropped"] += 1
            self._drop_out(oc)
            return
        if sent < total:
            self._queued(oc, total - sent)
            self._want_write(oc)

    def _wait_plain(self, oc: _Outbound, data: bytes | bytearray | memoryview) -> None:
        """CURVE: a message for a connection still in its handshake, kept unsealed
        (the box needs the session key); sealed when the handshake completes."""
        assert oc.waiting is not None
        if self._over(oc, len(data)):
            self.stats["send_dropped"] += 1
            return
        oc.waiting.append(_owned(data))
        self._queued(oc, len(data))

    def _over(self, oc: _Outbound, n: int) -> bool:
        """Whether a message of ``n`` bytes would exceed the peer's queue bound. Large
        messages (over half the bound) do not count: one is taken while the rest of
        the queue is at most half the bound, and what follows it is still taken."""
        base = oc.pending_bytes - oc.pending_large
        if n > self.max_pending >> 1:
            return base > self.max_pending >> 1
        return base + n > self.max_pending

    def _queued(self, oc: _Outbound, n: int) -> None:
        oc.pending_bytes += n
        if n > self.max_pending >> 1:
            oc.pending_large += n

    def send_parts(self, address: str, parts: Sequence[bytes]) -> None:
        """Queue one single-frame message made of ``parts`` (immutable, not copied:
        a large value's answer goes out straight from the stored value)."""
        plain = bool(self.plain) and address in self.plain
        if self.curve is not None and not plain:
            self.send(address, b"".join(parts))  # the box is one buffer anyway
            return
        if plain:
            oc = self.outbound.get("null|" + address) or self._connect(address, True)
        else:
            oc = self.outbound.get(address) or self._connect(address)
        if oc is None:
            return
        n = sum(map(len, parts))
        head = bytes((0, n)) if n < 256 else b"\x02" + _pack_long(n)
        queue = oc.waiting if oc.waiting is not None else oc.pending
        if queue or self.corked or oc.waiting is not None:
            if self._over(oc, n):
                self.stats["send_dropped"] += 1
                return
            if self.corked and not oc.writing and oc.waiting is None:
                self.dirty[oc.fd] = oc
            queue.append(memoryview(head))
            queue.extend(memoryview(p) for p in parts if p)
            self._queued(oc, len(head) + n)
            return
        oc.pending.append(memoryview(head))
        oc.pending.extend(memoryview(p) for p in parts if p)
        self._queued(oc, len(head) + n)
        self._flush(oc)

    def cork(self) -> None:
        """Hold replies until :meth:`uncork`: then each connection's messages leave in
        one system call."""
        self.corked = True

    def uncork(self) -> None:
        self.corked = False
        dirty, self.dirty = self.dirty, {}
        for oc in dirty.values():
            if self.out_by_fd.get(oc.fd) is oc and oc.pending and not oc.writing:
                self._flush(oc)

    def _connect(self, address: str, plain: bool = False) -> _Outbound | None:
        """A new outbound connection (``plain``: NULL, to a NULL peer's answer address)."""
        try:
            host, port = parse_tcp(address)
        except ValueError:
            self.stats["bad_address"] += 1
            return None
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            _tune(sock)
            err = sock.connect_ex((host, port))
        except (OSError, OverflowError, ValueError):  # e.g. a name that does not resolve
            sock.close()
            self.stats["bad_address"] += 1
            return None
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self.stats["send_dropped"] += 1
            return None
        if plain:
            oc = _Outbound(address, sock, None, "null|" + address)
            hello = _NULL_PUSH_HELLO
        else:
            oc = _Outbound(address, sock, self.curve)
            hello = self.hello_push
        if oc.secure:
            # WELCOME and READY must follow our greeting (which may still be queued).
            oc.inbound.writer = partial(self._handshake_out, oc)
        self.outbound[oc.key] = oc
        self.out_by_fd[oc.fd] = oc
        self.epoll.register(oc.fd, select.EPOLLIN)
        # Our greeting and READY go first; the peer reads them before our messages.
        oc.pending.append(memoryview(hello))
        oc.pending_bytes = len(hello)
        if err == 0:
            self._flush(oc)
        else:
            self._want_write(oc)
        if len(self.outbound) > MAX_OUT_CONNECTIONS:
            self._drop_out(next(iter(self.outbound.values())))
        return oc

    def _handshake_out(self, oc: _Outbound, frame: bytes) -> None:
        oc.pending.append(memoryview(frame))
        oc.pending_bytes += len(frame)
        self._flush(oc)
        if self.out_by_fd.get(oc.fd) is not oc:
            raise ZmtpError("connection dropped during the handshake")

    def _want_write(self, oc: _Outbound) -> None:
        if not oc.writing:
            oc.writing = True
            self.epoll.modify(oc.fd, select.EPOLLIN | select.EPOLLOUT)

    def _flush(self, oc: _Outbound) -> None:
        pending = oc.pending
        try:
            while pending:
                sent = oc.sock.sendmsg(list(itertools.islice(pending, 0, 256)))
                oc.pending_bytes -= sent
                while sent:
                    head = pending[0]
                    if sent >= len(head):
                        sent -= len(head)
                        pending.popleft()
                    else:
                        pending[0] = head[sent:]
                        sent = 0
        except (BlockingIOError, InterruptedError):
            self._want_write(oc)
            return
        except OSError:
            self.stats["send_dropped"] += 1
            self._drop_out(oc)
            return
        oc.pending_large = 0  # the queue is empty
        if oc.writing:
            oc.writing = False
            self.epoll.modify(oc.fd, select.EPOLLIN)

    def _outbound_event(self, oc: _Outbound, ev: int) -> None:
        if ev & (select.EPOLLERR | select.EPOLLHUP):
            self._drop_out(oc)
            return
        if ev & select.EPOLLIN:
            got = oc.inbound.read()  # the peer's greeting/READY; a PULL sends nothing else
            if got is None:
                if not oc.secure and not oc.inbound.handshaken and self.curve is not None:
                    # A NULL answer address that does not take NULL (a CURVE client
                    # listens there now): answer it over CURVE again.
                    self.plain.pop(oc.address, None)
                self._drop_out(oc)
                return
            if got:
                self.stats["unexpected_messages"] += len(got)
            if oc.waiting is not None and oc.inbound.handshaken:
                codec = oc.inbound.codec
                if codec is not None:  # CURVE: seal what waited
                    for plain in oc.waiting:
                        body = codec.seal(plain)
                        head = frame_header(len(body))
                        oc.pending.append(memoryview(head))
                        oc.pending.append(memoryview(body))
                        oc.pending_bytes += len(head) + len(body) - len(plain)
                else:
                    oc.pending.extend(oc.waiting)
                oc.waiting = None
                self._flush(oc)
                if oc.fd not in self.out_by_fd:
                    return
        if ev & select.EPOLLOUT:
            self._flush(oc)

    def _drop_out(self, oc: _Outbound) -> None:
        if self.outbound.get(oc.key) is oc:
            del self.outbound[oc.key]
        if self.out_by_fd.get(oc.fd) is not oc:
            return  # already dropped (its descriptor may belong to a newer connection)
        del self.out_by_fd[oc.fd]
        if oc.pending or oc.waiting:
            self.stats["send_dropped"] += 1
        try:
            self.epoll.unregister(oc.fd)
        except (KeyError, OSError):
            pass
        oc.sock.close()

    def flush_all(self, timeout: float) -> None:
        """Give queued replies up to ``timeout`` seconds to leave (on shutdown)."""
        deadline = _monotonic() + timeout
        while any(oc.pending for oc in self.outbound.values()) and _monotonic() < deadline:
            self.poll(0.01)

    def close(self) -> None:
        for conn in list(self.inbound.values()):
            conn.sock.close()
        for oc in list(self.outbound.values()):
            oc.sock.close()
        self.inbound.clear()
        self.outbound.clear()
        self.out_by_fd.clear()
        self.lsock.close()
        self.epoll.close()


def parse_tcp(address: str) -> tuple[str, int]:
    """``tcp://host:port`` -> ``(host, port)`` (ValueError otherwise)."""
    if not address.startswith("tcp://"):
        raise ValueError(f"not a tcp:// address: {address!r}")
    host, sep, port = address[6:].rpartition(":")
    if not sep or not port.isdigit() or not host or not 0 < int(port) < 65536:
        raise ValueError(f"not a tcp://host:port address: {address!r}")
    return host, int(port)
