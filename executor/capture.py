"""Capturing what a call writes: stdout, stderr and ``logging`` records, per call.

A worker runs one call at a time, so capturing swaps ``sys.stdout``/``sys.stderr``
for a bounded buffer while the call runs (two attribute stores: nothing measurable
when the function prints nothing) and a handler installed once on the root logger
adds the records of user loggers while a capture is active. The buffer keeps the
last ``limit`` characters; what was dropped is marked at the top.

With ``fds=True`` (the worker's default, ``executor.capture_fds``) file descriptors 1
and 2 are pointed at a pipe for the life of the process, so what C code (``printf``),
a subprocess or ``os.write(1, ...)`` writes during a call is captured as well: a
reader thread keeps draining the pipe (a writer never blocks on it) into the call's
bounded buffer, or, between calls, on to the real descriptors; at the end of a call C
stdio is flushed and what is still in the pipe is read before the output is
returned. The worker's own log handlers are moved to private duplicates of the
descriptors first, so Cloudburst's log lines never land in a call's output.
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import os
import select
import sys
import threading
from collections import deque
from typing import Any, TextIO

from cloudburst.shared.wire import is_internal_file

#: Characters of output kept per call (the tail).
DEFAULT_LIMIT = 64 * 1024


class _Stream:
    """A text stream writing into a capture (what ``print`` sees)."""

    def __init__(self, capture: OutputCapture, real: TextIO) -> None:
        self._capture = capture
        self._real = real

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self._capture.add(text)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._real.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self._real, "encoding", "utf-8") or "utf-8"

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class _Handler(logging.Handler):
    def __init__(self, capture: OutputCapture) -> None:
        super().__init__(logging.NOTSET)
        self._capture = capture
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if not self._capture.active or is_internal_file(record.pathname):
            return  # Cloudburst's own records (the worker's log) are not the user's output
        try:
            self._capture.add(self.format(record) + "\n")
        except Exception:  # noqa: BLE001 - never fail the user's logging call
            pass


def _libc_fflush() -> Any:
    try:
        fflush = ctypes.CDLL(None).fflush
    except (OSError, AttributeError):
        return None
    fflush.argtypes = [ctypes.c_void_p]
    return fflush


class _FdTap:
    """File descriptors 1 and 2 pointed at a pipe for good; a reader thread passes what
    arrives between calls on to the real descriptors, and adds what arrives during a
    call to the capture (see the module docstring). Per call this costs a C stdio
    flush and a poll of the pipe at ``start()`` and ``stop()`` (a few µs)."""

    def __init__(self, capture: OutputCapture) -> None:
        self._capture = capture
        self._fflush = _libc_fflush()
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        self._saved = (os.dup(1), os.dup(2))
        for fd in (self._read, self._write, *self._saved):
            os.set_inheritable(fd, False)
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._lock = threading.Lock()  # one reader at a time (thread or stop())
        self._poll = select.poll()
        self._poll.register(self._read, select.POLLIN)
        self.active = False
        self._move_log_handlers()
        self._flush_c()
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self._write, 1)
        os.dup2(self._write, 2)
        self._thread = threading.Thread(target=self._drain_loop, name="fd-capture", daemon=True)
        self._thread.start()

    def _move_log_handlers(self) -> None:
        """Point stream log handlers writing to fd 1/2 at private duplicates, so the
        process's own log lines (other threads too) are never captured."""
        for handler in logging.getLogger().handlers:
            stream = getattr(handler, "stream", None)
            try:
                fd = stream.fileno() if stream is not None else -1
            except (AttributeError, OSError, ValueError):
                continue
            if fd in (1, 2) and isinstance(handler, logging.StreamHandler):
                stream.flush()
                dup = self._saved[fd - 1]
                handler.setStream(open(os.dup(dup), "w", buffering=1, closefd=True))

    def start(self) -> None:
        self._drain()  # written before the call (complete writes): not the call's
        self.active = True

    def stop(self) -> None:
        self._flush_c()
        self._drain()  # what the call wrote and the thread has not read yet
        self.active = False

    def close(self) -> None:
        self._flush_c()
        self._drain()
        self.active = False
        os.dup2(self._saved[0], 1)
        os.dup2(self._saved[1], 2)

    def _flush_c(self) -> None:
        if self._fflush is not None:
            try:
                self._fflush(None)
            except Exception:  # noqa: BLE001 - never fail a call over it
                pass

    def _drain(self) -> None:
        with self._lock:
            while self._poll.poll(0):
                try:
                    data = os.read(self._read, 65536)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    return
                if not data:
                    return
                if self.active:
                    self._capture.add(self._decoder.decode(data))
                else:  # not during a call (a leftover subprocess, C code): pass it on
                    try:
                        os.write(self._saved[0], data)
                    except OSError:
                        pass

    def _drain_loop(self) -> None:
        poller = select.poll()
        poller.register(self._read, select.POLLIN)
        while True:
            try:
                if poller.poll(1000):
                    self._drain()
            except Exception:  # noqa: BLE001 - keep draining: a writer must never block
                pass


class OutputCapture:
    """One worker's capture: ``start()`` before a call, ``stop()`` after it (returns
    the text), ``text`` until the next ``reset()``/``start()``. ``fds=True`` also
    captures what is written to file descriptors 1 and 2 (C code, subprocesses)."""

    def __init__(self, limit: int = DEFAULT_LIMIT, fds: bool = False) -> None:
        self.limit = limit
        self.active = False
        self._chunks: deque[str] = deque()
        self._size = 0
        self._dropped = 0
        self._add_lock = threading.Lock()  # the fd reader thread adds too
        self._saved: tuple[Any, Any] | None = None
        self._out = _Stream(self, sys.__stdout__ or sys.stdout)
        self._err = _Stream(self, sys.__stderr__ or sys.stderr)
        self._handler = _Handler(self)
        logging.getLogger().addHandler(self._handler)
        self._tap = _FdTap(self) if fds else None

    def reset(self) -> None:
        if self._chunks or self._dropped:
            with self._add_lock:
                self._reset()

    def _reset(self) -> None:
        if self._chunks or self._dropped:
            self._chunks.clear()
            self._size = 0
            self._dropped = 0

    def start(self) -> None:
        """Capture from now on (a no-op if already capturing: a chain of functions
        run in place shares one capture)."""
        if self.active:
            return
        self._saved = (sys.stdout, sys.stderr)
        sys.stdout, sys.stderr = self._out, self._err  # type: ignore[assignment]
        self.active = True
        if self._tap is not None:
            self._tap.start()

    def stop(self) -> str:
        if self.active:
            if self._tap is not None:
                self._tap.stop()
            self.active = False
            if self._saved is not None:
                sys.stdout, sys.stderr = self._saved
                self._saved = None
        return self.text

    def add(self, text: str) -> None:
        if not text:
            return
        with self._add_lock:
            self._add(text)

    def _add(self, text: str) -> None:
        self._chunks.append(text)
        self._size += len(text)
        while self._size > self.limit and self._chunks:
            first = self._chunks[0]
            excess = self._size - self.limit
            if len(first) <= excess:
                self._chunks.popleft()
                self._size -= len(first)
                self._dropped += len(first)
            else:
                self._chunks[0] = first[excess:]
                self._size -= excess
                self._dropped += excess

    @property
    def text(self) -> str:
        if not self._chunks:
            return ""
        body = "".join(self._chunks)
        if self._dropped:
            return f"[... {self._dropped} earlier characters of output dropped ...]\n{body}"
        return body

    def close(self) -> None:
        self.stop()
        if self._tap is not None:
            self._tap.close()
        logging.getLogger().removeHandler(self._handler)
