"""Shared-memory segments for large cached values (one node: cache -> its workers).

The node cache keeps an LWW value whose payload is at least
``cache.shm_threshold_bytes`` in a file under ``/dev/shm`` (a *segment*) instead of its
heap. A worker reading it with ``getm`` gets the segment's name (error code MAPPED)
and maps the file read-only: a numpy array stored by ``cloudburst.shared.serializer``
comes back as a read-only array over the mapping, no copy.

Rules (pure bookkeeping in :class:`SegmentBook`, files in :class:`ShmStore`):

* a segment is written once and never modified: a new version of the key (a PUT
  acknowledged, a push, a merge) is a new segment;
* a segment answered to a worker is *pinned* by that worker (its ROUTER identity)
  until the worker releases it (``release`` op, sent after each call) or dies (the
  cache checks the pid in the identity every second);
* a segment whose entry is gone (evicted, replaced, deleted) is *retired*: unlinked at
  once if unpinned, else when its last pin goes; pinned retired segments still count
  against ``cache.capacity_bytes``;
* names are ``<prefix><n>`` with a prefix per cache (a hash of its ipc address), so a
  restarted cache sweeps what a killed predecessor left; ``close`` unlinks everything.

* a worker's ``cb.put`` of a large value writes the payload into a file of its own
  (:func:`put_prefix`, :func:`write_segment`: one copy) which the cache *adopts*
  (:meth:`ShmStore.adopt`: renamed to one of its names, mapped read-only) and writes
  through to the KVS; a worker that dies first leaves a file named after its dead pid,
  which the orphan sweep removes.

A mapping in a worker outlives an unlink (Linux keeps an unlinked file's pages while
mapped), so the worker's view stays valid even after the cache dropped the file.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import re
import stat
import struct
from collections import Counter
from collections.abc import Iterable
from typing import Any

from anna.wire import varint as _varint
from cloudburst.shared.spans import lww_value_span, value_body_span

SHM_DIR = "/dev/shm"
#: The array data in a segment starts at a multiple of this (numpy-friendly).
ALIGN = 64


def segment_prefix(ipc_address: str) -> str:
    """``cb-<12 hex>-``: the segment name prefix of the cache at ``ipc_address``."""
    return "cb-" + hashlib.sha1(ipc_address.encode()).hexdigest()[:12] + "-"


def put_prefix(ipc_address: str) -> str:
    """The name prefix of segments that workers write for the cache at ``ipc_address``
    to *adopt* (``cb.put`` of a large value): another prefix than the cache's own, so
    a restarted cache does not sweep live workers' files; the creating worker's pid
    follows, so the cache removes the file of a worker that died before adoption."""
    return segment_prefix(ipc_address + "#put")


# ---- pure: where a numpy array's bytes start in an LWW payload ---------------------------

_NP_HEAD = struct.Struct("<4sHB")


def array_data_offset(payload: memoryview | bytes, numpy_type: int) -> int | None:
    """Offset of the raw array data in an LWW payload holding a serialized numpy array
    (``numpy_type`` is ``SerializerType.NUMPY``), of the body of an out-of-band pickle
    (DEFAULT, ``CBP5``: its buffers are aligned relative to it), or None."""
    try:
        _, vs, ve = lww_value_span(payload)
        kind, bs, be = value_body_span(payload, vs, ve)
        if kind == 0 and bytes(payload[bs : bs + 4]) == b"CBP5":
            return bs  # out-of-band pickle: its buffers are aligned to its start
        if kind != numpy_type or be - bs < _NP_HEAD.size:
            return None
        magic, dlen, ndim = _NP_HEAD.unpack_from(payload, bs)
        if magic != b"CBNP":
            return None
        return bs + _NP_HEAD.size + dlen + 8 * ndim
    except (ValueError, IndexError, struct.error):
        return None


def pad_for(data_offset: int | None) -> int:
    """Bytes to put before the payload in a segment so that the data is aligned."""
    return 0 if data_offset is None else (-data_offset) % ALIGN


def lww_file_layout(
    timestamp: int, kind: int, body_length: int, align_at: int
) -> tuple[int, int, int, bytes, bytes]:
    """Where an LWW payload holding a ``Value`` goes in a segment file (pure).

    The payload is ``LWWValue{timestamp, value = Value{body, type}}`` in protobuf's
    canonical encoding (the bytes ``LWWPairLattice(ts, serializer.to_bytes(obj))
    .serialize()`` gives), preceded by zero padding so that the body's byte
    ``align_at`` (a numpy array's data) lands on an ``ALIGN`` boundary. Returns
    ``(file size, payload offset, body offset, head, tail)``: ``head`` goes at the
    payload offset, the body at the body offset, ``tail`` right after the body.

    >>> size, off, body, head, tail = lww_file_layout(5, 3, 100, 20)
    >>> (body + 20) % ALIGN, len(head), tail == bytes([16, 3]), size - body
    (0, 6, True, 102)
    """
    tail = b"\x10" + _varint(kind) if kind else b""
    vhead = b"\x0a" + _varint(body_length)
    vlen = len(vhead) + body_length + len(tail)
    lhead = (b"\x08" + _varint(timestamp) if timestamp else b"") + b"\x12" + _varint(vlen)
    head = lhead + vhead
    offset = (-(len(head) + align_at)) % ALIGN
    body = offset + len(head)
    return body + body_length + len(tail), offset, body, head, tail


# ---- pure: pins and lifetimes ---------------------------------------------------------------


class SegmentBook:
    """Which segments exist, which an entry holds, who pins them (no I/O).

    >>> b = SegmentBook()
    >>> b.add("s1", 100)
    >>> b.pin("s1", b"w1"); b.pin("s1", b"w1")
    >>> b.retire("s1")                     # entry evicted while pinned: keep the file
    []
    >>> b.retired_bytes
    100
    >>> b.release(b"w1", ["s1"])           # one of two pins
    []
    >>> b.release(b"w1", ["s1"])           # the last: unlink now
    ['s1']
    >>> b.retired_bytes, b.total_bytes
    (0, 0)
    """

    def __init__(self) -> None:
        self.sizes: dict[str, int] = {}
        self.live: set[str] = set()  # held by a cache entry
        self.pins: dict[str, Counter[bytes]] = {}  # segment -> owner -> count
        self.owned: dict[bytes, Counter[str]] = {}  # owner -> segment -> count
        self.retired_bytes = 0
        self.total_bytes = 0

    def add(self, name: str, size: int) -> None:
        self.sizes[name] = size
        self.live.add(name)
        self.total_bytes += size

    def pin(self, name: str, owner: bytes) -> None:
        if name not in self.sizes:
            raise KeyError(name)
        self.pins.setdefault(name, Counter())[owner] += 1
        self.owned.setdefault(owner, Counter())[name] += 1

    def pinned(self, name: str) -> int:
        return sum(self.pins.get(name, Counter()).values())

    def _gone(self, name: str) -> list[str]:
        """Forget ``name`` if it is retired and unpinned; return it to unlink."""
        if name in self.live or name in self.pins or name not in self.sizes:
            return []
        size = self.sizes.pop(name)
        self.retired_bytes -= size
        self.total_bytes -= size
        return [name]

    def retire(self, name: str) -> list[str]:
        """The entry holding ``name`` is gone; the names to unlink now."""
        if name not in self.live:
            return []
        self.live.discard(name)
        self.retired_bytes += self.sizes[name]
        return self._gone(name)

    def release(self, owner: bytes, names: Iterable[str]) -> list[str]:
        """``owner`` released one pin of each of ``names``; the names to unlink now."""
        out: list[str] = []
        mine = self.owned.get(owner)
        for name in names:
            if mine is None or mine[name] <= 0:
                continue
            mine[name] -= 1
            if mine[name] == 0:
                del mine[name]
            pins = self.pins[name]
            pins[owner] -= 1
            if pins[owner] <= 0:
                del pins[owner]
            if not pins:
                del self.pins[name]
                out += self._gone(name)
        if mine is not None and not mine:
            del self.owned[owner]
        return out

    def drop_owner(self, owner: bytes) -> list[str]:
        """``owner`` died: release all its pins; the names to unlink now."""
        mine = self.owned.get(owner)
        if not mine:
            self.owned.pop(owner, None)
            return []
        return self.release(owner, [n for n, c in list(mine.items()) for _ in range(c)])

    def owners(self) -> list[bytes]:
        return list(self.owned)


def owner_pid(identity: bytes) -> int | None:
    """The pid in a :class:`cache.client.CacheClient` identity ``b"p<pid>-<n>"``."""
    if not identity.startswith(b"p"):
        return None
    head = identity[1:].split(b"-", 1)[0]
    return int(head) if head.isdigit() else None


# ---- I/O: the files ----------------------------------------------------------------------


class ShmStore:
    """Segment files ``<dir>/<prefix><n>``, written by the cache (the only writer)."""

    def __init__(self, prefix: str, directory: str = SHM_DIR) -> None:
        self.prefix = prefix
        self.dir = directory
        self._n = 0
        self.names: set[str] = set()

    def sweep(self) -> int:
        """Unlink every file with this cache's prefix (left by a killed predecessor),
        and any cache's segment whose creating process is gone (a cache killed for
        good, e.g. with its temporary directory: no successor would sweep it)."""
        n = 0
        try:
            listing = os.listdir(self.dir)
        except OSError:
            return 0
        for name in listing:
            if name.startswith(self.prefix) or _orphan(name):
                try:
                    os.unlink(os.path.join(self.dir, name))
                    n += 1
                except OSError:
                    pass
        return n

    def create(self, payload: bytes | memoryview, pad: int) -> tuple[str, memoryview]:
        """Write ``pad`` zero bytes then ``payload`` into a new segment; returns its
        name and a read-only view of the payload in the cache's own mapping."""
        self._n += 1
        name = f"{self.prefix}{os.getpid()}-{self._n}"
        path = os.path.join(self.dir, name)
        size = pad + len(payload)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, size)
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        os.close(fd)
        mm[pad:size] = payload
        self.names.add(name)
        return name, memoryview(mm).toreadonly()[pad:]

    def adopt(self, src: str, offset: int, src_prefix: str) -> tuple[str, memoryview]:
        """Take ownership of ``src``, a segment a worker wrote (``put_prefix``): rename
        it to one of this cache's names (atomic; a file the worker has unlinked by
        then, e.g. after a timeout, is an OSError) and map it read-only. Returns the
        new name and a read-only view of the payload at ``offset``. Refuses (and
        unlinks) anything but a regular file of ours with the worker prefix."""
        if (
            not src.startswith(src_prefix)
            or _SEGMENT.match(src) is None
            or "/" in src
            or not 0 <= offset < ALIGN
        ):
            raise ValueError(f"not a worker segment: {src!r} at {offset}")
        self._n += 1
        name = f"{self.prefix}{os.getpid()}-{self._n}"
        path = os.path.join(self.dir, name)
        os.rename(os.path.join(self.dir, src), path)  # now ours: swept/unlinked as ours
        self.names.add(name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
                    raise ValueError(f"segment {src!r} is not a regular file of ours")
                if st.st_size <= offset:
                    raise ValueError(f"segment {src!r} is empty")
                mm = mmap.mmap(fd, st.st_size, mmap.MAP_SHARED, mmap.PROT_READ)
            finally:
                os.close(fd)
        except BaseException:
            self.unlink(name)
            raise
        return name, memoryview(mm)[offset:]

    def unlink(self, name: str) -> None:
        self.names.discard(name)
        try:
            os.unlink(os.path.join(self.dir, name))
        except FileNotFoundError:
            pass

    def sweep_orphans(self) -> int:
        """Unlink segments whose creating process is gone (a worker killed with
        shared-memory results in flight: ``executor/handoff.py``)."""
        n = 0
        try:
            listing = os.listdir(self.dir)
        except OSError:
            return 0
        for name in listing:
            if _orphan(name):
                try:
                    os.unlink(os.path.join(self.dir, name))
                    n += 1
                except OSError:
                    pass
        return n

    def close(self) -> None:
        for name in list(self.names):
            self.unlink(name)
        self.sweep_orphans()  # the node stops its workers first: what killed ones left


_SEGMENT = re.compile(r"^cb-[0-9a-f]{12}-(\d+)-\d+$")


def _orphan(name: str) -> bool:
    """Whether ``name`` is a segment whose creating cache process no longer exists."""
    m = _SEGMENT.match(name)
    if m is None:
        return False
    try:
        os.kill(int(m.group(1)), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return False


def lww_file_pieces(timestamp: int, lay: Any) -> tuple[int, int, list[tuple[int, Any]]]:
    """``(file size, payload offset, pieces)`` of a segment holding the LWW payload of
    ``lay`` (a ``serializer.Layout``) stamped ``timestamp`` (see :func:`lww_file_layout`);
    ``pieces`` are ``(file offset, buffer)`` for :func:`write_segment`; the gaps are
    zeros (alignment padding)."""
    size, offset, body, head, tail = lww_file_layout(timestamp, lay.kind, lay.length, lay.align_at)
    pieces: list[tuple[int, Any]] = [(offset, head)]
    for off, part in lay.parts:
        if not isinstance(part, bytes):
            view = memoryview(part)
            if view.ndim != 1 or view.format != "B" or not view.c_contiguous:
                view = _flat_bytes(part)
            part = view
        pieces.append((body + off, part))
    if tail:
        pieces.append((body + lay.length, tail))
    return size, offset, pieces


def _flat_bytes(obj: Any) -> memoryview:
    """A 1-d unsigned-byte view of ``obj``'s data (copied only if not contiguous)."""
    import numpy as np

    arr = np.ascontiguousarray(np.asarray(obj)).reshape(-1).view(np.uint8)
    return memoryview(arr)


def write_segment(directory: str, name: str, size: int, pieces: list[tuple[int, Any]]) -> None:
    """Create ``<directory>/<name>`` of ``size`` bytes holding ``pieces`` (``(offset,
    buffer)``; zeros elsewhere). Written with ``pwrite`` from the buffers: one copy, by
    the kernel (GIL released), into fresh tmpfs pages, about twice as fast as faulting
    in a new mapping and copying into it; a full ``/dev/shm`` is an OSError (ENOSPC),
    never a SIGBUS. On any error the file is unlinked."""
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        os.ftruncate(fd, size)
        for off, piece in pieces:
            view = memoryview(piece)
            done, n = 0, view.nbytes
            while done < n:
                done += os.pwrite(fd, view[done:], off + done)
    except BaseException:
        os.close(fd)
        try:
            os.unlink(path)
        except OSError:
            pass
        raise
    os.close(fd)


def map_segment(name: str, offset: int, directory: str = SHM_DIR) -> memoryview:
    """A worker's read-only view of a segment's payload (raises OSError if it is gone).

    The view keeps the mapping alive; the mapping outlives an unlink of the file.
    """
    if "/" in name or name.startswith("."):
        raise ValueError(f"bad segment name {name!r}")
    fd = os.open(os.path.join(directory, name), os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        mm = mmap.mmap(fd, size, flags, mmap.PROT_READ)
    finally:
        os.close(fd)
    return memoryview(mm)[offset:]
