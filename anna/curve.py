"""The CURVE security mechanism of ZMTP 3.0 (RFC 25 ZMTP-CURVE, RFC 26 CurveZMQ), pure.

No sockets here: each side is a small state machine fed the *bodies* of ZMTP command
frames (``b"\\x05HELLO..."``) and returning the bodies to send back; :mod:`anna.zmtp`
puts them in frames. After the handshake a :class:`CurveCodec` seals and opens
MESSAGE commands with the connection's precomputed shared key (``crypto_box_beforenm``
once, then one ``crypto_box_afternm`` per frame).

The handshake, as libzmq does it (C = client long-term key, C' = client transient,
S = server long-term, S' = server transient; Box[x](A->B) = crypto_box from A to B)::

    C: HELLO    version, 72 zero bytes, C', nonce, Box[64 zeros](C'->S)
    S: WELCOME  16-byte nonce, Box[S' + cookie](S->C')
                cookie = 16-byte nonce + SecretBox[C' + s'](K), K a per-connection key
    C: INITIATE cookie, nonce, Box[C + vouch + metadata](C'->S')
                vouch = 16-byte nonce + Box[C' + S](C->S')
    S: READY    nonce, Box[metadata](S'->C')    (or ERROR: the client is refused)

Short nonces are 8-byte big-endian counters starting at 1 on each side; every box a
side receives must carry a larger nonce than the previous one (replays are refused).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

from nacl import bindings as _nacl
from nacl._sodium import ffi as _ffi
from nacl._sodium import lib as _lib
from nacl.exceptions import CryptoError

KEY_LEN = 32
_pack_nonce = struct.Struct(">Q").pack
_pack_nonce_into = struct.Struct(">Q").pack_into
_unpack_nonce = struct.Struct(">Q").unpack_from

HELLO_LEN = 200
WELCOME_LEN = 168
COOKIE_LEN = 96
MESSAGE_PREFIX = b"\x07MESSAGE"

_box = _nacl.crypto_box
_box_open = _nacl.crypto_box_open
_before = _nacl.crypto_box_beforenm
_after = _nacl.crypto_box_afternm
_open_after = _nacl.crypto_box_open_afternm
# MESSAGE boxes go straight through libsodium's combined-mode calls (the box is
# MAC + ciphertext, ZMTP's layout): no zero padding, one output buffer, the input read
# in place. PyNaCl's crypto_box_afternm pads and copies (3x slower on small frames).
_easy_after = _lib.crypto_box_easy_afternm
_open_easy_after = _lib.crypto_box_open_easy_afternm
_from_buffer = _ffi.from_buffer
_BIG = 64 * 1024  # from this size buffers are allocated without zeroing them
#: Frames whose payload is at most this many bytes (a KVS request or answer of a small
#: value) are boxed and opened in the codec's own C buffer (:meth:`CurveCodec.frame`,
#: :meth:`CurveCodec.open_at`): no per-message allocation but the result, no pointer
#: arithmetic, no nonce concatenation.
SMALL = 2048
# The scratch buffer of a small frame: ZMTP header (2 or 9 bytes, right-aligned at 9),
# "\x07MESSAGE" (8), short nonce (8), MAC (16), flags (1), payload.
_S_BODY = 9
_S_NONCE = _S_BODY + 8
_S_MAC = _S_BODY + 16
_S_PLAIN = _S_BODY + 32
_S_SIZE = _S_PLAIN + 1 + SMALL
_new = _ffi.new
_c_buffer = _ffi.buffer


try:
    import ctypes

    _new_bytearray = ctypes.pythonapi.PyByteArray_FromStringAndSize
    _new_bytearray.restype = ctypes.py_object
    _new_bytearray.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t]

    def _uninitialized(size: int) -> bytearray:
        """A bytearray of ``size`` bytes, not zeroed (O(1); ``bytearray(size)`` zeroes
        it with the GIL held, 0.3-2 s for 500 MB on a busy machine)."""
        out: bytearray = _new_bytearray(None, size)
        return out

except (ImportError, AttributeError):  # pragma: no cover - not CPython

    def _uninitialized(size: int) -> bytearray:
        return bytearray(size)


class CurveError(Exception):
    """The peer failed the handshake or sent a box that does not open.

    ``reason`` is what goes into an ERROR command (RFC 25: a short text; libzmq sends
    ZAP status codes such as ``400``)."""

    def __init__(self, message: str, reason: str = "400") -> None:
        super().__init__(message)
        self.reason = reason


def keypair() -> tuple[bytes, bytes]:
    """A fresh (public, secret) key pair, raw 32 bytes each."""
    public, secret = _nacl.crypto_box_keypair()
    return bytes(public), bytes(secret)


def public_of(secret: bytes) -> bytes:
    """The public key of a raw secret key."""
    return bytes(_nacl.crypto_scalarmult_base(secret))


def encode_metadata(props: dict[bytes, bytes]) -> bytes:
    """ZMTP metadata: name (1-byte length) and value (4-byte length), repeated."""
    out = bytearray()
    for name, value in props.items():
        out += bytes((len(name),)) + name + struct.pack(">I", len(value)) + value
    return bytes(out)


def decode_metadata(data: bytes, start: int = 0) -> dict[bytes, bytes]:
    """Properties of ZMTP metadata from ``data[start:]``, names lower-cased (CurveError
    if truncated). The one parser of both mechanisms: NULL's READY (:mod:`anna.zmtp`)
    and CURVE's INITIATE and READY boxes."""
    props: dict[bytes, bytes] = {}
    i = start
    while i < len(data):
        nlen = data[i]
        name = data[i + 1 : i + 1 + nlen]
        i += 1 + nlen
        if i + 4 > len(data):
            raise CurveError("truncated metadata property")
        (vlen,) = struct.unpack_from(">I", data, i)
        i += 4
        if i + vlen > len(data):
            raise CurveError("truncated metadata value")
        props[name.lower()] = data[i : i + vlen]
        i += vlen
    return props


