"""Copies of large values that do not hold the GIL (pure functions, no I/O).

``bytes(view)`` and ``b"".join`` copy with the GIL held: 100 MB takes 70-150 ms here
(page faults included), during which no other thread of the process runs. The shard
copies large values in a worker thread so its request loop keeps answering; that only
helps if the copy lets the loop's thread run, so these copies go through
``ctypes.memmove`` (a foreign call: the GIL is released) into a ``bytes`` object
allocated uninitialized and not yet visible to anyone else.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence

_new_bytes = ctypes.pythonapi.PyBytes_FromStringAndSize
_new_bytes.restype = ctypes.py_object
_new_bytes.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t]
_memmove = ctypes.memmove

#: Below this size the ordinary (GIL-holding) copy is cheaper.
MIN_BIG = 1 << 20


def _address(obj: bytes | bytearray, offset: int = 0) -> tuple[int, object]:
    """The address of ``obj``'s data at ``offset`` and an object keeping it valid."""
    if type(obj) is bytearray:
        n = len(obj) - offset
        holder: object = (ctypes.c_char * n).from_buffer(obj, offset)
        return ctypes.addressof(holder), holder  # type: ignore[arg-type]
    ptr = ctypes.c_char_p(obj)  # points at the bytes object's own buffer
    base = ctypes.cast(ptr, ctypes.c_void_p).value
    assert base is not None
    return base + offset, ptr


def copy_bytes(src: bytes | bytearray, start: int = 0, end: int | None = None) -> bytes:
    """``bytes(src[start:end])``, copied without the GIL for large sizes."""
    stop = len(src) if end is None else end
    n = stop - start
    if n < MIN_BIG:
        return bytes(memoryview(src)[start:stop])
    out: bytes = _new_bytes(None, n)
    dst, _keep_dst = _address(out)
    addr, keep = _address(src, start)
    _memmove(dst, addr, n)
    del keep, _keep_dst
    return out


def join(pieces: Sequence[bytes]) -> bytes:
    """``b"".join(pieces)``, copied without the GIL for large totals."""
    total = sum(map(len, pieces))
    if total < MIN_BIG:
        return b"".join(pieces)
    out: bytes = _new_bytes(None, total)
    dst, _keep_dst = _address(out)
    pos = 0
    for p in pieces:
        n = len(p)
        if n:
            addr, keep = _address(p)
            _memmove(dst + pos, addr, n)
            del keep
            pos += n
    return out
