"""Private helpers shared by the lattices that travel as Anna payloads.

Every protobuf failure is translated here into :class:`LatticeDecodeError`, so callers
never see ``google.protobuf.message.DecodeError``.
"""

from __future__ import annotations

from typing import TypeVar

from google.protobuf import unknown_fields
from google.protobuf.message import DecodeError, Message

from lattices.base import LatticeDecodeError, LatticeError

M = TypeVar("M", bound=Message)

UINT32_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1


def decode(message_type: type[M], payload: bytes, what: str) -> M:
    """Parse ``payload`` as ``message_type``, rejecting garbage and foreign payloads.

    A payload of another lattice type usually parses "successfully" into fields with
    the wrong wire type, which protobuf keeps as unknown fields; we treat any unknown
    field as a type error because no Anna payload message has optional extensions.
    """
    try:
        msg: M = message_type.FromString(payload)
    except (DecodeError, TypeError, ValueError) as exc:
        raise LatticeDecodeError(f"payload is not a valid {what}: {exc}") from exc
    if len(unknown_fields.UnknownFieldSet(msg)):
        raise LatticeDecodeError(
            f"payload is not a valid {what}: it carries fields of another message type"
        )
    return msg


def check_bytes(value: object, what: str) -> bytes:
    """``value`` as ``bytes`` (bytearray/memoryview are copied); anything else is an error."""
    if type(value) is bytes:
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise LatticeError(f"{what} must be bytes, not {type(value).__name__}")


def short_repr(value: bytes, limit: int = 48) -> str:
    """``repr`` of ``value``, cut short for large payloads."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}...<{len(value)} bytes>"
