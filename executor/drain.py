"""Drain the executor node(s) of this host or pod: ``python -m executor.drain``.

The ``preStop`` hook of an executor pod (deploy/k8s/base/executor.yaml): Kubernetes
runs it before it sends SIGTERM (a quick stop). It sends SIGUSR1 to every
``python -m executor.node`` process it can see (the pod shares one PID namespace) and
waits until they have exited: each node's workers leave (the schedulers place no new
call on them), run what was already placed on them, and exit, then the node stops
(``executor.node``, docs/elasticity.md). No call placed on the pod is lost.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path


def node_pids(proc: Path = Path("/proc")) -> list[int]:
    """Pids of the ``python -m executor.node`` processes in ``proc`` (not this one)."""
    out = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not ours
            continue
        if any(a == b"-m" and b == b"executor.node" for a, b in zip(args, args[1:], strict=False)):
            out.append(int(entry.name))
    return sorted(out)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True


def drain(timeout: float, pids: list[int] | None = None) -> list[int]:
    """Signal the nodes (``pids``, default :func:`node_pids`) and wait for them
    (``timeout`` seconds at most); returns the pids still alive at the end."""
    pids = node_pids() if pids is None else pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGUSR1)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    left = [p for p in pids if _alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = [p for p in left if _alive(p)]
    return left


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m executor.drain")
    parser.add_argument(
        "--timeout", type=float, default=50.0, help="seconds to wait for the nodes to exit"
    )
    args = parser.parse_args(argv)
    pids = node_pids()
    print(f"draining executor node(s) {pids}", flush=True)
    left = drain(args.timeout, pids)
    if left:
        print(f"executor node(s) {left} still running after {args.timeout:g}s", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
