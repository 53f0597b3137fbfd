"""Write-ahead log and snapshot of one shard.

Record format (both files): ``<u32 length><u32 crc32>`` little-endian, then a
serialized ``KeyTuple`` (key, lattice_type, payload; lattice_type NONE = key dropped).
A torn or corrupt tail (a crash mid-write) ends the replay and is truncated away.

``fsync`` policy: ``always`` (every :meth:`WriteAheadLog.commit` fsyncs before the
shard acknowledges; one fsync covers a whole batch), ``interval`` (at most every
``interval_ms``), ``never`` (left to the OS: survives a process crash, not a power cut).

Compaction writes ``snapshot.tmp``, fsyncs it, renames it over ``snapshot`` and
starts an empty log; recovery reads ``snapshot`` then ``wal.old`` then ``wal.log``.
Replaying a record twice is harmless because lattice merge is idempotent.

Compaction in the background (:meth:`WriteAheadLog.rotate` then
:meth:`WriteAheadLog.write_snapshot` in another thread): the log is renamed to
``wal.old`` and a new ``wal.log`` started at once (no write waits); the snapshot of the
state at the rotation is then written, renamed over ``snapshot``, and ``wal.old``
removed. A crash at any point recovers: before the rename, the old snapshot plus
``wal.old`` plus ``wal.log``; after it, replaying ``wal.old`` (a whole prefix of the
history up to the rotation) over the new snapshot ends in the same state.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from google.protobuf.message import DecodeError

from anna.proto import anna_pb2 as pb
from anna.wire import varint

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<II")
MAX_RECORD = 1 << 30
IOV_MAX = 1024


def tuple_prefix(key: str, lattice_type: int, payload_len: int) -> bytes:
    """Everything of a serialized ``KeyTuple(key, lattice_type, payload)`` before the
    payload bytes (protobuf field order 1, 2, 4; default values omitted)."""
    raw = key.encode()
    out = b"\x0a" + varint(len(raw)) + raw if raw else b""
    if lattice_type:
        out += b"\x10" + varint(lattice_type)
    if payload_len:
        out += b"\x22" + varint(payload_len)
    return out


def record_pieces(records: Iterable[tuple[str, int, bytes]]) -> tuple[list[bytes], int]:
    """Serialized records as pieces for ``writev`` (payloads not copied) and their total
    size. ``zlib.crc32`` of a large payload runs without the GIL."""
    parts: list[bytes] = []
    total = 0
    for key, lattice_type, payload in records:
        prefix = tuple_prefix(key, lattice_type, len(payload))
        length = len(prefix) + len(payload)
        parts.append(_HEADER.pack(length, zlib.crc32(payload, zlib.crc32(prefix))))
        parts.append(prefix)
        if payload:
            parts.append(payload)
        total += _HEADER.size + length
    return parts, total


def write_pieces(fd: int, parts: list[bytes], total: int, done: int = 0) -> None:
    """Write ``parts`` (``total`` bytes, the first ``done`` already written) to ``fd``
    (several ``writev`` calls if needed, never a join of the pieces)."""
    i = 0
    skip = done  # bytes of parts[i] already written
    while i < len(parts) and skip >= len(parts[i]):
        skip -= len(parts[i])
        i += 1
    while done < total:
        batch = [memoryview(parts[i])[skip:], *parts[i + 1 : i + IOV_MAX]]
        written = os.writev(fd, batch)
        done += written
        while written:
            left = len(parts[i]) - skip
            if written >= left:
                written -= left
                i += 1
                skip = 0
            else:
                skip += written
                written = 0


def write_records(fd: int, records: Iterable[tuple[str, int, bytes]], sync: bool) -> int:
    """Append records to the log ``fd`` from any thread (what :meth:`WriteAheadLog.append`
    does, for large values off the shard's loop); fdatasync if ``sync``. The bytes
    written."""
    parts, total = record_pieces(records)
    if parts:
        write_pieces(fd, parts, total)
    if sync:
        os.fdatasync(fd)
    return total


def encode_record(body: bytes) -> bytes:
    return _HEADER.pack(len(body), zlib.crc32(body)) + body


def read_records(path: Path) -> tuple[list[pb.KeyTuple], int]:
    """All intact records of ``path`` and the byte offset where intact data ends."""
    out: list[pb.KeyTuple] = []
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return out, 0
    pos = 0
    n = len(data)
    while pos + _HEADER.size <= n:
        length, crc = _HEADER.unpack_from(data, pos)
        end = pos + _HEADER.size + length
        if length > MAX_RECORD or end > n:
            break
        body = data[pos + _HEADER.size : end]
        if zlib.crc32(body) != crc:
            break
        t = pb.KeyTuple()
        try:
            t.ParseFromString(body)
        except DecodeError:
            break
        out.append(t)
        pos = end
    if pos != n:
        log.warning("%s: ignoring %d bytes of torn/corrupt tail", path, n - pos)
    return out, pos


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class WriteAheadLog:
    """The durable state of one shard under ``directory``."""

    def __init__(self, directory: Path, fsync: str = "always", interval_ms: int = 10) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fsync_policy = fsync
        self.interval_s = interval_ms / 1000.0
        self.wal_path = self.dir / "wal.log"
        self.old_path = self.dir / "wal.old"
        self.snap_path = self.dir / "snapshot"
        self._fd = -1
        self.size = 0
        self.unsynced = False
        self.last_sync = 0.0

    def recover(self) -> Iterator[pb.KeyTuple]:
        """Records of the snapshot then of the log (truncating a torn log tail)."""
        (self.dir / "snapshot.tmp").unlink(missing_ok=True)
        snap, _ = read_records(self.snap_path)
        yield from snap
        del snap
        old, _ = read_records(self.old_path)  # a background compaction did not finish
        yield from old
        del old
        records, good = read_records(self.wal_path)
        yield from records
        if self.wal_path.exists() and self.wal_path.stat().st_size != good:
            with open(self.wal_path, "r+b") as f:
                f.truncate(good)
                os.fsync(f.fileno())

    @property
    def fd(self) -> int:
        """The log's descriptor (for :func:`write_records` from another thread)."""
        return self._fd

    def open(self) -> None:
        self._fd = os.open(self.wal_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.size = os.fstat(self._fd).st_size
        _fsync_dir(self.dir)

    def append(self, records: Iterable[tuple[str, int, bytes]]) -> None:
        """Write ``(key, lattice_type, payload)`` records (not yet durable: call
        :meth:`commit` before acknowledging)."""
        # Serialized KeyTuples, encoded so the payload is never copied: the header, the
        # key/type prefix and the payload go out in one writev.
        parts, total = record_pieces(records)
        if not parts:
            return
        written = os.writev(self._fd, parts if len(parts) <= IOV_MAX else parts[:IOV_MAX])
        if written != total:
            write_pieces(self._fd, parts, total, written)
        self.size += total
        self.unsynced = True

    def commit(self, now: float) -> None:
        """Make appended records durable as the fsync policy requires."""
        if not self.unsynced:
            return
        if self.fsync_policy == "always" or (
            self.fsync_policy == "interval" and now - self.last_sync >= self.interval_s
        ):
            os.fdatasync(self._fd)
            self.unsynced = False
            self.last_sync = now

    def flush(self, now: float) -> None:
        """Fsync whatever is pending (the interval timer and shutdown call this)."""
        if self.unsynced and self.fsync_policy != "never":
            os.fdatasync(self._fd)
            self.unsynced = False
            self.last_sync = now

    def compact(self, state: Iterable[pb.KeyTuple]) -> None:
        """Replace snapshot + log by a snapshot of ``state`` and an empty log."""
        tmp = self.dir / "snapshot.tmp"
        with open(tmp, "wb") as f:
            chunk: list[bytes] = []
            for t in state:
                chunk.append(encode_record(t.SerializeToString()))
                if len(chunk) >= 1024:
                    f.write(b"".join(chunk))
                    chunk = []
            f.write(b"".join(chunk))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.snap_path)
        _fsync_dir(self.dir)
        # The snapshot holds everything the log did: start a fresh log.
        os.ftruncate(self._fd, 0)
        os.fsync(self._fd)
        self.old_path.unlink(missing_ok=True)
        self.size = 0
        self.unsynced = False

    def rotate(self) -> int:
        """Start a background compaction: the log becomes ``wal.old`` and appends go to
        a new ``wal.log``. Returns the old log's descriptor: pass it to
        :meth:`write_snapshot`, which closes it (a write in flight on it from another
        thread still lands in ``wal.old``)."""
        if self.fsync_policy != "never":
            os.fdatasync(self._fd)
        self.unsynced = False
        os.rename(self.wal_path, self.old_path)
        old = self._fd
        self._fd = os.open(self.wal_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        _fsync_dir(self.dir)
        self.size = 0
        return old

    def write_snapshot(self, records: Iterable[tuple[str, int, bytes]], old_fd: int) -> int:
        """The rest of a background compaction (any thread): write ``records`` (the
        state at the rotation) as the snapshot, then drop ``wal.old``. Its size."""
        os.close(old_fd)
        tmp = self.dir / "snapshot.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        size = 0
        try:
            chunk: list[tuple[str, int, bytes]] = []
            n = 0
            for rec in records:
                chunk.append(rec)
                n += len(rec[2])
                if len(chunk) >= 1024 or n >= 16 << 20:
                    size += write_records(fd, chunk, False)
                    chunk, n = [], 0
            size += write_records(fd, chunk, False)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.snap_path)
        _fsync_dir(self.dir)
        self.old_path.unlink(missing_ok=True)
        _fsync_dir(self.dir)
        return size

    def close(self) -> None:
        if self._fd >= 0:
            if self.fsync_policy != "never":
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
