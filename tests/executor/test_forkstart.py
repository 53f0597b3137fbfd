"""executor.forkstart.ForkedProcess signals its worker through a pidfd: once the worker
has exited (and the fork server reaped it), a late signal reaches nobody, even when the
exit is not yet visible to ``poll`` and the pid has been reused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from executor.forkstart import ForkedProcess


class _Stale:
    """A multiprocessing.Process whose exit the owner has not seen yet."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.exitcode = None


def test_signal_reaches_the_live_worker():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        proc = ForkedProcess(_Stale(child.pid), ["w"])
        proc.send_signal(signal.SIGTERM)
        assert child.wait(timeout=10) == -signal.SIGTERM
    finally:
        child.kill()
        child.wait(timeout=10)


def test_a_late_signal_after_the_exit_reaches_nobody():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    proc = ForkedProcess(_Stale(child.pid), ["w"])
    child.wait(timeout=10)  # reaped: the pid is free for anyone
    # A new process may now hold the same pid; the pidfd still names the old one.
    proc.pid = os.getpid()  # the worst case: the pid is now ours
    proc.send_signal(signal.SIGUSR1)  # would kill this test process through os.kill
    proc.kill()
