"""Capturing what a call writes: stdout, stderr and ``logging`` records, per call.

A worker runs one call at a time, so capturing swaps ``sys.stdout``/``sys.stderr``
for a bounded buffer while the call runs (two attribute stores: nothing measurable
when the function prints nothing) and a handler installed once on the root logger
adds the records of user loggers while a capture is active. The buffer keeps the
last ``limit`` characters; what was dropped is marked at the top. Output written by
C code straight to file descriptors 1/2 is not captured (it stays in the executor's
log file).
"""

from __future__ import annotations

import logging
import sys
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


class OutputCapture:
    """One worker's capture: ``start()`` before a call, ``stop()`` after it (returns
    the text), ``text`` until the next ``reset()``/``start()``."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = limit
        self.active = False
        self._chunks: deque[str] = deque()
        self._size = 0
        self._dropped = 0
        self._saved: tuple[Any, Any] | None = None
        self._out = _Stream(self, sys.__stdout__ or sys.stdout)
        self._err = _Stream(self, sys.__stderr__ or sys.stderr)
        self._handler = _Handler(self)
        logging.getLogger().addHandler(self._handler)

    def reset(self) -> None:
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

    def stop(self) -> str:
        if self.active:
            self.active = False
            if self._saved is not None:
                sys.stdout, sys.stderr = self._saved
                self._saved = None
        return self.text

    def add(self, text: str) -> None:
        if not text:
            return
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
        logging.getLogger().removeHandler(self._handler)
