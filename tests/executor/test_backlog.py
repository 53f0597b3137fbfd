"""executor.spill.Backlog on a fixed pool (no node pool socket): while a call runs, the
triggers waiting in the worker's socket are taken, so they count in its reported queue
(a socket's backlog is invisible to the scheduler and the autoscaler), and are received
in order. Inproc sockets, no processes."""

from __future__ import annotations

import time
from typing import Any

import zmq

from executor.spill import Backlog


def test_a_fixed_pool_worker_counts_the_triggers_waiting_behind_its_call() -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.bind("inproc://triggers")
    push = ctx.socket(zmq.PUSH)
    push.connect("inproc://triggers")
    running = {"call": True}
    backlog = Backlog(pull, ctx, "", 0.0, lambda: running["call"], "worker0")
    try:
        backlog.start()
        for i in range(5):
            push.send(b"trigger-%d" % i)
        deadline = time.monotonic() + 10.0
        while len(backlog) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(backlog) == 5  # counted while the call runs, nothing handed back
        assert backlog.spilled == 0
        running["call"] = False
        got = [backlog.recv(100) for _ in range(5)]
        assert got == [b"trigger-%d" % i for i in range(5)]
        assert len(backlog) == 0 and backlog.recv(10) is None
    finally:
        backlog.close()
        assert backlog._thread is not None
        backlog._thread.join(timeout=5)
        push.close(linger=0)
        pull.close(linger=0)
        ctx.term()
