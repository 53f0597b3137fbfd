"""Pure encode/decode of the KVS messages (no sockets).

Anna's messages travel as one ZeroMQ frame holding one serialized protobuf. Messages of
this implementation only (membership, heartbeats, gossip, depart) travel as two frames
``[kind, body]`` so they can share a port with Anna's one-frame messages.
Every decode failure becomes :class:`cloudburst.shared.errors.WireError`.
"""

from __future__ import annotations

from typing import TypeVar, cast

from google.protobuf.message import DecodeError, Message

from anna.proto import anna_pb2 as pb
from cloudburst.shared.errors import WireError

M = TypeVar("M", bound=Message)

#: parse_single_key_response leaves payloads at least this large as views.
LARGE_VIEW = 1 << 20

KIND_MEMBERSHIP = b"membership"
KIND_HEARTBEAT = b"heartbeat"
KIND_GOSSIP = b"gossip"
KIND_DEPART = b"depart"
KIND_JOIN = b"join"
KIND_ANTI_ENTROPY = b"antientropy"

INTERNAL_KINDS = {
    KIND_MEMBERSHIP: pb.Membership,
    KIND_HEARTBEAT: pb.Heartbeat,
    KIND_GOSSIP: pb.Gossip,
    KIND_DEPART: pb.Depart,
    KIND_JOIN: pb.Membership,
    KIND_ANTI_ENTROPY: pb.AntiEntropy,
}


def decode(cls: type[M], data: bytes | memoryview) -> M:
    """Parse ``data`` as ``cls``; raise :class:`WireError` on malformed bytes."""
    msg: M = cls()
    try:
        msg.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise WireError(f"malformed {cls.__name__} ({len(data)} bytes): {exc}") from None
    return msg


def decode_key_request(data: bytes | memoryview) -> pb.KeyRequest:
    return decode(pb.KeyRequest, data)


def decode_key_response(data: bytes) -> pb.KeyResponse:
    return decode(pb.KeyResponse, data)


def decode_address_request(data: bytes) -> pb.KeyAddressRequest:
    return decode(pb.KeyAddressRequest, data)


def decode_address_response(data: bytes) -> pb.KeyAddressResponse:
    return decode(pb.KeyAddressResponse, data)


def decode_subscription(data: bytes) -> pb.CacheSubscription:
    return decode(pb.CacheSubscription, data)


