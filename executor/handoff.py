"""Large results passed from one function to the next on the same host through shared
memory (issue 16, point 4).

When a worker forwards a result to a downstream function whose worker is on the same
host (its trigger address has this worker's IP, or both are loopback), each large
value of the result (at least ``cache.shm_threshold_bytes``: a numpy array, ``bytes``,
a pickle with out-of-band buffers) is written **once** into a file under
``cache.shm_dir`` and the trigger carries a :class:`SharedValue` handle instead of the
bytes. The consumer maps the file read-only (a read-only numpy array over it, no copy)
and unlinks it at once: Linux keeps the pages while they are mapped, so the memory
goes when the consumer's call drops its views (or its process dies).

Lifetime (nothing is left in ``/dev/shm``):

* one file per consumer: a fan-out to ``n`` local functions writes one file and
  hard-links it ``n - 1`` times (no copy), each consumer unlinks its own link;
* the producer remembers its links for ``scheduler.call_timeout_s`` (the time a
  trigger may wait): a link nobody consumed (its trigger was dropped, its worker died)
  is unlinked then, and all of them when the producer exits;
* a producer killed outright leaves files named after its pid: the node cache removes
  files of dead processes every few seconds and when it stops (``cache/shm.py``).

Files are named ``cb-<12 hex>-<pid>-<n>`` with a prefix of their own per node (a hash
of the node cache's address and ``#handoff``), so a restarted cache leaves live
workers' files alone. ``posix_fallocate`` reserves the pages first: a full ``/dev/shm``
makes the producer send the value inline, never a SIGBUS.

The pure part (which addresses are local, the producer's book of links) has no I/O.
"""

from __future__ import annotations

import gc
import ipaddress
import logging
import mmap
import os
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from cache.shm import ALIGN, segment_prefix
from cloudburst.shared import serializer
from cloudburst.shared.errors import InvalidArgument
from cloudburst.shared.proto import cloudburst_pb2 as pb
from cloudburst.shared.wire import SharedArgument

log = logging.getLogger(__name__)


# ---- pure ------------------------------------------------------------------------------------


def _ip(address: str) -> str:
    """``tcp://1.2.3.4:5`` -> ``1.2.3.4``."""
    rest = address.split("://", 1)[-1]
    return rest.rsplit(":", 1)[0].strip("[]")


def _loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return ip == "localhost"


def same_host(my_ip: str, address: str) -> bool:
    """Whether the worker at ``address`` runs on this host: the same IP, or both are
    loopback addresses (several local nodes on 127.0.0.x)."""
    ip = _ip(address)
    return ip == my_ip or (_loopback(ip) and _loopback(my_ip))


class LinkBook:
    """The producer's files not known to be consumed, with their deadlines (no I/O).

    >>> b = LinkBook(ttl=10.0)
    >>> b.add(["a", "b"], now=0.0); b.add(["c"], now=5.0)
    >>> b.due(9.0), b.due(10.0), len(b)
    ([], ['a', 'b'], 1)
    >>> b.drain()
    ['c']
    """

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._q: deque[tuple[float, str]] = deque()

    def add(self, names: Iterable[str], now: float) -> None:
        for name in names:
            self._q.append((now + self.ttl, name))

    def due(self, now: float) -> list[str]:
        out = []
        while self._q and self._q[0][0] <= now:
            out.append(self._q.popleft()[1])
        return out

    def drain(self) -> list[str]:
        out = [name for _, name in self._q]
        self._q.clear()
        return out

    def __len__(self) -> int:
        return len(self._q)


def host_id(directory: str) -> str:
    """This host's boot id and the device of ``directory`` (containers on one host
    share the boot id, not their /dev/shm)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        boot = "?"
    try:
        dev = os.stat(directory).st_dev
    except OSError:
        dev = -1
    return f"{boot}/{dev}"


# ---- I/O -----------------------------------------------------------------------------------


#: Files a producer keeps for reuse (their pages stay allocated and mapped: writing
#: into them costs a memcpy, not a fresh allocation), and how long an idle one stays.
POOL_FILES = 2
POOL_IDLE_S = 30.0


class _File:
    """A producer's file: its name, size, writable mapping and published links."""

    __slots__ = ("name", "size", "mm", "links", "deadline", "used")

    def __init__(self, name: str, size: int, mm: mmap.mmap) -> None:
        self.name, self.size, self.mm = name, size, mm
        self.links: list[str] = []
        self.deadline = 0.0
        self.used = 0.0


