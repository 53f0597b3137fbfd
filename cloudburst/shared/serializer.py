"""Serialization of user values.

Encoding by type (the tag travels in ``Value.type``):

* ``bytes``           -> BYTES, passed through untouched;
* ``str``             -> STRING, UTF-8;
* ``numpy.ndarray``   -> NUMPY, a small header plus the raw buffer (no pickling of
  the data: a 1 MB array costs one memcpy, not a pickle round trip);
* anything else       -> DEFAULT, cloudpickle (protocol 5). Buffers of at least
  ``OOB_MIN_BYTES`` (numpy arrays inside a dict, ...) travel *out of band*: the body is
  ``b"CBP5"``, a header, the pickle, then each buffer at a 64-byte aligned offset, so
  a mapped body (shared memory) gives zero-copy read-only arrays too.

A read-only ``memoryview`` given to :func:`from_bytes` (a value the node cache hands
out in shared memory, see ``cache/shm.py``) is decoded without copying: a NUMPY value
becomes a **read-only** array over that memory (writing raises numpy's
``ValueError: assignment destination is read-only``; ``arr.copy()`` gives a private,
writable copy).

Decoding garbage raises :class:`SerializationError`, never a bare pickle error.
"""

from __future__ import annotations

import pickle
import struct
from dataclasses import dataclass
from typing import Any

import cloudpickle
import numpy as np

from anna.wire import varint as _varint
from cloudburst.shared.errors import SerializationError
from cloudburst.shared.proto import cloudburst_pb2 as pb
from cloudburst.shared.spans import value_body_span

DEFAULT = pb.DEFAULT
STRING = pb.STRING
NUMPY = pb.NUMPY
BYTES = pb.BYTES

# NUMPY header: magic, dtype-string length, ndim, then dtype string and shape.
_NP_MAGIC = b"CBNP"
_NP_HEAD = struct.Struct("<4sHB")


def _array_head(arr: np.ndarray) -> bytes:
    dtype = arr.dtype.str.encode()
    shape = struct.pack(f"<{arr.ndim}q", *arr.shape)
    return _NP_HEAD.pack(_NP_MAGIC, len(dtype), arr.ndim) + dtype + shape


def _encode_array(arr: np.ndarray) -> bytes:
    if not arr.flags.c_contiguous:
        arr = arr.copy(order="C")  # ascontiguousarray would turn 0-d into 1-d
    return b"".join((_array_head(arr), arr.data))


def _decode_array(body: bytes | memoryview, copy: bool = True) -> np.ndarray:
    view = memoryview(body)
    try:
        magic, dlen, ndim = _NP_HEAD.unpack_from(view, 0)
        if magic != _NP_MAGIC:
            raise ValueError("bad magic")
        off = _NP_HEAD.size
        dtype = np.dtype(bytes(view[off : off + dlen]).decode())
        off += dlen
        shape = struct.unpack_from(f"<{ndim}q", view, off)
        off += 8 * ndim
        count = 1
        for n in shape:
            count *= n
        # frombuffer is zero-copy; copy so the array is writable and owns its data
        # (unless the caller wants a view: shared memory, read-only).
        arr = np.frombuffer(view, dtype=dtype, count=count, offset=off).reshape(shape)
        return arr.copy() if copy else arr
    except (ValueError, TypeError, struct.error) as exc:
        raise SerializationError(f"malformed numpy payload: {exc}") from exc


#: Buffers at least this large are pickled out of band (see the module docstring).
OOB_MIN_BYTES = 64 * 1024
_P5_MAGIC = b"CBP5"
_P5_HEAD = struct.Struct("<4sIQ")  # magic, number of buffers, pickle length
_ALIGN = 64


def _p5_layout(nbuf: int, plen: int, lengths: list[int]) -> tuple[int, list[int]]:
    """Start of the pickle and of each buffer in a CBP5 body."""
    off = _P5_HEAD.size + 8 * nbuf
    pstart = off
    off += plen
    starts = []
    for n in lengths:
        off += (-off) % _ALIGN
        starts.append(off)
        off += n
    return pstart, starts


def _default_layout(obj: Any) -> bytes | Layout:
    """An in-band pickle (no large buffers), or the layout of a CBP5 body."""
    bufs: list[pickle.PickleBuffer] = []

    def out_of_band(buf: pickle.PickleBuffer) -> bool:
        if buf.raw().nbytes >= OOB_MIN_BYTES:
            bufs.append(buf)
            return False
        return True

    data = cloudpickle.dumps(obj, protocol=5, buffer_callback=out_of_band)
    if not bufs:
        return data  # type: ignore[no-any-return]
    raws = [b.raw() for b in bufs]
    lengths = [r.nbytes for r in raws]
    pstart, starts = _p5_layout(len(raws), len(data), lengths)
    head = _P5_HEAD.pack(_P5_MAGIC, len(raws), len(data))
    head += struct.pack(f"<{len(raws)}Q", *lengths)
    parts: list[tuple[int, Any]] = [(0, head), (pstart, data)]
    parts += list(zip(starts, raws, strict=True))
    return Layout(DEFAULT, starts[-1] + lengths[-1], parts, 0)


