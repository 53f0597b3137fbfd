"""The shard's worker thread for the slow parts of large values.

A 500 MB PUT costs the shard copies (decoding the request), a CRC and a write of the
WAL record and an fsync; a 500 MB GET a copy into the answer; a compaction a snapshot
of everything. Done on the request loop, each of those stalls every other client for
up to seconds. The loop hands them to this one thread (FIFO) and goes on serving; the
thread's copies, CRCs, writes and fsyncs release the GIL (:mod:`anna.shard.bigvalue`),
so the loop keeps running meanwhile. State changes stay on the loop: a job's result
comes back through :meth:`BigLane.drain`, which the loop calls when :attr:`fd` is
readable (or whenever :attr:`done` is not empty).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Job = tuple[Callable[..., Any], tuple[Any, ...], Callable[[Any], None]]


class BigLane:
    """One worker thread: ``submit(fn, args, on_done)`` runs ``fn(*args)`` there and
    later ``on_done(result)`` (an exception is passed as the result) on the loop."""

    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self.done: deque[tuple[Callable[[Any], None], Any]] = deque()
        self.fd, self._wake = os.pipe()
        os.set_blocking(self.fd, False)
        os.set_blocking(self._wake, False)
        self.inflight = 0
        self._thread = threading.Thread(target=self._run, name="big-values", daemon=True)
        self._thread.start()

    def submit(
        self, fn: Callable[..., Any], args: tuple[Any, ...], on_done: Callable[[Any], None]
    ) -> None:
        self.inflight += 1
        self.jobs.put((fn, args, on_done))

    def _run(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            fn, args, on_done = job
            try:
                result = fn(*args)
            except Exception as exc:  # handed to the loop, which logs it
                result = exc
            del job, args
            self.done.append((on_done, result))
            del result
            try:
                os.write(self._wake, b"x")
            except BlockingIOError:
                pass  # the pipe is full: the loop is awake anyway

    def drain(self) -> None:
        """Run the callbacks of finished jobs (on the loop)."""
        try:
            os.read(self.fd, 4096)
        except BlockingIOError:
            pass
        done = self.done
        while done:
            on_done, result = done.popleft()
            self.inflight -= 1
            try:
                on_done(result)
            except Exception:
                log.exception("large value: completing a job failed")

    def wait_idle(self, timeout: float) -> bool:
        """Finish what is queued (shutdown): True if nothing is left."""
        import time

        deadline = time.monotonic() + timeout
        while self.inflight and time.monotonic() < deadline:
            if self.done:
                self.drain()
            else:
                time.sleep(0.005)
        return not self.inflight

    def close(self) -> None:
        self.jobs.put(None)
        self._thread.join(timeout=5.0)
        os.close(self.fd)
        os.close(self._wake)