def error_body(reason: str) -> bytes:
    """An ERROR command body (RFC 23): the reason, at most 255 bytes."""
    text = reason.encode()[:255]
    return b"\x05ERROR" + bytes((len(text),)) + text


def parse_error(body: bytes) -> str | None:
    """The reason of an ERROR command body, or None if ``body`` is not one."""
    if body[:6] != b"\x05ERROR":
        return None
    n = body[6] if len(body) > 6 else 0
    return body[7 : 7 + n].decode(errors="replace")


def _check_key(key: bytes, what: str) -> bytes:
    if len(key) != KEY_LEN:
        raise ValueError(f"{what} must be {KEY_LEN} raw bytes, got {len(key)}")
    return bytes(key)


def _open(box: bytes, nonce: bytes, public: bytes, secret: bytes, what: str) -> bytes:
    try:
        return bytes(_box_open(box, nonce, public, secret))
    except (CryptoError, ValueError, TypeError):
        raise CurveError(f"{what} does not open (wrong key or tampered)") from None


class CurveCodec:
    """Seals and opens MESSAGE commands of one established connection.

    ``seal`` numbers its boxes 2, 3, ... (after the handshake's own); ``open`` refuses a
    box whose nonce is not larger than the last one accepted (a replay, a reorder).
    Small frames (:meth:`frame`, :meth:`open_at`) go through one C buffer of the codec:
    like the connection, a codec is used by one thread at a time.
    """

    __slots__ = (
        "key",
        "send_prefix",
        "recv_prefix",
        "send_nonce",
        "recv_nonce",
        "_ckey",
        "_scratch",
        "_sbuf",
        "_mac_at",
        "_plain_at",
        "_snonce",
        "_snbuf",
        "_rnonce",
        "_rnbuf",
    )

    def __init__(
        self, key: bytes, is_server: bool, send_nonce: int = 2, recv_nonce: int = 1
    ) -> None:
        self.key = key
        self.send_prefix = b"CurveZMQMESSAGES" if is_server else b"CurveZMQMESSAGEC"
        self.recv_prefix = b"CurveZMQMESSAGEC" if is_server else b"CurveZMQMESSAGES"
        self.send_nonce = send_nonce  # the next nonce to send
        self.recv_nonce = recv_nonce  # the last nonce received
        # Small frames: the key, both 24-byte nonces and one frame buffer live in C
        # memory; the counters are written into them in place.
        self._ckey = _new("unsigned char[]", bytes(key))
        self._scratch = _new("unsigned char[]", _S_SIZE)
        self._sbuf = _c_buffer(self._scratch)
        self._sbuf[_S_BODY:_S_NONCE] = MESSAGE_PREFIX
        self._mac_at = self._scratch + _S_MAC
        self._plain_at = self._scratch + _S_PLAIN
        self._snonce = _new("unsigned char[]", self.send_prefix + bytes(8))
        self._snbuf = _c_buffer(self._snonce)
        self._rnonce = _new("unsigned char[]", self.recv_prefix + bytes(8))
        self._rnbuf = _c_buffer(self._rnonce)

    def frame(self, payload: bytes | bytearray | memoryview, more: bool = False) -> bytes:
        """The whole ZMTP frame (flags, size, MESSAGE command) carrying ``payload`` of at
        most :data:`SMALL` bytes, boxed in the codec's buffer: one copy in, one out."""
        n = len(payload)
        sbuf = self._sbuf
        scratch = self._scratch
        sbuf[_S_PLAIN + 1 : _S_PLAIN + 1 + n] = payload
        scratch[_S_PLAIN] = 1 if more else 0
        nonce = self.send_nonce
        self.send_nonce = nonce + 1
        _pack_nonce_into(sbuf, _S_NONCE, nonce)
        _pack_nonce_into(self._snbuf, 16, nonce)
        if _easy_after(self._mac_at, self._plain_at, n + 1, self._snonce, self._ckey):
            raise CurveError("sealing failed")  # pragma: no cover - libsodium never fails
        size = n + 33
        if size < 256:
            scratch[_S_BODY - 2] = 0
            scratch[_S_BODY - 1] = size
            short: bytes = sbuf[_S_BODY - 2 : _S_BODY + size]
            return short
        scratch[0] = 0x02
        _pack_nonce_into(sbuf, 1, size)
        long: bytes = sbuf[0 : _S_BODY + size]
        return long

    def frame_parts(self, parts: list[bytes]) -> bytes:
        """:meth:`frame` of the payload ``b"".join(parts)`` (at most :data:`SMALL` bytes)."""
        return self.frame(b"".join(parts))

    def open_at(
        self, buf: bytes | bytearray, start: int, end: int
    ) -> tuple[int, bytes | bytearray]:
        """Like :meth:`open` for the MESSAGE body ``buf[start:end]`` of a small frame
        (payload at most :data:`SMALL` bytes), read where it lies; the payload as bytes."""
        n = end - start
        if n < 33 or n > SMALL + 33 or not buf.startswith(MESSAGE_PREFIX, start):
            if n > SMALL + 33:
                return self.open(buf[start:end])
            raise CurveError("expected a MESSAGE command")
        (nonce,) = _unpack_nonce(buf, start + 8)
        if nonce <= self.recv_nonce:
            raise CurveError(f"MESSAGE nonce {nonce} not above {self.recv_nonce} (replay)")
        _pack_nonce_into(self._rnbuf, 16, nonce)
        if _open_easy_after(
            self._plain_at,
            _from_buffer(buf) + (start + 16),
            n - 16,
            self._rnonce,
            self._ckey,
        ):
            raise CurveError("MESSAGE box does not open (tampered or wrong key)")
        self.recv_nonce = nonce
        payload: bytes = self._sbuf[_S_PLAIN + 1 : _S_PLAIN + n - 32]
        return self._scratch[_S_PLAIN], payload

    def seal(self, payload: bytes | bytearray | memoryview, more: bool = False) -> bytearray:
        """The MESSAGE command body carrying one frame (``more``: not the last)."""
        n = len(payload)
        # "\x07MESSAGE", nonce, MAC, flags, payload; small buffers are cheaper zeroed
        # than through ctypes.
        out = bytearray(n + 33) if n < _BIG else _uninitialized(n + 33)
        out[32] = 1 if more else 0
        out[33:] = payload  # the only copy: the box is made in place over it
        return self._seal(out)

    def seal_parts(self, parts: list[bytes], more: bool = False) -> bytearray:
        """Like :meth:`seal`, the frame given as pieces (joined once, into the box)."""
        n = sum(map(len, parts))
        out = bytearray(n + 33) if n < _BIG else _uninitialized(n + 33)
        out[32] = 1 if more else 0
        pos = 33
        for p in parts:
            out[pos : pos + len(p)] = p
            pos += len(p)
        return self._seal(out)

    def _seal(self, out: bytearray) -> bytearray:
        """Box ``out[32:]`` (flags + payload) in place: MAC at 16, ciphertext at 32."""
        nonce = self.send_nonce
        self.send_nonce = nonce + 1
        short = _pack_nonce(nonce)
        out[:16] = MESSAGE_PREFIX + short
        buf = _from_buffer(out)
        if _easy_after(buf + 16, buf + 32, len(out) - 32, self.send_prefix + short, self.key):
            raise CurveError("sealing failed")  # pragma: no cover - libsodium never fails
        return out

    def open(self, body: bytes | bytearray | memoryview) -> tuple[int, bytearray]:
        """(flags, payload) of a MESSAGE command body; flags bit 0 = more, bit 1 =
        command (a PING the peer encrypted). CurveError: not a MESSAGE, an old nonce, or
        a box that does not open."""
        n = len(body)
        if n < 33 or body[:8] != MESSAGE_PREFIX:
            raise CurveError("expected a MESSAGE command")
        (nonce,) = _unpack_nonce(body, 8)
        if nonce <= self.recv_nonce:
            raise CurveError(f"MESSAGE nonce {nonce} not above {self.recv_nonce} (replay)")
        out = bytearray(n - 32) if n < _BIG else _uninitialized(n - 32)
        if _open_easy_after(
            _from_buffer(out),
            _from_buffer(body) + 16,
            n - 16,
            self.recv_prefix + bytes(body[8:16]),
            self.key,
        ):
            raise CurveError("MESSAGE box does not open (tampered or wrong key)")
        self.recv_nonce = nonce
        flags = out[0]
        del out[:1]  # O(1): a bytearray drops its head by moving its start
        return flags, out


