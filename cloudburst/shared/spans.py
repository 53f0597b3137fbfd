"""Offsets of fields in protobuf-encoded values, without copying (pure).

Used for zero-copy reads of shared-memory values: ``LWWValue.value`` and
``Value.body`` located inside a mapped payload (see ``cache/shm.py``).

>>> from lattices.lww import LWWPairLattice
>>> p = LWWPairLattice(7, b"abc").serialize()
>>> ts, s, e = lww_value_span(p)
>>> ts, p[s:e]
(7, b'abc')
>>> from cloudburst.shared import serializer
>>> v = serializer.to_bytes("hi")
>>> kind, s, e = value_body_span(v, 0, len(v))
>>> kind == serializer.STRING, v[s:e]
(True, b'hi')
"""

from __future__ import annotations

from typing import Any


def _varint(buf: memoryview | bytes, off: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[off]
        off += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, off
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def message_fields(
    buf: memoryview | bytes, start: int = 0, end: int | None = None
) -> dict[int, Any]:
    """Protobuf fields ``{number: int | (start, end)}`` of the message in ``buf[start:end]``
    (varints as ints, length-delimited fields as offsets; no copy)."""
    end = len(buf) if end is None else end
    out: dict[int, Any] = {}
    off = start
    while off < end:
        tag, off = _varint(buf, off)
        num, wt = tag >> 3, tag & 7
        if wt == 0:
            out[num], off = _varint(buf, off)
        elif wt == 2:
            n, off = _varint(buf, off)
            if off + n > end:
                raise ValueError("truncated field")
            out[num] = (off, off + n)
            off += n
        elif wt == 1:
            off += 8
        elif wt == 5:
            off += 4
        else:
            raise ValueError(f"unsupported wire type {wt}")
    if off != end:
        raise ValueError("truncated message")
    return out


def lww_value_span(payload: memoryview | bytes) -> tuple[int, int, int]:
    """``(timestamp, start, end)`` of the value inside an ``LWWValue`` payload."""
    f = message_fields(payload)
    span = f.get(2, (0, 0))
    if not isinstance(span, tuple):
        raise ValueError("LWWValue.value is not bytes")
    return int(f.get(1, 0)), span[0], span[1]


def value_body_span(buf: memoryview | bytes, start: int, end: int) -> tuple[int, int, int]:
    """``(serializer type, start, end)`` of the body of a ``Value`` in ``buf[start:end]``."""
    f = message_fields(buf, start, end)  # Value: body = 1, type = 2
    span = f.get(1, (start, start))
    if not isinstance(span, tuple):
        raise ValueError("Value.body is not bytes")
    return int(f.get(2, 0)), span[0], span[1]
