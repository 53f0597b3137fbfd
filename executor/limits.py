"""Per-call limits of user functions: time (a watchdog thread) and memory (RLIMIT_AS).

A call runs in the worker's main thread. :class:`CallLimits` is entered around it:

* **time**: the :class:`Watchdog` thread wakes at the call's deadline; if the call is
  still running it hands the call to ``on_expiry`` (the worker reports
  ``FunctionTimeout`` to the caller and exits, and its node starts a new worker). A
  call stuck in C code that holds the GIL never lets the watchdog run: for that case
  RLIMIT_CPU is set too (the kernel kills the process after ``timeout * cpus + 2``
  more CPU seconds), and the caller learns of it as a dead executor.
* **memory**: RLIMIT_AS (the soft limit, which the process may raise again) is set to
  the worker's current address space plus the call's allowance, so an allocation past
  it raises ``MemoryError`` inside user code; the limit is lifted when the call ends.

Exit statuses of a worker that replaced itself: :data:`EXIT_TIMEOUT`,
:data:`EXIT_MEMORY`, :data:`EXIT_CANCELLED` (a running call its caller cancelled is
stopped the same way; its node logs them when it restarts the worker).
"""

from __future__ import annotations

import logging
import os
import resource
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

EXIT_TIMEOUT = 124  # as timeout(1)
EXIT_MEMORY = 125
EXIT_CANCELLED = 126  # a running call was cancelled by its caller

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_CPUS = os.cpu_count() or 1


def address_space() -> int:
    """Bytes of address space this process maps now (VmSize)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


@dataclass(frozen=True)
class Limits:
    """The limits of one call; 0 = unlimited. Falsy when there is none."""

    timeout_s: float = 0.0
    memory_bytes: int = 0

    def __bool__(self) -> bool:
        return bool(self.timeout_s or self.memory_bytes)


_UNLIMITED = Limits()


def effective_limits(
    timeout_s: float, memory_bytes: int, default_timeout_s: float, default_memory_bytes: int
) -> Limits:
    """A function's own limits, or the config defaults where it set none."""
    timeout_s = timeout_s or default_timeout_s
    memory_bytes = memory_bytes or default_memory_bytes
    if not (timeout_s or memory_bytes):
        return _UNLIMITED
    return Limits(timeout_s, memory_bytes)


class Watchdog:
    """One thread that calls ``on_expiry(info)`` when the running call passes its
    deadline (the call is ``info``, any object the worker chooses)."""

    def __init__(self, on_expiry: Callable[[Any], None]) -> None:
        self.on_expiry = on_expiry
        self._cond = threading.Condition()
        self._call: tuple[float, Any] | None = None
        self._thread: threading.Thread | None = None

    def start(self, info: Any, timeout_s: float) -> None:
        with self._cond:
            self._call = (time.monotonic() + timeout_s, info)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
                self._thread.start()
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._call = None

    def _run(self) -> None:
        while True:
            with self._cond:
                call = self._call
                if call is None:
                    self._cond.wait()
                    continue
                left = call[0] - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                self._call = None  # still the same call: it ran past its deadline
            self.on_expiry(call[1])


class CallLimits:
    """Applies :class:`Limits` around one call (``with limits.apply(lim, info):``)."""

    def __init__(self, on_timeout: Callable[[Any], None]) -> None:
        self.watchdog = Watchdog(on_timeout)

    def apply(self, limits: Limits, info: Any) -> _Applied:
        return _Applied(self, limits, info)


class _Applied:
    __slots__ = ("owner", "limits", "info", "old_as", "old_cpu")

    def __init__(self, owner: CallLimits, limits: Limits, info: Any) -> None:
        self.owner = owner
        self.limits = limits
        self.info = info
        self.old_as: tuple[int, int] | None = None
        self.old_cpu: tuple[int, int] | None = None

    def __enter__(self) -> _Applied:
        lim = self.limits
        if lim.timeout_s:
            self.owner.watchdog.start(self.info, lim.timeout_s)
            old = resource.getrlimit(resource.RLIMIT_CPU)
            used = resource.getrusage(resource.RUSAGE_SELF)
            cap = int(used.ru_utime + used.ru_stime + lim.timeout_s * _CPUS + 2) + 1
            if old[1] == resource.RLIM_INFINITY or cap < old[1]:
                resource.setrlimit(resource.RLIMIT_CPU, (cap, old[1]))
                self.old_cpu = old
        if lim.memory_bytes:
            old = resource.getrlimit(resource.RLIMIT_AS)
            cap = address_space() + lim.memory_bytes
            if old[1] == resource.RLIM_INFINITY or cap < old[1]:
                resource.setrlimit(resource.RLIMIT_AS, (cap, old[1]))
                self.old_as = old
        return self

    def __exit__(self, *exc: object) -> None:
        # Lift the memory limit first: reporting an error allocates.
        if self.old_as is not None:
            resource.setrlimit(resource.RLIMIT_AS, self.old_as)
        if self.limits.timeout_s:
            self.owner.watchdog.stop()
        if self.old_cpu is not None:
            resource.setrlimit(resource.RLIMIT_CPU, self.old_cpu)

    @property
    def memory_limited(self) -> bool:
        return self.old_as is not None


class ResultExpiry:
    """Keys a worker stored call results under, to delete ``ttl`` seconds later.

    >>> e = ResultExpiry(ttl=10.0)
    >>> e.add("results/a", now=0.0)
    >>> e.due(5.0), e.due(10.0)
    ([], ['results/a'])
    """

    def __init__(self, ttl: float, batch: int = 1000) -> None:
        self.ttl = ttl
        self.batch = batch
        self._keys: deque[tuple[float, str]] = deque()

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: str, now: float) -> None:
        if self.ttl > 0:
            self._keys.append((now + self.ttl, key))

    def due(self, now: float) -> list[str]:
        """Keys whose time has come (at most ``batch``), removed from the book."""
        out: list[str] = []
        keys = self._keys
        while keys and keys[0][0] <= now and len(out) < self.batch:
            out.append(keys.popleft()[1])
        return out

    def next_due(self) -> float:
        return self._keys[0][0] if self._keys else float("inf")


class _NoLimits:
    """What :meth:`CallLimits.apply` gives for a call without limits (nothing to do)."""

    memory_limited = False

    def __enter__(self) -> _NoLimits:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


#: The context of a call without limits (shared; costs nothing per call).
NO_LIMITS = _NoLimits()