def _dumps_default(obj: Any) -> bytes:
    out = _default_layout(obj)
    if isinstance(out, bytes):
        return out
    buf = bytearray(out.length)  # one copy of each buffer (numpy copies, GIL released)
    out.write_into(memoryview(buf))
    return bytes(buf)  # (bytes() copies once more: the wire wants bytes)


@dataclass
class Layout:
    """Where the pieces of a serialized body go, to write them straight into memory
    of the caller's choosing (a shared-memory segment): ``parts`` are ``(offset,
    bytes-like or ndarray)``; ``align_at`` is the offset that should land on a
    64-byte boundary (a numpy array's data)."""

    kind: int
    length: int
    parts: list[tuple[int, Any]]
    align_at: int

    def write_into(self, out: memoryview) -> None:
        """Copy every part into ``out`` (``length`` writable bytes). Large parts are
        copied by numpy, which releases the GIL (heartbeats keep running)."""
        dst = np.frombuffer(out, dtype=np.uint8, count=self.length)
        for off, part in self.parts:
            if isinstance(part, np.ndarray):
                np.copyto(np.ndarray(part.shape, part.dtype, buffer=out, offset=off), part)
                continue
            src = np.frombuffer(part, dtype=np.uint8)
            dst[off : off + src.size] = src


def layout(obj: Any, min_bytes: int = 0) -> Layout | None:
    """The :class:`Layout` of ``obj``'s body when it is at least ``min_bytes`` long and
    has large data to place (a numpy array, ``bytes``, a pickle with out-of-band
    buffers); None otherwise (serialize it with :func:`dumps`). The body written
    from it is exactly what :func:`dumps` returns."""
    if isinstance(obj, np.ndarray) and not obj.dtype.hasobject:
        if obj.nbytes < min_bytes:
            return None
        head = _array_head(obj)
        return Layout(NUMPY, len(head) + obj.nbytes, [(0, head), (len(head), obj)], len(head))
    if isinstance(obj, bytes):
        if len(obj) < min_bytes:
            return None
        return Layout(BYTES, len(obj), [(0, obj)], 0)
    if isinstance(obj, str) or type(obj) in (int, float, bool, type(None)):
        return None
    try:
        out = _default_layout(obj)
    except Exception as exc:  # pickling can raise almost anything
        raise SerializationError(f"cannot serialize {type(obj).__name__}: {exc}") from exc
    if isinstance(out, bytes) or out.length < min_bytes:
        return None
    return out


def loads_shared(kind: int, body: memoryview) -> Any:
    """Decode a body in read-only shared memory without copying its large data (a
    read-only numpy array / out-of-band buffers over ``body``)."""
    if kind == NUMPY:
        return _decode_array(body, copy=False)
    return loads(kind, body)


def _loads_default(body: bytes | memoryview, zero_copy: bool | None = None) -> Any:
    if bytes(body[:4]) != _P5_MAGIC:
        return cloudpickle.loads(body)
    view = memoryview(body)
    _, nbuf, plen = _P5_HEAD.unpack_from(view, 0)
    lengths = list(struct.unpack_from(f"<{nbuf}Q", view, _P5_HEAD.size))
    pstart, starts = _p5_layout(nbuf, plen, lengths)
    if starts and starts[-1] + lengths[-1] > len(view):
        raise ValueError("truncated out-of-band pickle")
    if zero_copy is None:
        zero_copy = isinstance(body, memoryview) and body.readonly
    buffers = [view[st : st + n] for st, n in zip(starts, lengths, strict=True)]
    if not zero_copy:  # a private, writable copy, as an in-band pickle gives
        buffers = [memoryview(bytearray(b)) for b in buffers]
    return cloudpickle.loads(view[pstart : pstart + plen], buffers=buffers)


def dumps(obj: Any) -> tuple[int, bytes]:
    """Serialize ``obj``; returns ``(SerializerType, body)``."""
    if isinstance(obj, bytes):
        return BYTES, obj
    if isinstance(obj, str):
        return STRING, obj.encode("utf-8")
    if isinstance(obj, np.ndarray) and not obj.dtype.hasobject:
        return NUMPY, _encode_array(obj)
    try:
        return DEFAULT, _dumps_default(obj)
    except Exception as exc:  # pickling can raise almost anything
        raise SerializationError(f"cannot serialize {type(obj).__name__}: {exc}") from exc


def loads(kind: int, body: bytes | memoryview) -> Any:
    """Inverse of :func:`dumps`."""
    if kind == BYTES:
        return bytes(body)
    if kind == STRING:
        try:
            return bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SerializationError(f"malformed string payload: {exc}") from exc
    if kind == NUMPY:
        return _decode_array(body)
    if kind == DEFAULT:
        try:
            return _loads_default(body)
        except Exception as exc:
            raise SerializationError(f"cannot deserialize value: {exc}") from exc
    raise SerializationError(f"unknown serializer type {kind}")