class CurveClient:
    """The client side: :meth:`hello`, then :meth:`welcome` -> INITIATE, then
    :meth:`ready` -> the server's metadata; ``codec`` is set once READY opened."""

    def __init__(
        self,
        server_public: bytes,
        public: bytes,
        secret: bytes,
        metadata: dict[bytes, bytes],
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.server_public = _check_key(server_public, "server public key")
        self.public = _check_key(public, "client public key")
        self.secret = _check_key(secret, "client secret key")
        self.metadata = encode_metadata(metadata)
        self.random = random
        self.cn_public, self.cn_secret = keypair()
        self.nonce = 1
        self.precomputed: bytes | None = None
        self.codec: CurveCodec | None = None

    def hello(self) -> bytes:
        short = _pack_nonce(self.nonce)
        self.nonce += 1
        box = _box(bytes(64), b"CurveZMQHELLO---" + short, self.server_public, self.cn_secret)
        return b"\x05HELLO\x01\x00" + bytes(72) + self.cn_public + short + bytes(box)

    def welcome(self, body: bytes) -> bytes:
        """WELCOME in, INITIATE out."""
        reason = parse_error(body)
        if reason is not None:
            raise CurveError(f"server refused the connection: {reason}", reason)
        if len(body) != WELCOME_LEN or body[:8] != b"\x07WELCOME":
            raise CurveError("expected a WELCOME command (is the server key right?)")
        plain = _open(
            body[24:],
            b"WELCOME-" + body[8:24],
            self.server_public,
            self.cn_secret,
            "WELCOME box (the server does not hold the expected server key)",
        )
        server_transient, cookie = plain[:32], plain[32:128]
        vouch_nonce = self.random(16)
        vouch_box = _box(
            self.cn_public + self.server_public,
            b"VOUCH---" + vouch_nonce,
            server_transient,
            self.secret,
        )
        self.precomputed = bytes(_before(server_transient, self.cn_secret))
        short = _pack_nonce(self.nonce)
        self.nonce += 1
        plain_init = self.public + vouch_nonce + bytes(vouch_box) + self.metadata
        box = _after(plain_init, b"CurveZMQINITIATE" + short, self.precomputed)
        return b"\x08INITIATE" + cookie + short + bytes(box)

    def ready(self, body: bytes) -> dict[bytes, bytes]:
        """READY (or ERROR) in; the server's metadata. Sets :attr:`codec`."""
        reason = parse_error(body)
        if reason is not None:
            raise CurveError(f"server refused this client's key: {reason}", reason)
        if len(body) < 30 or body[:6] != b"\x05READY" or self.precomputed is None:
            raise CurveError("expected a READY command")
        (nonce,) = _unpack_nonce(body, 6)
        try:
            plain = _open_after(body[14:], b"CurveZMQREADY---" + body[6:14], self.precomputed)
        except (CryptoError, ValueError):
            raise CurveError("READY box does not open") from None
        props = decode_metadata(bytes(plain))
        self.codec = CurveCodec(self.precomputed, False, send_nonce=self.nonce, recv_nonce=nonce)
        return props


class CurveServer:
    """The server side: :meth:`hello` -> WELCOME, then :meth:`initiate` -> READY.

    ``authorize(client_public_key)`` decides whether a client proven to hold that key
    is admitted (deny: CurveError, whose reason goes into an ERROR command). Until
    INITIATE the server holds only a transient key pair and a cookie key; an
    unauthenticated peer costs it two box operations (RFC 26's anti-amplification:
    HELLO is longer than WELCOME)."""

    def __init__(
        self,
        public: bytes,
        secret: bytes,
        authorize: Callable[[bytes], bool],
        metadata: dict[bytes, bytes],
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.public = _check_key(public, "server public key")
        self.secret = _check_key(secret, "server secret key")
        self.authorize = authorize
        self.metadata = encode_metadata(metadata)
        self.random = random
        self.nonce = 1
        self.client_transient: bytes | None = None
        self.hello_nonce = 0
        self.cookie_key: bytes | None = None
        self.cn_public = b""
        self.cn_secret = b""
        self.client_public: bytes | None = None  # set once INITIATE is accepted
        self.codec: CurveCodec | None = None

    def hello(self, body: bytes) -> bytes:
        """HELLO in, WELCOME out."""
        if len(body) != HELLO_LEN or body[:6] != b"\x05HELLO":
            raise CurveError("expected a HELLO command of 200 bytes")
        if body[6] != 1:
            raise CurveError(f"CurveZMQ version {body[6]}.{body[7]} is not supported")
        if self.client_transient is not None:
            raise CurveError("a second HELLO")
        client_transient = body[80:112]
        _open(
            body[120:200],
            b"CurveZMQHELLO---" + body[112:120],
            client_transient,
            self.secret,
            "HELLO box (the client uses another server key)",
        )
        self.client_transient = client_transient
        (self.hello_nonce,) = _unpack_nonce(body, 112)
        self.cn_public, self.cn_secret = keypair()
        self.cookie_key = self.random(32)
        cookie_nonce = self.random(16)
        cookie_box = _nacl.crypto_secretbox(
            client_transient + self.cn_secret, b"COOKIE--" + cookie_nonce, self.cookie_key
        )
        cookie = cookie_nonce + bytes(cookie_box)
        welcome_nonce = self.random(16)
        box = _box(
            self.cn_public + cookie, b"WELCOME-" + welcome_nonce, client_transient, self.secret
        )
        return b"\x07WELCOME" + welcome_nonce + bytes(box)

    def initiate(self, body: bytes) -> tuple[bytes, dict[bytes, bytes]]:
        """INITIATE in; (READY body, the client's metadata). Sets :attr:`codec` and
        :attr:`client_public`. CurveError: refuse (answer ERROR, close)."""
        if self.cookie_key is None or self.client_transient is None:
            raise CurveError("INITIATE before HELLO")
        if len(body) < 9 + COOKIE_LEN + 8 + 16 + 128 or body[:9] != b"\x08INITIATE":
            raise CurveError("expected an INITIATE command")
        cookie = body[9:105]
        try:
            plain_cookie = bytes(
                _nacl.crypto_secretbox_open(cookie[16:], b"COOKIE--" + cookie[:16], self.cookie_key)
            )
        except (CryptoError, ValueError):
            raise CurveError("INITIATE cookie does not open") from None
        # The cookie key is used once: forget it (RFC 26).
        self.cookie_key = None
        if plain_cookie[:32] != self.client_transient or plain_cookie[32:] != self.cn_secret:
            raise CurveError("INITIATE cookie is not this connection's")
        (nonce,) = _unpack_nonce(body, 105)
        if nonce <= self.hello_nonce:
            raise CurveError("INITIATE nonce not above HELLO's (replay)")
        precomputed = bytes(_before(self.client_transient, self.cn_secret))
        try:
            plain = bytes(_open_after(body[113:], b"CurveZMQINITIATE" + body[105:113], precomputed))
        except (CryptoError, ValueError):
            raise CurveError("INITIATE box does not open") from None
        if len(plain) < 32 + 96:
            raise CurveError("INITIATE box too short")
        client_public = plain[:32]
        vouch = _open(
            plain[48:128],
            b"VOUCH---" + plain[32:48],
            client_public,
            self.cn_secret,
            "vouch (the client does not hold the key it claims)",
        )
        if vouch[:32] != self.client_transient or vouch[32:64] != self.public:
            raise CurveError("vouch names another connection or server")
        props = decode_metadata(plain[128:])
        if not self.authorize(client_public):
            raise CurveError("client key is not authorized", "400")
        self.client_public = client_public
        short = _pack_nonce(self.nonce)
        self.nonce += 1
        box = _after(self.metadata, b"CurveZMQREADY---" + short, precomputed)
        self.codec = CurveCodec(precomputed, True, send_nonce=self.nonce, recv_nonce=nonce)
        return b"\x05READY" + short + bytes(box), props
