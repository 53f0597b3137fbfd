"""Calls waiting behind a busy worker go back to the node (``executor.pool``).

A worker runs one call at a time; the scheduler may have queued more calls on it (in
its trigger socket) before it learned the worker was busy. While the worker runs a
call, a small thread takes the waiting triggers out of the socket (under a lock the
main loop holds only while it receives), and hands the ones that waited
``executor.grow_after_s`` back to the node, which gives them to an idle worker or
starts one. Without this, calls that wait on each other (a gang) would wait for ever
behind the calls that wait for them.

Only calls that are whole in one message move: single-function calls (``exec_func``,
one-function DAGs). Results of upstream functions, fan-ins and cancels stay.

The main loop receives through :meth:`Backlog.recv` (taken triggers first, in order).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import zmq

from cloudburst.shared import wire

log = logging.getLogger(__name__)

#: The node's pool socket (``ipc://``): spilled calls and worker heartbeats.
NODE_POOL_ENV = "CB_NODE_POOL"
SPILL = b"spill"
TICK_S = 0.05


def spill_id(data: bytes) -> str | None:
    """The call id of a trigger that may move to another worker, else None."""
    try:
        msg = wire.parse_executor_message(data)
    except Exception:
        return None
    trig = msg.trigger
    sched = trig.schedule
    if (
        msg.WhichOneof("kind") != "trigger"
        or trig.HasField("error")
        or trig.source
        or len(sched.dag.functions) != 1
        or trig.target_function != sched.dag.functions[0]
    ):
        return None
    return sched.id


class Backlog:
    """The receiving side of a worker's trigger socket, shared with the spill thread."""

    def __init__(
        self,
        sock: zmq.Socket[Any],
        ctx: zmq.Context[Any],
        spill_address: str,
        grow_after_s: float,
        running_call: Callable[[], bool],
        origin: str = "",
        is_cancelled: Callable[[str], bool] | None = None,
    ) -> None:
        self.sock = sock
        self.ctx = ctx
        self.spill_address = spill_address
        self.grow_after_s = grow_after_s
        self.running_call = running_call
        self.origin = origin.encode()
        #: a call its caller cancelled stays here (the worker drops it when it reads it)
        #: instead of moving to another worker that never heard of the cancel
        self.is_cancelled = is_cancelled
        self.lock = threading.Lock()
        self.items: deque[tuple[float, bytes]] = deque()
        self.spilled = 0
        self.closed = False
        self._thread: threading.Thread | None = None

    def __len__(self) -> int:
        return len(self.items)

    def recv(self, wait_ms: int) -> bytes | None:
        """The next trigger (taken ones first), waiting up to ``wait_ms``."""
        with self.lock:
            if self.items:
                return self.items.popleft()[1]
            if self.sock.poll(wait_ms):
                try:
                    return self.sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    return None
        return None

    def start(self) -> None:
        """Take waiting triggers while a call runs, and hand back the ones that waited
        ``grow_after_s`` (with a node pool); without one (a fixed pool) only take them:
        they count in the worker's reported queue (``len``), which the scheduler's load
        and the autoscaler's queue input read (a socket's backlog is invisible)."""
        self._thread = threading.Thread(target=self._loop, name="spill", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.closed = True

    def _loop(self) -> None:
        push = None
        if self.spill_address and self.grow_after_s > 0:
            push = self.ctx.socket(zmq.PUSH)
            push.setsockopt(zmq.LINGER, 1000)
            push.connect(self.spill_address)
        try:
            while not self.closed:
                time.sleep(TICK_S)
                if self.running_call():
                    self.take_and_spill(push)
        except zmq.ZMQError:  # the context is being closed: the worker exits
            pass
        finally:
            if push is not None:
                push.close(linger=1000)

    def take_and_spill(self, push: zmq.Socket[Any] | None) -> int:
        """Take what waits in the socket; hand back what waited too long (``push``:
        the node's pool socket; None: take only). Returns the number of calls handed
        back."""
        if not self.lock.acquire(timeout=0.01):
            return 0
        sent = 0
        try:
            now = time.monotonic()
            while True:
                try:
                    self.items.append((now, self.sock.recv(zmq.NOBLOCK)))
                except zmq.Again:
                    break
            if push is None or not self.items or now - self.items[0][0] < self.grow_after_s:
                return 0
            keep: deque[tuple[float, bytes]] = deque()
            for since, data in self.items:
                call_id = spill_id(data) if now - since >= self.grow_after_s else None
                if call_id is not None and self.is_cancelled and self.is_cancelled(call_id):
                    call_id = None
                if call_id is None:
                    keep.append((since, data))
                    continue
                try:
                    push.send_multipart([SPILL, call_id.encode(), data, self.origin], zmq.NOBLOCK)
                except zmq.Again:
                    keep.append((since, data))
                    continue
                sent += 1
                log.info(
                    "[%s] waited %.2fs behind a busy worker: handed back to the node",
                    call_id,
                    now - since,
                )
            self.items = keep
            self.spilled += sent
        finally:
            self.lock.release()
        return sent