def to_value(obj: Any) -> pb.Value:
    """Serialize ``obj`` into a ``Value`` message."""
    kind, body = dumps(obj)
    return pb.Value(type=kind, body=body)


def from_value(value: pb.Value) -> Any:
    """Deserialize a ``Value`` message."""
    return loads(value.type, value.body)


def to_bytes(obj: Any) -> bytes:
    """Serialize ``obj`` into the bytes of a ``Value`` message (what LWW values hold).

    A large array (or a pickle with out-of-band buffers) is copied once, by one join
    into the message's bytes (the same bytes protobuf gives, which copies the data two
    or three times more)."""
    if isinstance(obj, np.ndarray) and not obj.dtype.hasobject:
        if obj.nbytes >= OOB_MIN_BYTES:
            lay = layout(obj)
            assert lay is not None
            return _value_bytes(lay)
    elif not isinstance(obj, bytes | str) and type(obj) not in (int, float, bool, type(None)):
        try:
            out = _default_layout(obj)
        except Exception as exc:  # pickling can raise almost anything
            raise SerializationError(f"cannot serialize {type(obj).__name__}: {exc}") from exc
        if isinstance(out, bytes):
            return pb.Value(type=DEFAULT, body=out).SerializeToString()  # type: ignore[no-any-return]
        return _value_bytes(out)
    return to_value(obj).SerializeToString()  # type: ignore[no-any-return]


def value_pieces(lay: Layout) -> list[Any]:
    """The ``Value`` message (body = 1, type = 2) of a layout as pieces to join or to
    send as they are (the large ones are views of the object's own memory)."""
    pieces: list[Any] = [b"\x0a", _varint(lay.length)]
    pos = 0
    for off, part in sorted(lay.parts, key=lambda p: p[0]):
        if off > pos:
            pieces.append(bytes(off - pos))  # alignment padding (zeros)
        if isinstance(part, np.ndarray):
            part = np.ascontiguousarray(part).reshape(-1).view(np.uint8)
        view = memoryview(part).cast("B") if not isinstance(part, bytes) else part
        pieces.append(view)
        pos = off + len(view)
    if lay.kind:
        pieces.append(b"\x10" + _varint(lay.kind))
    return pieces


def _value_bytes(lay: Layout) -> bytes:
    """The ``Value`` message of a layout, by one join."""
    return b"".join(value_pieces(lay))


def bytes_or_layout(obj: Any, min_bytes: int) -> bytes | Layout:
    """The :class:`Layout` of ``obj``'s body when it is at least ``min_bytes`` long with
    large data to place (as :func:`layout`), else :func:`to_bytes` of ``obj``; ``obj``
    is pickled once either way (``cb.put`` of a small dict does not pay twice)."""
    if isinstance(obj, np.ndarray) and not obj.dtype.hasobject:
        lay = layout(obj, min_bytes)
        return to_bytes(obj) if lay is None else lay
    if isinstance(obj, bytes):
        return Layout(BYTES, len(obj), [(0, obj)], 0) if len(obj) >= min_bytes else to_bytes(obj)
    if isinstance(obj, str) or type(obj) in (int, float, bool, type(None)):
        return to_bytes(obj)
    try:
        out = _default_layout(obj)
    except Exception as exc:  # pickling can raise almost anything
        raise SerializationError(f"cannot serialize {type(obj).__name__}: {exc}") from exc
    if isinstance(out, bytes):
        return pb.Value(type=DEFAULT, body=out).SerializeToString()  # type: ignore[no-any-return]
    return out if out.length >= min_bytes else _value_bytes(out)


def large_value_pieces(obj: Any) -> list[Any] | None:
    """``to_bytes(obj)`` as pieces (no copy of the large data) when ``obj`` has large
    data to place (a numpy array or a pickle with out-of-band buffers of at least
    ``OOB_MIN_BYTES``); None otherwise."""
    if isinstance(obj, bytes | str) or type(obj) in (int, float, bool, type(None)):
        return None
    if isinstance(obj, np.ndarray) and (obj.dtype.hasobject or obj.nbytes < OOB_MIN_BYTES):
        return None
    lay = layout(obj, OOB_MIN_BYTES)
    return None if lay is None else value_pieces(lay)


def from_bytes(data: bytes | memoryview) -> Any:
    """Inverse of :func:`to_bytes`; zero-copy for a read-only ``memoryview`` (above).

    The body is located in place (no protobuf parse, which would copy it holding the
    GIL); a large array from ``bytes`` is copied once, by numpy (GIL released)."""
    shared = isinstance(data, memoryview) and data.readonly
    view = memoryview(data)
    try:
        kind, start, end = value_body_span(view, 0, len(view))
    except (ValueError, IndexError, TypeError) as exc:
        raise SerializationError(f"malformed Value message: {exc}") from exc
    body = view[start:end]
    if kind == NUMPY:
        return _decode_array(body, copy=not shared)
    if kind == DEFAULT and not shared:
        try:
            return _loads_default(body, zero_copy=False)
        except Exception as exc:
            raise SerializationError(f"cannot deserialize value: {exc}") from exc
    return loads(kind, body)
