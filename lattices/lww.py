"""Last-writer-wins register: :class:`LWWPairLattice` and :func:`make_timestamp`."""

from __future__ import annotations

import threading
import time
from typing import Any, ClassVar, Self

from anna.proto import anna_pb2
from lattices._proto import UINT64_MAX, check_bytes, decode, short_repr
from lattices.base import Lattice, LatticeError

_LWWValue = anna_pb2.LWWValue
#: Values at least this long are serialized by a join (same bytes as protobuf's).
_JOIN_MIN = 1 << 16


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _lww_head(timestamp: int, length: int) -> bytes:
    """``LWWValue``'s canonical encoding up to the value's bytes (timestamp = 1,
    omitted when 0; value = 2, length-delimited)."""
    head = b"\x08" + _varint(timestamp) if timestamp else b""
    return head + b"\x12" + _varint(length)


class LWWPairLattice(Lattice[bytes]):
    """A ``(timestamp, value)`` pair where the larger timestamp wins.

    On equal timestamps the larger value bytes wins, so replicas converge whatever the
    arrival order (the original Anna depended on arrival order here).

    >>> a = LWWPairLattice(1, b"old"); b = LWWPairLattice(2, b"new")
    >>> a.merge(b).reveal()
    b'new'
    """

    __slots__ = ("timestamp", "value")
    lattice_type: ClassVar[int] = anna_pb2.LWW

    timestamp: int
    value: bytes

    def __init__(self, timestamp: int, value: bytes) -> None:
        if not isinstance(timestamp, int) or isinstance(timestamp, bool):
            raise LatticeError(f"timestamp must be an int, not {type(timestamp).__name__}")
        if not 0 <= timestamp <= UINT64_MAX:
            raise LatticeError(f"timestamp {timestamp} is outside the uint64 range")
        object.__setattr__(self, "timestamp", int(timestamp))
        object.__setattr__(self, "value", check_bytes(value, "value"))

    @classmethod
    def _make(cls, timestamp: int, value: bytes) -> Self:
        # Trusted construction (parse): skips validation on the KVS hot path; the slot
        # descriptors are ~3x faster than object.__setattr__.
        obj = _new(cls)
        _set_timestamp(obj, timestamp)
        _set_value(obj, value)
        return obj

    def merge(self, other: Self) -> Self:
        if type(other) is not type(self):
            self._check_type(other)
        ots = other.timestamp
        if ots > self.timestamp or (ots == self.timestamp and other.value > self.value):
            return other
        return self

    def reveal(self) -> bytes:
        return self.value

    def serialize(self) -> bytes:
        value = self.value
        if len(value) >= _JOIN_MIN:  # one copy (protobuf would copy it two or three times)
            return b"".join((_lww_head(self.timestamp, len(value)), value))
        out: bytes = _LWWValue(timestamp=self.timestamp, value=value).SerializeToString()
        return out

    @classmethod
    def parse(cls, payload: bytes) -> Self:
        try:
            msg = _LWWValue.FromString(payload)
        except Exception:
            msg = decode(_LWWValue, payload, "LWWValue")  # raises our error
        timestamp: int = msg.timestamp
        value: bytes = msg.value
        if len(payload) != _canonical_size(timestamp, len(value)):
            # Longer than the canonical encoding: maybe fields of another message type
            # (unknown here), which ``decode`` rejects; otherwise duplicates, harmless.
            decode(_LWWValue, payload, "LWWValue")
        return cls._make(timestamp, value)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, LWWPairLattice)
        return self.timestamp == other.timestamp and self.value == other.value

    def __hash__(self) -> int:
        return hash((LWWPairLattice, self.timestamp, self.value))

    def __repr__(self) -> str:
        return f"LWWPairLattice(timestamp={self.timestamp}, value={short_repr(self.value)})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.timestamp, self.value))


_new = object.__new__
_set_timestamp = LWWPairLattice.__dict__["timestamp"].__set__
_set_value = LWWPairLattice.__dict__["value"].__set__


def _varint_size(n: int) -> int:
    return (n.bit_length() + 6) // 7 or 1


def _canonical_size(timestamp: int, value_len: int) -> int:
    """Bytes of the canonical LWWValue encoding (proto3 omits default fields)."""
    size = 1 + _varint_size(timestamp) if timestamp else 0
    if value_len:
        size += 1 + _varint_size(value_len) + value_len
    return size


_ts_lock = threading.Lock()
_ts_last = 0


def make_timestamp() -> int:
    """A uint64 timestamp for :class:`LWWPairLattice`: wall-clock nanoseconds, strictly
    increasing within this process (two calls in the same nanosecond still differ).

    >>> make_timestamp() < make_timestamp()
    True
    """
    global _ts_last
    now = time.time_ns()
    with _ts_lock:
        ts = now if now > _ts_last else _ts_last + 1
        _ts_last = ts
    return ts
