"""Pure encode/decode of the KVS messages (no sockets).

Anna's messages travel as one ZeroMQ frame holding one serialized protobuf. Messages of
this implementation only (membership, heartbeats, gossip, depart) travel as two frames
``[kind, body]`` so they can share a port with Anna's one-frame messages.
Every decode failure becomes :class:`cloudburst.shared.errors.WireError`.
"""

from __future__ import annotations

from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from anna.proto import anna_pb2 as pb
from cloudburst.shared.errors import WireError

M = TypeVar("M", bound=Message)

KIND_MEMBERSHIP = b"membership"
KIND_HEARTBEAT = b"heartbeat"
KIND_GOSSIP = b"gossip"
KIND_DEPART = b"depart"
KIND_JOIN = b"join"

INTERNAL_KINDS = {
    KIND_MEMBERSHIP: pb.Membership,
    KIND_HEARTBEAT: pb.Heartbeat,
    KIND_GOSSIP: pb.Gossip,
    KIND_DEPART: pb.Depart,
    KIND_JOIN: pb.Membership,
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