def varint(n: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int."""
    if n < 0x80:
        return _SMALL[n]
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = [bytes([i]) for i in range(0x80)]


def key_request_parts(
    rtype: int,
    key: str,
    lattice_type: int,
    payload_parts: list[bytes],
    address_cache_size: int,
    response_address_field: bytes,
    request_id: str,
) -> list[bytes]:
    """A one-tuple serialized ``KeyRequest`` as pieces to ``b"".join`` (or send as is).

    Byte-identical to protobuf's encoding (fields in number order, defaults omitted);
    ``payload_parts`` are concatenated as the payload without an intermediate copy.
    ``response_address_field`` is :func:`string_field` (3, address), built once.
    """
    kb = key.encode()
    inner = [b"\x0a", varint(len(kb)), kb] if kb else []
    if lattice_type:
        inner += [b"\x10", varint(lattice_type)]
    plen = sum(map(len, payload_parts))
    if plen:
        inner += [b"\x22", varint(plen), *payload_parts]
    if address_cache_size:
        inner += [b"\x28", varint(address_cache_size)]
    rid = request_id.encode()
    head = [b"\x08", varint(rtype)] if rtype else []
    tail = [b"\x22", varint(len(rid)), rid] if rid else []
    return [*head, b"\x12", varint(sum(map(len, inner))), *inner, response_address_field, *tail]


#: A parsed one-tuple KeyRequest: ``(type, key, lattice_type, payload,
#: address_cache_size, response_address, request_id)``.
SingleRequest = tuple[int, str, int, bytes, int, str, str]

#: A parsed one-tuple KeyResponse: ``(type, key, lattice_type, error, payload,
#: invalidate, response_id)``.
SingleResponse = tuple[int, str, int, int, bytes, bool, str]


def _uvarint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it (IndexError past the end)."""
    b = data[pos]
    if b < 0x80:
        return b, pos + 1
    value = b & 0x7F
    shift = 7
    while True:
        pos += 1
        b = data[pos]
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos + 1
        shift += 7
        if shift > 63:
            raise IndexError("varint too long")


def _field(data: bytes | memoryview, pos: int, limit: int) -> tuple[bytes | memoryview, int]:
    """The length-delimited field whose length varint starts at ``pos``, and the
    position after it. Raises IndexError (malformed, to the parsers' except) past
    ``limit``."""
    ln, pos = _uvarint(data, pos)
    end = pos + ln
    if end > limit:
        raise IndexError("field runs past its message")
    return data[pos:end], end


def _single_tuple(data: bytes | memoryview) -> tuple[int, int, int]:
    """``(type, start, end)`` of the only tuple of a ``KeyRequest``/``KeyResponse``
    that starts with ``type = 1`` (optional) and ``tuples = 2``. Raises IndexError
    for anything else (the parsers then return None)."""
    rtype = 0
    pos = 0
    if data[0] == 0x08:
        rtype = data[1]
        if rtype > 0x7F:
            raise IndexError("multi-byte request type")
        pos = 2
    if data[pos] != 0x12:
        raise IndexError("no tuple")
    tlen, pos = _uvarint(data, pos + 1)
    tend = pos + tlen
    if tend > len(data):
        raise IndexError("tuple runs past the message")
    return rtype, pos, tend


def parse_single_key_request(data: bytes | memoryview) -> SingleRequest | None:
    """Fast decode of the usual request: one tuple, fields in canonical order.

    Returns None for anything else (several tuples, unknown or repeated fields,
    out-of-range values, malformed bytes): the caller then decodes with
    :func:`decode_key_request`, which gives the exact protobuf semantics. Whatever
    this returns equals what protobuf would decode.
    """
    try:
        n = len(data)
        rtype, pos, tend = _single_tuple(data)
        key = ""
        lattice_type = 0
        payload = b""
        cache_size = 0
        if pos < tend and data[pos] == 0x0A:
            raw, pos = _field(data, pos + 1, tend)
            key = str(raw, "utf-8")
        if pos < tend and data[pos] == 0x10:
            lattice_type = data[pos + 1]
            if lattice_type > 0x7F:
                return None
            pos += 2
        if pos < tend and data[pos] == 0x22:
            raw, pos = _field(data, pos + 1, tend)
            payload = bytes(raw)
        if pos < tend and data[pos] == 0x28:
            cache_size, pos = _uvarint(data, pos + 1)
            if cache_size > 0xFFFFFFFF:
                return None
        if pos != tend:
            return None
        address = ""
        request_id = ""
        if pos < n and data[pos] == 0x1A:
            raw, pos = _field(data, pos + 1, n)
            address = str(raw, "utf-8")
        if pos < n and data[pos] == 0x22:
            raw, pos = _field(data, pos + 1, n)
            request_id = str(raw, "utf-8")
        if pos != n:
            return None
    except (IndexError, UnicodeDecodeError):
        return None
    return rtype, key, lattice_type, payload, cache_size, address, request_id


def single_key_request_span(
    data: bytes | bytearray,
) -> tuple[int, str, int, int, int, int, str, str] | None:
    """Like :func:`parse_single_key_request` but without copying the payload (for
    large requests): ``(type, key, lattice_type, payload_start, payload_end,
    address_cache_size, response_address, request_id)``; None for anything else."""
    try:
        n = len(data)
        rtype, pos, tend = _single_tuple(data)
        key = ""
        lattice_type = 0
        pstart = pend = 0
        cache_size = 0
        if pos < tend and data[pos] == 0x0A:
            raw, pos = _field(data, pos + 1, tend)
            key = str(raw, "utf-8")
        if pos < tend and data[pos] == 0x10:
            lattice_type = data[pos + 1]
            if lattice_type > 0x7F:
                return None
            pos += 2
        if pos < tend and data[pos] == 0x22:
            ln, pstart = _uvarint(data, pos + 1)
            pend = pos = pstart + ln
            if pend > tend:
                return None
        if pos < tend and data[pos] == 0x28:
            cache_size, pos = _uvarint(data, pos + 1)
            if cache_size > 0xFFFFFFFF:
                return None
        if pos != tend:
            return None
        address = ""
        request_id = ""
        if pos < n and data[pos] == 0x1A:
            raw, pos = _field(data, pos + 1, n)
            address = str(raw, "utf-8")
        if pos < n and data[pos] == 0x22:
            raw, pos = _field(data, pos + 1, n)
            request_id = str(raw, "utf-8")
        if pos != n:
            return None
    except (IndexError, UnicodeDecodeError):
        return None
    return rtype, key, lattice_type, pstart, pend, cache_size, address, request_id


def lww_span(data: bytes | bytearray, start: int, end: int) -> tuple[int, int, int] | None:
    """``(timestamp, value_start, value_end)`` of the canonical ``LWWValue`` in
    ``data[start:end]`` (see :func:`parse_lww_payload`), without copying; None for
    anything else."""
    try:
        pos = start
        timestamp = 0
        if end > start and data[start] == 0x08:
            timestamp, pos = _uvarint(data, start + 1)
            if timestamp == 0 or timestamp > 0xFFFFFFFFFFFFFFFF:
                return None
        if pos == end:
            return timestamp, end, end
        if data[pos] != 0x12:
            return None
        ln, pos = _uvarint(data, pos + 1)
        if ln == 0 or pos + ln != end:
            return None
        return timestamp, pos, end
    except IndexError:
        return None


def single_key_response(
    rtype: int,
    key: str,
    lattice_type: int,
    error: int,
    payload: bytes,
    invalidate: bool,
    response_id: str,
) -> list[bytes]:
    """A one-tuple serialized ``KeyResponse`` as pieces to ``b"".join`` (the payload
    is one piece, not copied). Byte-identical to protobuf's encoding."""
    kb = key.encode()
    inner = [b"\x0a", varint(len(kb)), kb] if kb else []
    if lattice_type:
        inner += [b"\x10", varint(lattice_type)]
    if error:
        inner += [b"\x18", varint(error)]
    if payload:
        inner += [b"\x22", varint(len(payload)), payload]
    if invalidate:
        inner.append(b"\x30\x01")
    rid = response_id.encode()
    head = [b"\x08", varint(rtype)] if rtype else []
    tail = [b"\x1a", varint(len(rid)), rid] if rid else []
    return [*head, b"\x12", varint(sum(map(len, inner))), *inner, *tail]


def parse_single_key_response(data: bytes | memoryview) -> SingleResponse | None:
    """Fast decode of a one-tuple ``KeyResponse`` in canonical field order; None for
    anything else (decode those with :func:`decode_key_response`). A payload of
    ``LARGE_VIEW`` bytes or more of a memoryview is returned as a view of it."""
    try:
        n = len(data)
        rtype, pos, tend = _single_tuple(data)
        key = ""
        lattice_type = 0
        error = 0
        payload = b""
        invalidate = False
        if pos < tend and data[pos] == 0x0A:
            raw, pos = _field(data, pos + 1, tend)
            key = str(raw, "utf-8")
        if pos < tend and data[pos] == 0x10:
            lattice_type = data[pos + 1]
            if lattice_type > 0x7F:
                return None
            pos += 2
        if pos < tend and data[pos] == 0x18:
            error = data[pos + 1]
            if error > 0x7F:
                return None
            pos += 2
        if pos < tend and data[pos] == 0x22:
            raw, pos = _field(data, pos + 1, tend)
            # A large payload of a memoryview stays a view (no copy): the caller
            # copies the value out of it once.
            payload = bytes(raw) if len(raw) < LARGE_VIEW else cast(bytes, raw)
        if pos < tend and data[pos] == 0x30:
            if data[pos + 1] > 1:
                return None
            invalidate = data[pos + 1] == 1
            pos += 2
        if pos != tend:
            return None
        response_id = ""
        if pos < n and data[pos] == 0x1A:
            raw, pos = _field(data, pos + 1, n)
            response_id = str(raw, "utf-8")
        if pos != n:
            return None  # a top-level error field or anything unexpected
    except (IndexError, UnicodeDecodeError):
        return None
    return rtype, key, lattice_type, error, payload, invalidate, response_id


def parse_lww_payload(data: bytes) -> tuple[int, bytes] | None:
    """``(timestamp, value)`` of an ``LWWValue`` payload in canonical form (fields in
    order, defaults omitted, nothing else); None for anything else (decode those with
    ``lattices.codec.from_payload``, which gives protobuf's exact semantics)."""
    try:
        n = len(data)
        pos = 0
        timestamp = 0
        if n and data[0] == 0x08:
            timestamp, pos = _uvarint(data, 1)
            if timestamp == 0 or timestamp > 0xFFFFFFFFFFFFFFFF:
                return None
        if pos == n:
            return timestamp, b""
        if data[pos] != 0x12:
            return None
        ln, pos = _uvarint(data, pos + 1)
        if ln == 0 or pos + ln != n:
            return None
        return timestamp, data[pos:]
    except IndexError:
        return None


def string_field(number: int, value: str) -> bytes:
    """A serialized length-delimited field (empty for an empty string, as proto3 does)."""
    raw = value.encode()
    return varint(number << 3 | 2) + varint(len(raw)) + raw if raw else b""


def lww_payload_parts(timestamp: int, value: bytes) -> list[bytes]:
    """An ``LWWValue`` payload as pieces (no copy of ``value``)."""
    out = [b"\x08", varint(timestamp)] if timestamp else []
    if value:
        out += [b"\x12", varint(len(value)), value]
    return out


def encode_internal(kind: bytes, msg: Message) -> list[bytes]:
    """The two frames of an internal message."""
    return [kind, msg.SerializeToString()]


def decode_internal(frames: list[bytes]) -> tuple[bytes, Message]:
    """Inverse of :func:`encode_internal`; raise :class:`WireError` if malformed."""
    if len(frames) != 2:
        raise WireError(f"internal message must have 2 frames, got {len(frames)}")
    cls = INTERNAL_KINDS.get(bytes(frames[0]))
    if cls is None:
        raise WireError(f"unknown internal message kind {bytes(frames[0])[:32]!r}")
    return bytes(frames[0]), decode(cls, frames[1])


def valid_address(address: str) -> bool:
    """Whether ``address`` looks like a ZeroMQ endpoint we may connect to."""
    if address.startswith("tcp://"):
        host, sep, port = address[6:].rpartition(":")
        return bool(sep and host and port.isdigit() and 0 < int(port) < 65536)
    return address.startswith("ipc://") and len(address) > 6
