"""Start and always stop groups of real server processes.

Used by the local launcher, the test fixtures and the benchmarks::

    with ProcessGroup() as group:
        port = free_port()
        group.start("shard0", [sys.executable, "-m", "anna.local", ...])
        wait_until(lambda: port_open("127.0.0.1", port), timeout=10, what="shard0")
    # every process is stopped here, even if the block raised
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cloudburst.shared.errors import CloudburstTimeoutError

# Fresh large allocations are expensive on these machines (page faults); a high mmap
# threshold lets malloc reuse freed buffers (see PERF_NOTES.md).
SERVER_ENV = {
    "MALLOC_MMAP_THRESHOLD_": "16777216",
    # Without a matching trim threshold glibc returns freed memory at once and numpy
    # temporaries page-fault again (2.7x slower aggregate stage in bench/pipeline.py).
    "MALLOC_TRIM_THRESHOLD_": "33554432",
    "PYTHONUNBUFFERED": "1",
}


def free_port(ip: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``ip`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((ip, 0))
        return int(sock.getsockname()[1])


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def free_port_block(count: int, ip: str = "127.0.0.1", attempts: int = 200) -> int:
    """A base port such that ``base .. base+count-1`` were all free on ``ip``.

    Blocks are drawn below the kernel's ephemeral range: there, outgoing connections
    (and their TIME_WAIT leftovers) never take a port, so a block stays free on a busy
    machine. Falls back to ephemeral ports when no such block is found.
    """
    eph_lo, _ = _ephemeral_range()
    rng = random.Random()
    low = 10000
    for _ in range(attempts):
        if eph_lo - count > low:
            base = rng.randrange(low, eph_lo - count)
        else:
            base = free_port(ip)
            if base + count >= 65535:
                continue
        if all(port_free(ip, base + i) for i in range(count)):
            return base
    raise RuntimeError(f"no block of {count} free ports found on {ip}")


def port_free(ip: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((ip, port))
        except OSError:
            return False
        return True


def port_open(ip: str, port: int, timeout: float = 0.2) -> bool:
    """Whether something accepts TCP connections on ``ip:port``."""
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll ``check`` until it returns true; raise a timeout error naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if time.monotonic() >= deadline:
            raise CloudburstTimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


@dataclass
class ManagedProcess:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class ProcessGroup:
    """A set of child processes that are all stopped by :meth:`stop_all`."""

    log_dir: Path | None = None
    procs: dict[str, ManagedProcess] = field(default_factory=dict)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> ManagedProcess:
        if name in self.procs and self.procs[name].alive():
            raise RuntimeError(f"process {name!r} is already running")
        full_env = {**os.environ, **SERVER_ENV, **(env or {})}
        log_path = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log_path = self.log_dir / f"{name}.log"
            out = open(log_path, "ab")  # noqa: SIM115 - handed to the child
        else:
            out = None
        try:
            popen = subprocess.Popen(
                list(argv),
                env=full_env,
                cwd=cwd,
                stdout=out if out else subprocess.DEVNULL,
                stderr=subprocess.STDOUT if out else None,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            if out:
                out.close()
        proc = ManagedProcess(name, popen, log_path)
        self.procs[name] = proc
        return proc

    def python(self, name: str, module: str, *args: str, **kw: object) -> ManagedProcess:
        """Start ``python -m module args...`` with this interpreter."""
        return self.start(name, [sys.executable, "-m", module, *args], **kw)  # type: ignore[arg-type]

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        if proc.alive():
            os.killpg(proc.pid, sig) if _is_group_leader(proc.pid) else proc.popen.send_signal(sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                try:
                    proc.popen.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.popen.kill()
                    proc.popen.wait(timeout=5)

    def check_alive(self) -> None:
        """Raise if any process has exited, with the tail of its log."""
        for proc in self.procs.values():
            if not proc.alive():
                raise RuntimeError(
                    f"process {proc.name} exited with {proc.popen.returncode}\n{proc.log_tail()}"
                )

    def stop_all(self, grace: float = 5.0) -> None:
        """SIGTERM every process (and its group), then SIGKILL whatever is left."""
        live = [p for p in self.procs.values() if p.alive()]
        for proc in live:
            _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in live:
            try:
                proc.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in self.procs.values():
            _signal_group(proc.pid, signal.SIGKILL)
            if proc.popen.poll() is None:
                proc.popen.wait(timeout=5)

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def _is_group_leader(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


def _signal_group(pid: int, sig: int) -> None:
    """Signal the process group led by ``pid`` (children included), or just ``pid``."""
    try:
        if _is_group_leader(pid):
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
