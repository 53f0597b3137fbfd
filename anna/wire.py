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


def decode(cls: type[M], data: bytes) -> M:
    """Parse ``data`` as ``cls``; raise :class:`WireError` on malformed bytes."""
    msg = cls()
    try:
        msg.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise WireError(f"malformed {cls.__name__} ({len(data)} bytes): {exc}") from None
    return msg


def decode_key_request(data: bytes) -> pb.KeyRequest:
    return decode(pb.KeyRequest, data)


def decode_key_response(data: bytes) -> pb.KeyResponse:
    return decode(pb.KeyResponse, data)


def decode_address_request(data: bytes) -> pb.KeyAddressRequest:
    return decode(pb.KeyAddressRequest, data)


def decode_address_response(data: bytes) -> pb.KeyAddressResponse:
    return decode(pb.KeyAddressResponse, data)


def decode_subscription(data: bytes) -> pb.CacheSubscription:
    return decode(pb.CacheSubscription, data)


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
