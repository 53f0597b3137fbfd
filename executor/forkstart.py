"""Start workers in milliseconds: fork them from a process that imported them already.

A new worker started with ``python -m executor.worker`` spends seconds importing
(numpy, protobuf, zmq, the DDT runtime; 10-20 s when seven start at once on a busy
2-core machine). The pool grows when calls are waiting, so that start-up is the
latency of every call that waits. :class:`ForkStarter` keeps a ``multiprocessing``
fork server that preloaded ``executor.worker`` (single-threaded, no ZeroMQ context);
each new worker is a fork of it, running ``executor.worker.main`` with the node's
environment. :class:`ForkedProcess` gives it the ``subprocess.Popen`` surface the
supervisor uses (``pid``, ``poll``, ``wait``, ``send_signal``, ``kill``).

The fork server is started in the background when the node starts; until it is up
(or if it cannot start) workers start the ordinary way.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

log = logging.getLogger(__name__)


def _worker_entry(argv: list[str], env: dict[str, str]) -> None:  # in the forked child
    import ctypes

    server = os.getppid()
    try:  # SIGKILL when the fork server goes (it exits with the node)
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PDEATHSIG
    except OSError:
        pass
    if os.getppid() != server:
        os._exit(1)
    os.environ.clear()
    os.environ.update(env)
    from executor import worker

    sys.exit(worker.main(argv))


class ForkedProcess:
    """A ``multiprocessing.Process`` with the ``subprocess.Popen`` methods we use."""

    def __init__(self, proc: Any, argv: Sequence[str]) -> None:
        self._proc = proc
        self.args = list(argv)
        self.pid: int = proc.pid
        # The fork server, not the node, is this worker's parent and reaps it at once:
        # its pid may be reused by an unrelated process before ``poll`` sees the exit.
        # A pidfd names this very process, so a late signal can never hit another one.
        self._pidfd: int | None = None
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):  # exited already, or no pidfd (old kernel)
            pass

    @property
    def returncode(self) -> int | None:
        code: int | None = self._proc.exitcode
        return code

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._proc.join(timeout)
        code = self.returncode
        if code is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
        return code

    def send_signal(self, sig: int) -> None:
        if self.returncode is not None:
            self._close_pidfd()
            return
        try:
            if self._pidfd is not None:
                signal.pidfd_send_signal(self._pidfd, sig)
            else:
                os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def _close_pidfd(self) -> None:
        fd = getattr(self, "_pidfd", None)
        self._pidfd = None
        if fd is not None:
            os.close(fd)

    def __del__(self) -> None:
        self._close_pidfd()

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ForkStarter:
    def __init__(self) -> None:
        self.ctx = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload(["executor.worker"])
        self.ready = threading.Event()
        self.failed = False

    def warm_up(self) -> None:
        """Start the fork server (and its imports) in a background thread."""

        def run() -> None:
            try:
                from multiprocessing import forkserver

                forkserver.ensure_running()
                self.ready.set()
            except Exception:
                log.exception("the worker fork server did not start: workers start slowly")
                self.failed = True

        threading.Thread(target=run, name="forkserver", daemon=True).start()

    def start(self, argv: Sequence[str], env: Mapping[str, str]) -> ForkedProcess | None:
        """A worker forked from the preloaded server, or None (not ready: use Popen).
        ``argv`` are ``executor.worker``'s arguments."""
        if not self.ready.is_set() or self.failed:
            return None
        try:
            proc = self.ctx.Process(
                target=_worker_entry, args=(list(argv), dict(env)), name="worker", daemon=False
            )
            proc.start()
        except Exception:
            log.exception("forking a worker failed: starting it the ordinary way")
            return None
        return ForkedProcess(proc, argv)