class Handoff:
    """A worker's shared-memory handoffs: writes handles (producer), maps them
    (consumer). ``cache_address`` is the node cache's ipc address (the name prefix).

    Reuse: the producer keeps up to :data:`POOL_FILES` files (and their mappings) and
    writes the next value into one whose links are all gone. A consumer unlinks its
    link only once its call has dropped every view of the value (the mapping could be
    closed), so a file is never rewritten under a reader; a link still there after
    ``ttl`` makes the producer give the file up (unlinked, never reused)."""

    def __init__(
        self,
        my_ip: str,
        directory: str,
        cache_address: str,
        threshold: int,
        ttl: float,
        clock: Callable[[], float],
        pool: int = POOL_FILES,
    ) -> None:
        self.my_ip = my_ip
        self.dir = directory
        self.prefix = segment_prefix(cache_address + "#handoff")
        self.threshold = threshold
        self.ttl = ttl
        self.pool_max = pool
        self.clock = clock
        self.host = host_id(directory)
        self._n = 0
        self.files: list[_File] = []  # the producer's pool
        self.book = LinkBook(ttl)  # links of files not pooled (one-shot)
        # consumer: segment -> (decoded value, mapping), until the call ends
        self.opened: dict[str, tuple[Any, mmap.mmap]] = {}
        self.lingering: list[tuple[str, mmap.mmap]] = []  # views still held after a call
        self.sent = 0  # values handed off
        self.reused = 0  # of which written into a pooled file
        self.mapped = 0  # values received through shared memory

    def is_local(self, address: str) -> bool:
        return same_host(self.my_ip, address)

    def _name(self) -> str:
        self._n += 1
        return f"{self.prefix}{os.getpid()}-{self._n}"

    # ---- producer ------------------------------------------------------------------------

    def _exists(self, name: str) -> bool:
        return os.path.lexists(os.path.join(self.dir, name))

    def _drop(self, f: _File) -> None:
        """Give a file up: unlink it and its links (readers keep their mappings)."""
        self.files.remove(f)
        for name in [f.name, *f.links]:
            self._unlink(name)
        try:
            f.mm.close()
        except BufferError:
            pass

    def _create(self, size: int) -> _File | None:
        name = self._name()
        path = os.path.join(self.dir, name)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        except OSError as exc:
            log.warning("cannot create a shared-memory file in %s: %s", self.dir, exc)
            return None
        try:
            os.posix_fallocate(fd, 0, size)  # ENOSPC now rather than SIGBUS later
            flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)  # no fault per page
            mm = mmap.mmap(fd, size, flags, mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as exc:
            self._unlink(name)
            log.warning("no room for %d bytes in %s (%s): sent inline", size, self.dir, exc)
            return None
        finally:
            os.close(fd)
        return _File(name, size, mm)

    def _take(self, size: int, now: float) -> tuple[_File | None, bool]:
        """A pooled file of a fitting size whose readers are done, else a new one
        (pooled if there is room); ``(file, pooled)``."""
        for f in list(self.files):
            if f.links and any(self._exists(n) for n in f.links):
                if now >= f.deadline:
                    self._drop(f)  # a reader kept it too long: never rewrite it
                continue
            f.links = []
            if size <= f.size <= 2 * size + (1 << 20):
                self.reused += 1
                return f, True
        pooled = len(self.files) < self.pool_max
        if not pooled:  # make room: drop an idle file of the wrong size
            idle = [f for f in self.files if not f.links]
            if idle:
                self._drop(min(idle, key=lambda f: f.used))
                pooled = True
        f = self._create(size)
        if f is not None and pooled:
            self.files.append(f)
        return f, pooled

    def share(self, value: Any, consumers: int) -> list[pb.SharedValue] | None:
        """Write ``value`` into a file and return one handle per consumer (hard
        links of one file); None if it is small or could not be written (send it
        inline then)."""
        if consumers <= 0:
            return None
        lay = serializer.layout(value, self.threshold)
        if lay is None:
            return None
        pad = (-lay.align_at) % ALIGN
        now = self.clock()
        f, pooled = self._take(pad + lay.length, now)
        if f is None:
            return None
        names: list[str] = []
        try:
            view = memoryview(f.mm)
            try:
                lay.write_into(view[pad : pad + lay.length])
            finally:
                view.release()
            for _ in range(consumers):
                link = self._name()
                os.link(os.path.join(self.dir, f.name), os.path.join(self.dir, link))
                names.append(link)
        except BaseException:
            for n in names:
                self._unlink(n)
            if pooled:
                self._drop(f)
            raise
        finally:
            if not pooled:  # one-shot: only the consumers' links name it
                self._unlink(f.name)
                f.mm.close()
        if pooled:
            f.links, f.deadline, f.used = names, now + self.ttl, now
        else:
            self.book.add(names, now)
        self.sent += 1
        return [
            pb.SharedValue(segment=n, type=lay.kind, offset=pad, length=lay.length, host=self.host)  # type: ignore[arg-type]
            for n in names
        ]

    # ---- consumer ------------------------------------------------------------------------

    def open(self, arg: SharedArgument) -> Any:
        """The value of a handle: mapped read-only, decoded without copying its large
        data. Its link is unlinked once the call has dropped every view (:meth:`forget`)."""
        got = self.opened.get(arg.segment)
        if got is not None:
            return got[0]
        if arg.host != self.host:
            raise InvalidArgument(
                f"a shared-memory value from another host ({arg.host!r}, here {self.host!r})"
            )
        name = arg.segment
        if "/" in name or not name.startswith("cb-"):
            raise InvalidArgument(f"bad shared-memory file name {name!r}")
        path = os.path.join(self.dir, name)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise InvalidArgument(
                f"the shared-memory value {name!r} is gone ({exc.strerror}): its producer "
                "exited or the call waited longer than scheduler.call_timeout_s"
            ) from None
        try:
            size = os.fstat(fd).st_size
            flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
            mm = mmap.mmap(fd, size, flags, mmap.PROT_READ)
        except BaseException:
            self._unlink(name)
            raise
        finally:
            os.close(fd)
        if arg.offset + arg.length > size:
            self._unlink(name)
            raise InvalidArgument(f"shared-memory value {name!r} is truncated")
        body = memoryview(mm)[arg.offset : arg.offset + arg.length]
        try:
            value = serializer.loads_shared(arg.type, body)
        except BaseException:
            del body
            self._unlink(name)
            raise
        self.opened[name] = (value, mm)
        self.mapped += 1
        return value

    def open_all(self, args: list[Any]) -> list[Any]:
        return [self.open(a) if isinstance(a, SharedArgument) else a for a in args]

    def forget(self, keep: Iterable[str] = ()) -> None:
        """The call ended: drop its values (but those of ``keep``, parked calls'
        handles) and unlink the links of those no view is left of."""
        keep = set(keep)
        dropped = [n for n in self.opened if n not in keep]
        for name in dropped:
            mm = self.opened.pop(name)[1]  # (the value itself is dropped here)
            self.lingering.append((name, mm))
        self._settle(collect=bool(dropped))

    def _settle(self, collect: bool = True) -> None:
        still = []
        for name, mm in self.lingering:
            try:
                mm.close()  # raises while a view of it is alive
            except BufferError:
                still.append((name, mm))
                continue
            self._unlink(name)  # the producer may now reuse the file
        self.lingering = still
        if still and collect:
            # Unpickled values (out-of-band buffers) may sit in a reference cycle:
            # collect (once per call that mapped values) and try once more.
            gc.collect()
            self._settle(collect=False)

    # ---- both ----------------------------------------------------------------------------

    def expire(self, now: float) -> None:
        for name in self.book.due(now):
            self._unlink(name)
        for f in list(self.files):
            busy = f.links and any(self._exists(n) for n in f.links)
            if (busy and now >= f.deadline) or (not busy and now - f.used >= POOL_IDLE_S):
                self._drop(f)
        if self.lingering:
            self._settle(collect=False)

    def close(self) -> None:
        for name in self.book.drain():
            self._unlink(name)
        for f in list(self.files):
            self._drop(f)
        for name, _ in self.lingering:
            self._unlink(name)
        self.lingering = []

    def _unlink(self, name: str) -> None:
        try:
            os.unlink(os.path.join(self.dir, name))
        except FileNotFoundError:
            pass


def shared_names(arguments: Iterable[pb.Arguments]) -> list[str]:
    """The handles' file names in some Arguments messages."""
    return [a.shared.segment for args in arguments for a in args.values if a.HasField("shared")]


def encode_for(
    values: tuple[Any, ...], handles: list[list[pb.SharedValue] | None], k: int, out: pb.Arguments
) -> None:
    """Fill ``out`` with ``values`` for local consumer ``k`` (``k < 0``: a remote
    consumer, every value inline): a value with handles travels as the k-th one."""
    from cloudburst.shared import wire

    del out.values[:]
    for value, hs in zip(values, handles, strict=True):
        arg = out.values.add()
        if hs is not None and k >= 0:
            arg.shared.CopyFrom(hs[k])
        else:
            wire.encode_argument(value, arg)


def make_handoff(cfg: Any, cache_address: str, clock: Callable[[], float]) -> Handoff | None:
    """The worker's :class:`Handoff`, or None when shared memory is off (no node
    cache, ``cache.shm_threshold_bytes: 0``, no ``cache.shm_dir``)."""
    c = cfg.cache
    if not cache_address or c.shm_threshold_bytes <= 0 or not os.path.isdir(c.shm_dir):
        return None
    return Handoff(
        cfg.ip, c.shm_dir, cache_address, c.shm_threshold_bytes, cfg.scheduler.call_timeout_s, clock
    )
