"""An executor worker process: the shell around trigger bookkeeping and invocation.

``python -m executor.worker --config <yaml> --index <i> --node-id <id>`` (started by
``executor.node``). It binds two PULL sockets on random ports of ``cfg.ip`` (or
``cfg.executor.base_port + i`` when that is set and free): triggers, and the user
library's inbox (``getid()``). A heartbeat thread reports an ``ExecutorStatus`` to
every scheduler every ``cfg.executor.heartbeat_period_s`` seconds, also while a user
function runs.

Cache hook: if the state client from ``executor.state.make_state_client`` has a
``cached_key_sizes() -> dict[str, int]`` method, heartbeats carry its result as the
node's cache summary (it is called from the heartbeat thread).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

import zmq

from cloudburst.ddt.dag import STREAMED, DagStreams
from cloudburst.shared import logs, metrics, security, serializer, wire
from cloudburst.shared.config import Config, kvs_host, load_config, scheduler_host
from cloudburst.shared.errors import (
    CloudburstTimeoutError,
    FunctionNotFound,
    InvalidArgument,
    SerializationError,
    WireError,
)
from cloudburst.shared.kvs import make_kvs_client
from cloudburst.shared.logs import CURRENT_CALL, setup_logging
from cloudburst.shared.proto import cloudburst_pb2 as pb
from cloudburst.shared.values import to_lattice
from executor.batching import BatchBook, split_results, transpose
from executor.capture import OutputCapture
from executor.handoff import encode_for, make_handoff, shared_names
from executor.invoke import (
    KeysNotReady,
    LoadedFunction,
    invoke,
    load_function,
    resolve_args,
)
from executor.limits import (
    EXIT_CANCELLED,
    EXIT_MEMORY,
    EXIT_TIMEOUT,
    NO_LIMITS,
    CallLimits,
    Limits,
    ResultExpiry,
    effective_limits,
)
from executor.session import CallSession
from executor.spill import NODE_POOL_ENV, Backlog
from executor.state import NODE_CACHE_ENV, make_state_client
from executor.triggers import (
    Cancel,
    CancelBook,
    InvalidTrigger,
    Run,
    TriggerBook,
    downstreams,
    forward_schedule,
    is_invalid,
    upstreams,
)
from executor.userlib import UserLibrary
from scheduler.registry import decode_function, func_key, scheduler_addresses

log = logging.getLogger(__name__)
_QUEUE_WAIT = metrics.QUEUE_WAIT.labels("worker")

#: Run pure chain links in place (see ``_inline_next``); ``CB_INLINE_CHAINS=0`` turns
#: it off (benchmarks compare both; not ``CLOUDBURST_*``, reserved for the config).
INLINE_CHAINS = os.environ.get("CB_INLINE_CHAINS", "1") != "0"


def _bind(sock: zmq.Socket[Any], ip: str, port: int) -> int:
    if port:
        try:
            sock.bind(f"tcp://{ip}:{port}")
            return port
        except zmq.ZMQError:
            log.info("port %d is taken; binding a random port", port)
    return sock.bind_to_random_port(f"tcp://{ip}")


class Worker:
    """One executor worker (see the module docstring)."""

    def __init__(self, cfg: Config, index: int = 0, node_id: str = "") -> None:
        self.cfg = cfg
        self.index = index
        self.node_id = node_id or f"{cfg.ip}/{os.getpid()}"
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.sec = security.server_security(cfg)
        self.pull = security.server_socket(self.ctx, zmq.PULL, self.sec)
        base = cfg.executor.base_port
        port = _bind(self.pull, cfg.ip, base + index if base else 0)
        self.address = f"tcp://{cfg.ip}:{port}"
        self.inbox = security.server_socket(self.ctx, zmq.PULL, self.sec)
        self.inbox_address = f"tcp://{cfg.ip}:{_bind(self.inbox, cfg.ip, 0)}"
        # Cancels (CallCancel) arrive here, read by a thread of their own: a running
        # call is stopped and a queued one dropped, although the main thread is busy.
        self.control = security.server_socket(self.ctx, zmq.PULL, self.sec)
        self.control_address = f"tcp://{cfg.ip}:{_bind(self.control, cfg.ip, 0)}"
        self.cancelled = CancelBook(ttl=max(300.0, 2 * cfg.scheduler.call_timeout_s))
        self._cancel_lock = threading.Lock()
        # Held while the running call is recorded or cleared, and by a cancel that
        # stops it (so it cannot stop the next call by mistake).
        self._call_lock = threading.Lock()
        self.current_info: tuple[pb.DagSchedule, str] | None = None
        self.state = make_state_client(cfg)
        self.lib = UserLibrary(self.state, self.ctx, self.inbox, self.inbox_address)
        cache = os.environ.get(NODE_CACHE_ENV, "") if cfg.cache.enabled else ""
        self.streams = DagStreams(cache or None, cfg, self.state)  # DDT streams (cloudburst.ddt)
        # Large results to functions on this host go through shared memory (handoff.py).
        self.handoff = make_handoff(cfg, cache, time.monotonic)
        self.functions: dict[str, LoadedFunction] = {}
        self._kvs: Any = None  # direct KVS client, for fresh function bodies
        self.book = TriggerBook(ttl=cfg.scheduler.call_timeout_s)
        self.push: dict[str, zmq.Socket[Any]] = {}
        self.busy = 0
        self.completed = 0
        self.current: tuple[str, float] | None = None  # (call id, start) while running
        # Busy time for heartbeats (ExecutorStatus.busy_s): (seconds of finished calls,
        # start of the running one or None), replaced as a whole (read by the heartbeat).
        self.started_at = time.monotonic()
        self.busy_time: tuple[float, float | None] = (0.0, None)
        # what the running call prints and logs (and writes to fds 1/2)
        self.capture = OutputCapture(fds=cfg.executor.capture_fds)
        self.capture_id = ""  # the call it belongs to
        # Calls waiting for referenced results (futures passed as arguments). They are
        # parked, not waited for, so the call producing the result can run here too.
        self.parked: list[tuple[Run, float]] = []
        # Calls of batching functions waiting to run together (executor/batching.py).
        self.batches = BatchBook(cfg.executor.batch_max_size, cfg.executor.batch_max_wait_s)
        self.park_delay = 0.001
        self.next_retry = float("inf")
        self.running = True
        self.leaving = False
        self.retiring = False  # SIGUSR1: the node retires this idle worker (drain first)
        self.limits = CallLimits(self._on_timeout)
        # Pool elasticity (executor.spill): calls waiting behind a long call go back to
        # the node; heartbeats go to the node too.
        node_pool = os.environ.get(NODE_POOL_ENV, "")
        self.beat_to = [node_pool] if node_pool else []
        self.backlog = Backlog(
            self.pull,
            self.ctx,
            node_pool,
            cfg.executor.grow_after_s if cfg.executor.elastic else 0.0,
            lambda: self.current is not None,
            f"worker{index}",
            lambda call_id: call_id in self.cancelled,
        )
        #: every scheduler heard of (heartbeats go to all of them)
        self.schedulers = {f"tcp://{scheduler_host(cfg)}:{cfg.scheduler.port}"}
        self.expiry = ResultExpiry(cfg.executor.result_ttl_s)
        # SINGLE/MULTI: the session of the call running now (executor/session.py) and
        # the node cache's peer address its pins are fetched from (with when it was asked).
        self.session: CallSession | None = None
        self._pin_location: tuple[str, float] = ("", -1e9)
        self._delete_warned = False
        self._hb_thread = threading.Thread(
            target=self._heartbeat_loop, name="heartbeat", daemon=True
        )
        self._control_thread = threading.Thread(
            target=self._control_loop, name="control", daemon=True
        )

    # --- sockets -----------------------------------------------------------

    def _send(self, address: str, data: bytes, answer: bool = False) -> None:
        """``answer``: to a client's reply address (CURVE server toward it)."""
        key = security.push_key(address, answer, self.sec)
        sock = self.push.get(key)
        if sock is None:
            if len(self.push) >= 1024:  # many short-lived clients: forget the oldest
                self.push.pop(next(iter(self.push))).close(linger=0)
            sock = security.push_socket(self.ctx, self.sec, answer)
            sock.setsockopt(zmq.LINGER, 2000)
            sock.setsockopt(zmq.SNDHWM, 10000)
            sock.connect(address)
            self.push[key] = sock
        try:
            sock.send(data, zmq.NOBLOCK)
        except zmq.Again:
            log.warning("dropping a message to %s: its queue is full (is it alive?)", address)

    # --- main loop ---------------------------------------------------------

    def serve(self, until: float | None = None) -> None:
        if not self._hb_thread.is_alive() and not self.leaving:
            self._hb_thread.start()
            self._control_thread.start()
            self.backlog.start()
        log.info(
            "worker %d of node %s: triggers at %s, inbox at %s",
            self.index,
            self.node_id,
            self.address,
            self.inbox_address,
        )
        next_expire = time.monotonic() + 1.0
        while self.running and (until is None or time.monotonic() < until or self.backlog):
            wait_ms = 100
            if self.parked:
                wait_ms = max(0, min(100, int((self.next_retry - time.monotonic()) * 1000)))
            if self.batches.queues:
                due_ms = (self.batches.next_due() - time.monotonic()) * 1000
                wait_ms = max(0, min(wait_ms, int(due_ms) + 1))
            data = self.backlog.recv(wait_ms)
            if data is not None:
                self.handle(data)
                if self.beat_to:
                    self._idle_beat()
            if self.parked and time.monotonic() >= self.next_retry:
                self._retry_parked()
            if self.batches.queues:
                for batch in self.batches.due(time.monotonic()):
                    self._run_batch(batch)
                    self._release_pins()  # (after the results left: they may map them)
            now = time.monotonic()
            if now >= next_expire:
                if self.handoff is not None:
                    self.handoff.expire(now)
                for entry, fn, missing in self.book.expire_calls(now):
                    self._upstream_never_came(entry.schedule, fn, missing)
                next_expire = now + 1.0
                if self.streams.announced:
                    self._expire_announced()
                if now >= self.expiry.next_due():
                    self._delete_expired(now)

    def handle(self, data: bytes) -> None:
        """Handle one message; never raises (a bad message is logged and dropped)."""
        try:
            msg = wire.parse_executor_message(data)
            if msg.WhichOneof("kind") == "cancel":
                self.on_cancel(msg.cancel.call_id)
                return
            if msg.trigger.schedule.id in self.cancelled:
                log.info(
                    "[%s] %s: cancelled by its caller before it ran; dropped",
                    msg.trigger.schedule.id,
                    msg.trigger.target_function,
                )
                return
            action = self.book.add(msg.trigger, time.monotonic())
        except (WireError, InvalidTrigger) as exc:
            log.warning("dropping a malformed message: %s", exc)
            return
        except Exception:
            log.exception("dropping a message that could not be handled")
            return
        try:
            if isinstance(action, Run) and not action.upstream and action.schedule.sent_at:
                # a call's first function: how long it waited in this worker's queue
                waited = time.time() - action.schedule.sent_at
                _QUEUE_WAIT.observe(max(0.0, waited))
            if (
                isinstance(action, Run)
                and action.function in action.schedule.dag.batching_functions
            ):
                batch = self.batches.add(action, time.monotonic())
                if batch is not None:
                    self._run_batch(batch)
            elif isinstance(action, Run):
                t0 = time.perf_counter()
                log.debug("[%s] %s: running", action.schedule.id, action.function)
                CURRENT_CALL[0] = action.schedule.id
                try:
                    self.run(action)
                finally:
                    CURRENT_CALL[0] = ""
                took = time.perf_counter() - t0
                metrics.executed(str(self.index), action.schedule.dag.name, action.function, took)
                log.log(
                    logs.CALL_LEVEL,
                    "[%s] %s: done in %.2f ms",
                    action.schedule.id,
                    action.function,
                    took * 1e3,
                )
            elif isinstance(action, Cancel):
                self._cancel_downstream(action.schedule, action.function, action.error)
            if action is None or isinstance(action, Cancel):
                if msg.trigger.HasField("session"):  # a failed call's read set: unpin
                    self._release_session(msg.trigger.schedule.id, msg.trigger.session.holders)
        except Exception:  # a bug of ours must not kill the worker either
            log.exception(
                "[%s] internal error handling %s",
                msg.trigger.schedule.id,
                msg.trigger.target_function,
            )
        finally:
            self._release_pins()

    def _idle_beat(self) -> None:
        """Tell the node at once when this worker falls idle: its pool hands it a
        waiting call without waiting for the next heartbeat (``executor.pool``)."""
        if self.parked or len(self.batches) or len(self.book):
            return
        with self.backlog.lock:
            if self.backlog.items or self.pull.poll(0):
                return
        st = pb.ExecutorStatus(
            address=self.address,
            node_id=self.node_id,
            index=self.index,
            indexed=True,
            completed=self.completed,
            leaving=self.leaving,
            pid=os.getpid(),
        )
        data = pb.SchedulerRequest(heartbeat=st).SerializeToString()
        for address in self.beat_to:
            self._send(address, data)

    def _release_pins(self) -> None:
        """The call ended: unpin the shared-memory segments it read (cache/shm.py),
        drop the handed-off values it mapped (but a parked call's: executor/handoff.py)."""
        if self.handoff is not None and (self.handoff.opened or self.handoff.lingering):
            self.handoff.forget(shared_names(u for a, _ in self.parked for u in a.upstream))
        release = getattr(self.state, "release_pins", None)
        if release is not None:
            try:
                release()
            except Exception:
                log.exception("releasing shared-memory pins failed")

    def _retry_parked(self) -> None:
        parked, self.parked = self.parked, []
        for action, deadline in parked:
            if action.schedule.id in self.cancelled:
                log.info(
                    "[%s] %s: cancelled while waiting for its arguments; dropped",
                    action.schedule.id,
                    action.function,
                )
                continue
            self.run(action, deadline)
        self._release_pins()
        if self.parked:
            self.park_delay = min(self.park_delay * 2, 0.05)
            self.next_retry = time.monotonic() + self.park_delay
        else:
            self.park_delay = 0.001
            self.next_retry = float("inf")

    def _direct_kvs(self) -> Any:
        if self._kvs is None:
            cfg = self.cfg
            self._kvs = make_kvs_client(
                kvs_host(cfg), cfg.kvs.routing_port, ip=cfg.ip, timeout=cfg.kvs.request_timeout_s
            )
        return self._kvs

    def get_function(self, name: str, version: int = 0) -> LoadedFunction:
        """The loaded function, (re)loaded from the KVS when absent or older than
        ``version`` (re-registered since)."""
        fn = self.functions.get(name)
        if fn is None or fn.version < version:
            key = func_key(name)
            lattice = self.state.get([key]).get(key)
            if lattice is not None and getattr(lattice, "timestamp", 0) < version:
                # The node cache has not seen the re-registration yet: ask the KVS.
                lattice = self._direct_kvs().get([key]).get(key) or lattice
            if lattice is None and version > 0:
                # The scheduler placed it, so it is registered: this replica has not
                # seen the registration yet (replication > 1, gossip on its way).
                lattice = self._direct_kvs().get([key]).get(key)
                if lattice is None:
                    raise KeysNotReady([key])  # parked and retried until the deadline
            record = None if lattice is None else decode_function(_payload(lattice))
            if record is None:  # never registered, or deleted
                self.functions.pop(name, None)
                raise FunctionNotFound(wire._Message(f"function {name!r} is not registered"))
            fn = load_function(name, record.body, self.lib)
            fn.version = getattr(lattice, "timestamp", 0)
            fn.timeout_s, fn.memory_bytes = record.timeout_s, record.memory_bytes
            if fn.version < version:
                log.warning(
                    "function %r: wanted version %d, the store has %d", name, version, fn.version
                )
            self.functions[name] = fn
        return fn

    def _new_session(self, sched: pb.DagSchedule, upstream: list[pb.CallSession]) -> CallSession:
        """The SINGLE/MULTI session of a call on this worker (executor/session.py)."""
        pins = self.state if hasattr(self.state, "pin_get") else None
        location = ""
        if pins is not None:
            location, asked = self._pin_location
            if not location and time.monotonic() - asked > 5.0:
                location = pins.peer_address()
                self._pin_location = (location, time.monotonic())
        session = CallSession(
            sched.id,
            sched.consistency,
            self.state,
            pins,
            location,
            sched.client_id,
            fresh=lambda keys: self._direct_kvs().get(keys),
        )
        session.absorb(upstream)
        return session

    def _release_session(self, call: str, holders: Any) -> None:
        release = getattr(self.state, "pin_release", None)
        if release is not None and holders:
            try:
                release(call, list(holders))
            except Exception:
                log.exception("[%s] releasing the call's pins failed", call)

    def run(self, action: Run, deadline: float | None = None) -> None:
        if not action.schedule.consistency:
            return self._run(action, deadline)
        # SINGLE/MULTI: reads and writes of the call go through its session.
        self.session = self._new_session(action.schedule, action.sessions)
        self.lib._state = self.session
        try:
            return self._run(action, deadline)
        finally:
            self.lib._state = self.state
            self.session = None

    def _run(self, action: Run, deadline: float | None = None) -> None:
        sched, fn = action.schedule, action.function
        self.capture.reset()
        if deadline is None:
            deadline = time.monotonic() + self.cfg.scheduler.call_timeout_s
        try:
            loaded = self.get_function(fn, sched.versions.get(fn, 0))
            args = wire.decode_args(sched.arguments[fn]) if fn in sched.arguments else []
            for upstream in action.upstream:
                args.extend(wire.decode_args(upstream))
            if self.handoff is not None:
                args = self.handoff.open_all(args)
            args = resolve_args(args, self.session or self.state, 0)
        except KeysNotReady as exc:
            if time.monotonic() >= deadline:
                waited = self.cfg.scheduler.call_timeout_s
                msg = (
                    f"the result(s) {exc.keys} referenced by this call did not appear within "
                    f"{waited:g}s (scheduler.call_timeout_s)"
                )
                return self._fail(sched, fn, wire.error_message(pb.ARGUMENT_NOT_READY, msg, fn))
            self.parked.append((action, deadline))
            self.next_retry = min(self.next_retry, time.monotonic() + self.park_delay)
            return None
        except Exception as exc:
            return self._fail(sched, fn, _load_error(exc, fn))
        ecfg = self.cfg.executor
        while True:
            downs = downstreams(sched.dag, fn)
            limits = effective_limits(
                loaded.timeout_s,
                loaded.memory_bytes,
                ecfg.default_function_timeout_s,
                ecfg.default_function_memory_bytes,
            )
            applied = self.limits.apply(limits, (sched, fn, limits)) if limits else NO_LIMITS
            self.capture.start()
            self.capture_id = sched.id
            # Busy from here: the finally below clears it (a failure above must not
            # leave the worker reported busy for ever).
            self.busy = 1
            self._busy_from(time.monotonic())
            with self._call_lock:
                self.current = (sched.id, time.monotonic())
                self.current_info = (sched, fn)
            try:
                with applied:
                    result = invoke(
                        loaded,
                        self.lib,
                        args,
                        self.streams,
                        call_id=sched.id,
                        function=fn,
                        downstream_locations=[sched.locations[d] for d in downs],
                        my_address=self.address,
                        forward=lambda r, fn=fn, downs=downs: self._forward(sched, fn, downs, r),
                        dag=sched.dag,
                    )
            except MemoryError as exc:
                if not applied.memory_limited:
                    log.info("[%s] %s ran out of memory: %s", sched.id, fn, exc)
                    return self._fail(sched, fn, wire.remote_error(exc, fn))
                # Past its limit: report, then make way for a fresh worker (other
                # threads may have hit the limit too).
                log.warning(
                    "[%s] %s exceeded its memory limit of %d bytes; this worker exits",
                    sched.id,
                    fn,
                    limits.memory_bytes,
                )
                err = wire.limit_error(
                    pb.FUNCTION_MEMORY_EXCEEDED,
                    fn,
                    limits.memory_bytes,
                    f"function {fn!r} exceeded its memory limit of {limits.memory_bytes} bytes "
                    f"(call {sched.id}); its worker was replaced",
                )
                self._replace_self(
                    self._failure_messages(sched, fn, err), EXIT_MEMORY, sched.response_address
                )
            except (Exception, SystemExit) as exc:  # user code: never kills the worker
                log.info("[%s] %s raised %s: %s", sched.id, fn, type(exc).__name__, exc)
                return self._fail(sched, fn, wire.remote_error(exc, fn))
            finally:
                self.busy = 0
                self._busy_until(time.monotonic())
                with self._call_lock:
                    self.current = None
                    self.current_info = None
                self.completed += 1
            if self.streams.announced:
                self._expire_announced()
            if result is STREAMED:  # already forwarded as a stream while it ran
                self._call_output(sched, fn)
                return None
            if fn in sched.dag.multiexec and not self._multiexec_continues(sched, fn, result):
                return None
            nxt = _inline_next(sched, fn, downs, self.cfg.executor.gpu) if INLINE_CHAINS else None
            if nxt is None:
                break
            # A pure chain link: run the next function right here with the result as
            # is (no serialization, no message; a chain has no parallelism to lose).
            try:
                loaded = self.get_function(nxt, sched.versions.get(nxt, 0))
                own = wire.decode_args(sched.arguments[nxt]) if nxt in sched.arguments else []
            except Exception as exc:
                return self._fail(sched, nxt, _load_error(exc, nxt))
            args = own + list(wire.result_values(result))
            fn = nxt
        try:
            if downs:
                self._call_output(sched, fn)  # (logged; only the sink's reaches the client)
                self._forward(sched, fn, downs, result, share=True)
            else:
                self._finish(sched, fn, result)
        except SerializationError as exc:
            msg = (
                f"the return value of function {fn!r} (a {type(result).__name__}) cannot be "
                f"serialized to send it back: {exc}"
            )
            self._fail(sched, fn, wire.error_message(pb.INVALID_ARGUMENT, msg, fn))

    def _run_batch(self, runs: list[Run]) -> None:
        """Run a batching function once for several calls (executor/batching.py): one
        list per argument in, one result per call out, each continuing its own call."""
        fn = runs[0].function
        ids = ",".join(r.schedule.id for r in runs)
        t0 = time.perf_counter()
        try:
            loaded = self.get_function(fn, max(r.schedule.versions.get(fn, 0) for r in runs))
        except Exception as exc:
            for r in runs:
                self._fail(r.schedule, fn, _load_error(exc, fn))
            return
        calls: list[tuple[pb.DagSchedule, list[Any]]] = []
        for r in runs:
            sched = r.schedule
            try:
                args = wire.decode_args(sched.arguments[fn]) if fn in sched.arguments else []
                for upstream in r.upstream:
                    args.extend(wire.decode_args(upstream))
                if self.handoff is not None:
                    args = self.handoff.open_all(args)
                # (a batch does not park: it waits here for referenced results)
                args = resolve_args(args, self.state, self.cfg.scheduler.call_timeout_s)
            except Exception as exc:
                self._fail(sched, fn, _load_error(exc, fn))
                continue
            calls.append((sched, args))
        if not calls:
            return
        ecfg = self.cfg.executor
        limits = effective_limits(
            loaded.timeout_s,
            loaded.memory_bytes,
            ecfg.default_function_timeout_s,
            ecfg.default_function_memory_bytes,
        )
        first = calls[0][0]
        applied = self.limits.apply(limits, (first, fn, limits)) if limits else NO_LIMITS
        self.busy = 1
        self.current = (first.id, time.monotonic())
        self._busy_from(self.current[1])
        self.capture.reset()
        self.capture.start()
        self.capture_id = first.id
        log.debug("[%s] %s: running a batch of %d", ids, fn, len(calls))
        columns = transpose([a for _, a in calls])  # (one arity per batch: see BatchBook)
        try:
            with applied:
                result = invoke(loaded, self.lib, columns)
        except (Exception, SystemExit) as exc:  # user code: fails the batch's calls
            err = wire.remote_error(exc, fn)
            if isinstance(exc, MemoryError) and applied.memory_limited:
                messages = [m for s, _ in calls for m in self._failure_messages(s, fn, err)]
                answers = frozenset(s.response_address for s, _ in calls)
                self._replace_self(messages, EXIT_MEMORY, answers)
            for sched, _ in calls:
                self._fail(sched, fn, err)
            return
        finally:
            self.busy = 0
            self._busy_until(time.monotonic())
            self.current = None
            self.completed += len(calls)
        try:
            results = split_results(fn, result, len(calls))
        except ValueError as exc:
            for sched, _ in calls:
                self._fail(sched, fn, wire.error_message(pb.INVALID_ARGUMENT, str(exc), fn))
            return
        metrics.executed(str(self.index), first.dag.name, fn, time.perf_counter() - t0)
        self._call_output(first, fn)  # stop capturing (the first call's result carries it)
        upstream_sessions = {r.schedule.id: r.sessions for r in runs}
        for (sched, _), res in zip(calls, results, strict=True):
            try:
                # SINGLE/MULTI: a batch's own reads are not in a session (several calls
                # in one invocation); each call's read set still travels on.
                if sched.consistency:
                    self.session = self._new_session(sched, upstream_sessions[sched.id])
                downs = downstreams(sched.dag, fn)
                if downs:
                    self._forward(sched, fn, downs, res, share=True)
                else:
                    self._finish(sched, fn, res)
            except SerializationError as exc:
                msg = f"a result of batching function {fn!r} cannot be serialized: {exc}"
                self._fail(sched, fn, wire.error_message(pb.INVALID_ARGUMENT, msg, fn))
            finally:
                self.session = None

    def _multiexec_continues(self, sched: pb.DagSchedule, fn: str, result: Any) -> bool:
        """A MULTIEXEC run ended: whether its result continues the DAG (the first valid
        one does); fails the call when every upstream's result was invalid."""
        invalids = [serializer.from_value(v) for v in sched.dag.multiexec[fn].values]
        valid = not is_invalid(result, invalids)
        outcome = self.book.multiexec_result(sched, fn, valid, time.monotonic())
        if outcome == "continue":
            return True
        self._call_output(sched, fn)
        log.debug("[%s] %s: result %s dropped", sched.id, fn, "valid" if valid else "invalid")
        if outcome == "exhausted":
            msg = (
                f"every result of MULTIEXEC function {fn!r} was one of its invalid results "
                f"{invalids!r}: nothing continued call {sched.id}"
            )
            self._fail(sched, fn, wire.error_message(pb.EXECUTION_ERROR, msg, fn))
        return False

    def _call_output(self, sched: pb.DagSchedule, fn: str) -> str:
        """Stop capturing the call's output (logged once, with the call id) and
        return it (the same text until the next call)."""
        if self.capture_id != sched.id:
            return ""
        if self.capture.active:
            text = self.capture.stop()
            if text:
                log.info("[%s] %s output:\n%s", sched.id, fn, text.rstrip("\n"))
            return text
        return self.capture.text

    def _forward(
        self, sched: pb.DagSchedule, fn: str, downs: list[str], result: Any, share: bool = False
    ) -> None:
        # Reuse the received schedule: drop this function's arguments (a large source
        # argument is not copied along the DAG) and send one trigger per downstream.
        msg = pb.ExecutorMessage()
        trig = msg.trigger
        trig.schedule.CopyFrom(sched)
        if fn in trig.schedule.arguments:
            del trig.schedule.arguments[fn]
        trig.source = fn
        values = wire.result_values(result)
        ho = self.handoff if share else None
        local = [d for d in downs if ho is not None and ho.is_local(sched.locations[d])]
        handles = [ho.share(v, len(local)) for v in values] if ho is not None and local else []
        if not any(handles):
            wire.encode_args(values, trig.arguments)
        if self.session is not None:
            self.session.to_pb(trig.session)
        for down in downs:
            if any(handles):  # large values to this host's workers: shared memory
                encode_for(
                    values, handles, local.index(down) if down in local else -1, trig.arguments
                )
            trig.target_function = down
            self._send(sched.locations[down], msg.SerializeToString())

    def _finish(self, sched: pb.DagSchedule, fn: str, result: Any) -> None:
        reply = pb.ClientMessage(response_id=sched.id)
        res = reply.result
        res.response_id = sched.id
        res.executor = self.address
        output = self._call_output(sched, fn)
        if output:
            res.output = output
        kind, body = wire.dumps(result)
        session = self.session
        if session is not None:
            session.release()  # the call is over (the output write needs no pins)
        if sched.output_key:
            try:
                if session is not None and sched.consistency == pb.MULTI:
                    lattice = session.output_lattice(
                        sched.output_key, result, sched.client_clock.entries
                    )
                    res.clock.entries.update(lattice.vector_clock.reveal())
                else:
                    lattice = to_lattice(result)
                # cache.client: straight to the KVS; the cache is told after the reply
                put = getattr(self.state, "put_direct", self.state.put)
                ok = put(sched.output_key, lattice)
            except Exception as exc:
                ok = False
                log.error(
                    "[%s] storing the result under %r failed: %s", sched.id, sched.output_key, exc
                )
            if ok is False:
                return self._fail(
                    sched,
                    fn,
                    wire.error_message(
                        pb.INTERNAL_ERROR,
                        f"could not store the result under {sched.output_key!r}",
                        fn,
                    ),
                )
            if sched.expiring_output:
                self.expiry.add(sched.output_key, time.monotonic())
        if sched.HasField("continuation"):
            return self._continue(sched, result)
        res.success = True
        res.value.type = kind  # type: ignore[assignment]
        res.value.body = body
        if sched.response_address:
            self._send(sched.response_address, reply.SerializeToString(), answer=True)

    def _continue(self, sched: pb.DagSchedule, result: Any) -> None:
        """Start the call's continuation (call_dag(..., continuation=...)) through the
        scheduler with this result; it answers the caller under the same id."""
        req = pb.SchedulerRequest(request_id=sched.id, response_address=sched.response_address)
        call = req.dag_call
        call.CopyFrom(sched.continuation)
        call.continued = True
        wire.encode_args(wire.result_values(result), call.continued_with)
        log.debug("[%s] continues with DAG %r", sched.id, call.name)
        self._send(
            f"tcp://{scheduler_host(self.cfg)}:{self.cfg.scheduler.port}", req.SerializeToString()
        )

    def _upstream_never_came(self, sched: pb.DagSchedule, fn: str, missing: list[str]) -> None:
        """A fan-in waited ``scheduler.call_timeout_s`` for upstream results: tell the
        caller (it may have retried the call already: then this is ignored)."""
        log.warning("[%s] %s: dropped, the result(s) of %s never came", sched.id, fn, missing)
        msg = (
            f"function {fn!r} of call {sched.id} waited {self.book.ttl:g}s for the result(s) "
            f"of {missing}, which never came (did their executor die?)"
        )
        self._fail(sched, fn, wire.error_message(pb.TIMED_OUT, msg, fn))

    def _expire_announced(self) -> None:
        """DDT directory keys this worker announced: deleted like call results (the
        call is over long before; a reader looks a writer up while the call runs)."""
        now = time.monotonic()
        announced = self.streams.announced
        while announced:
            self.expiry.add(announced.pop(), now)

    def _delete_expired(self, now: float, timeout: float | None = None) -> None:
        """Delete exec_func results older than ``executor.result_ttl_s`` from the KVS."""
        keys = self.expiry.due(now)
        if not keys:
            return
        try:
            kvs = self._direct_kvs()
            delete = getattr(kvs, "delete", None)
            if delete is None:
                if not self._delete_warned:
                    self._delete_warned = True
                    log.warning("this KVS client cannot delete: call results are kept")
                return
            if timeout is None:
                delete(keys)
            else:
                delete(keys, timeout=timeout)
        except Exception as exc:  # the KVS is down: they expire again on the next round
            log.warning("deleting %d expired call results failed: %s", len(keys), exc)
            for key in keys:
                self.expiry.add(key, now)
            return
        log.debug("deleted %d expired call results", len(keys))

    def drop_results(self, budget_s: float = 1.0) -> None:
        """On a clean exit: delete the results (and directory keys) still waiting for
        their expiry now, as nobody would later; within ``budget_s`` seconds."""
        self._expire_announced()
        deadline = time.monotonic() + budget_s
        while len(self.expiry) and (left := deadline - time.monotonic()) > 0:
            self._delete_expired(float("inf"), timeout=left)
        if len(self.expiry):
            log.warning(
                "%d call results left in the KVS (no time to delete them)", len(self.expiry)
            )

    def _failure_messages(
        self, sched: pb.DagSchedule, fn: str, err: pb.RemoteError
    ) -> list[tuple[str, bytes]]:
        """The messages that report a failed call: the error to the caller, and a
        cancelling trigger to each downstream function."""
        metrics.CALL_ERRORS.labels("executor", "function", fn).inc()
        out = []
        if sched.response_address:
            reply = pb.ClientMessage(response_id=sched.id)
            reply.result.response_id = sched.id
            reply.result.success = False
            reply.result.executor = self.address
            reply.result.error.CopyFrom(err)
            output = self._call_output(sched, fn)
            if output:
                reply.result.output = output
            out.append((sched.response_address, reply.SerializeToString()))
        return out + self._cancel_messages(sched, fn, err)

    def _fail(self, sched: pb.DagSchedule, fn: str, err: pb.RemoteError) -> None:
        if self.session is not None and self.session.call == sched.id:
            self.session.release()
        if fn in sched.dag.multiexec:  # the call failed: its later triggers are dropped
            self.book.settle(sched.id, fn, time.monotonic())
        for address, data in self._failure_messages(sched, fn, err):
            self._send(address, data, answer=address == sched.response_address)

    def _cancel_downstream(self, sched: pb.DagSchedule, fn: str, err: pb.RemoteError) -> None:
        for address, data in self._cancel_messages(sched, fn, err):
            self._send(address, data)

    def _cancel_messages(
        self, sched: pb.DagSchedule, fn: str, err: pb.RemoteError
    ) -> list[tuple[str, bytes]]:
        downs = downstreams(sched.dag, fn)
        if not downs:
            return []
        msg = pb.ExecutorMessage()
        msg.trigger.schedule.CopyFrom(forward_schedule(sched, sched.dag.functions))
        msg.trigger.source = fn
        msg.trigger.error.CopyFrom(err)
        out = []
        for down in downs:
            msg.trigger.target_function = down
            out.append((sched.locations[down], msg.SerializeToString()))
        return out

    def _on_timeout(self, info: tuple[pb.DagSchedule, str, Limits]) -> None:
        """The watchdog thread: a call ran past its time limit. Report it and exit (the
        node starts a fresh worker; a call cannot be stopped safely from outside)."""
        sched, fn, limits = info
        log.warning(
            "[%s] %s ran past its time limit of %gs; this worker exits",
            sched.id,
            fn,
            limits.timeout_s,
        )
        err = wire.limit_error(
            pb.FUNCTION_TIMEOUT,
            fn,
            limits.timeout_s,
            f"function {fn!r} ran past its time limit of {limits.timeout_s:g}s "
            f"(call {sched.id}) and was stopped; its worker was replaced",
        )
        self._replace_self(
            self._failure_messages(sched, fn, err), EXIT_TIMEOUT, sched.response_address
        )

    def on_cancel(self, call_id: str) -> None:
        """The caller cancelled ``call_id`` (any thread): remember it, so a trigger
        of it still queued or parked here is dropped, and stop it if it runs now."""
        with self._cancel_lock:
            if not call_id or not self.cancelled.add(call_id, time.monotonic()):
                return
        with self._call_lock:
            info = self.current_info
            if info is None or info[0].id != call_id:
                log.info("[%s] cancelled by its caller (not running here)", call_id)
                return
            sched, fn = info
            # Stopped like a call past its time limit: report and make way for a
            # fresh worker (Python cannot interrupt the running call safely). The
            # call lock stays held: the main thread cannot move on to another call.
            log.warning(
                "[%s] %s: cancelled by its caller while running; this worker exits", sched.id, fn
            )
            err = wire.error_message(
                pb.CALL_CANCELLED,
                f"call {sched.id} ({fn!r}) was cancelled by its caller while running; "
                "its worker was replaced",
                fn,
            )
            self._replace_self(
                self._failure_messages(sched, fn, err), EXIT_CANCELLED, sched.response_address
            )

    def _control_loop(self) -> None:
        """The control thread: reads ``CallCancel`` messages."""
        sock = self.control
        while self.running:
            try:
                if not sock.poll(200):
                    continue
                data = sock.recv(zmq.NOBLOCK)
            except zmq.ZMQError:
                return  # closed at exit
            try:
                msg = wire.parse_executor_message(data)
            except WireError as exc:
                log.warning("dropping a malformed control message: %s", exc)
                continue
            if msg.WhichOneof("kind") == "cancel":
                try:
                    self.on_cancel(msg.cancel.call_id)
                except Exception:
                    log.exception("handling a cancel failed")

    def _replace_self(
        self, messages: list[tuple[str, bytes]], status: int, answers: str | frozenset[str] = ""
    ) -> None:
        """Report, tell the schedulers this worker leaves (no call is placed here
        meanwhile, and callers waiting on it learn it is gone), and exit."""
        self.leaving = True
        beat = pb.SchedulerRequest(heartbeat=self.status()).SerializeToString()
        try:
            schedulers = sorted(self.schedulers)
        except RuntimeError:  # the heartbeat thread added one just now
            schedulers = sorted(self.schedulers)
        if isinstance(answers, str):
            answers = frozenset((answers,))
        _exit_after(messages + [(addr, beat) for addr in schedulers], status, answers)

    # --- heartbeats --------------------------------------------------------

    def _busy_from(self, now: float) -> None:
        self.busy_time = (self.busy_time[0], now)

    def _busy_until(self, now: float) -> None:
        total, since = self.busy_time
        self.busy_time = (total + (now - since if since is not None else 0.0), None)

    def busy_seconds(self, now: float) -> float:
        """Seconds spent running calls so far (ExecutorStatus.busy_s)."""
        total, since = self.busy_time  # one read: consistent with the main thread
        return total + (max(0.0, now - since) if since is not None else 0.0)

    def status(self) -> pb.ExecutorStatus:
        st = pb.ExecutorStatus(
            address=self.address,
            node_id=self.node_id,
            functions=list(self.functions),
            busy=self.busy,
            queue_length=len(self.book) + len(self.parked) + len(self.batches) + len(self.backlog),
            pid=os.getpid(),
            inbox_address=self.inbox_address,
            completed=self.completed,
            leaving=self.leaving,
            index=self.index,
            indexed=True,
            control_address=self.control_address,
            gpu=self.cfg.executor.gpu,
        )
        now = time.monotonic()
        st.busy_s = self.busy_seconds(now)
        st.uptime_s = now - self.started_at
        current = self.current
        if current is not None:
            st.current_call = current[0]
            st.current_call_s = time.monotonic() - current[1]
        summary = getattr(self.state, "cached_key_sizes", None)
        if callable(summary):
            try:
                sizes = summary()
            except Exception:
                log.exception("cache summary failed")
            else:
                if sizes is not None:
                    st.has_cache_summary = True
                    st.cached_key_sizes.update(sizes)
        return st

    def _heartbeat_loop(self) -> None:
        cfg = self.cfg
        period = cfg.executor.heartbeat_period_s
        schedulers = self.schedulers
        socks: dict[str, zmq.Socket[Any]] = {}
        kvs: Any = None
        next_discovery = 0.0
        while True:
            now = time.monotonic()
            if now >= next_discovery:
                next_discovery = now + 2.0
                try:
                    if kvs is None:
                        kvs = make_kvs_client(
                            kvs_host(cfg), cfg.kvs.routing_port, ip=cfg.ip, timeout=1.0
                        )
                    schedulers.update(scheduler_addresses(kvs))
                except Exception as exc:
                    log.debug("scheduler discovery failed: %s", exc)
            try:
                req = pb.SchedulerRequest(request_id="", heartbeat=self.status())
                data = req.SerializeToString()
                for addr in [*schedulers, *self.beat_to]:
                    sock = socks.get(addr)
                    if sock is None:
                        sock = socks[addr] = security.client_socket(self.ctx, zmq.PUSH, self.sec)
                        sock.setsockopt(zmq.LINGER, 0)
                        sock.setsockopt(zmq.SNDHWM, 4)
                        sock.connect(addr)
                    try:
                        sock.send(data, zmq.NOBLOCK)
                    except zmq.Again:
                        pass
            except MemoryError:  # a call under a memory limit used it all: beat again later
                log.warning("heartbeat skipped: out of memory")
            if self.leaving:
                time.sleep(0.05)  # let the last heartbeat go out
                return
            time.sleep(period)

    def stop(self, *_: Any) -> None:
        self.running = False
        self.leaving = True

    def retire(self, *_: Any) -> None:
        """Leave (no new calls are placed here) and run what still arrives for
        ``executor.retire_drain_s`` before exiting (see ``main``)."""
        self.retiring = True
        self.backlog.close()  # no more hand-backs: whatever waits here runs here
        self.stop()


def _payload(lattice: Any) -> bytes:
    """The ``to_bytes`` payload of ``funcs/<name>`` (bytes; b"" if unreadable)."""
    value = serializer.from_bytes(lattice.reveal())
    return value if isinstance(value, bytes) else b""


def _exit_after(
    messages: list[tuple[str, bytes]], status: int, answers: frozenset[str] = frozenset()
) -> None:
    """Send ``messages`` on sockets of their own (callable from any thread: the
    worker's sockets belong to its main thread), wait until they are out (2 s at most
    in all: a peer that is gone does not hold the exit up) and end the process without
    cleanup; the node restarts the worker."""
    try:
        ctx: zmq.Context[Any] = zmq.Context()
        socks = []
        for address, data in messages:  # connect them all first: they connect in parallel
            # Answers to callers: CURVE server toward their listeners (security.py).
            sock = security.push_socket(ctx, security.current(), address in answers)
            sock.setsockopt(zmq.LINGER, 1000)
            sock.connect(address)
            socks.append((sock, address, data))
        deadline = time.monotonic() + 2.0
        for sock, address, data in socks:
            sock.setsockopt(zmq.SNDTIMEO, max(1, int((deadline - time.monotonic()) * 1000)))
            try:
                sock.send(data)
            except zmq.Again:
                log.warning("could not report to %s before exiting", address)
            sock.close()
        security.term(ctx)  # returns once every message is sent (or lingered)
    except Exception:
        log.exception("reporting before exit failed")
    logging.shutdown()
    os._exit(status)


def _load_error(exc: BaseException, fn: str) -> pb.RemoteError:
    """The error to report when a function could not be loaded or its arguments could
    not be prepared."""
    if isinstance(exc, FunctionNotFound):
        return wire.error_message(pb.FUNC_NOT_FOUND, str(exc), fn)
    if isinstance(exc, InvalidArgument | SerializationError):
        return wire.error_message(pb.INVALID_ARGUMENT, str(exc), fn)
    if isinstance(exc, CloudburstTimeoutError):
        return wire.error_message(pb.TIMED_OUT, str(exc), fn)
    return wire.remote_error(exc, fn)  # FunctionLoadError, a class constructor raised


def _inline_next(sched: pb.DagSchedule, fn: str, downs: list[str], gpu: bool = False) -> str | None:
    """The downstream function to run in place, if ``fn -> next`` is a pure chain link:
    ``next`` is ``fn``'s only downstream, ``fn`` its only upstream, and ``next`` has
    no reference arguments (whose locality the scheduler may have placed it for)."""
    if len(downs) != 1:
        return None
    nxt = downs[0]
    if upstreams(sched.dag, nxt) != [fn]:
        return None
    own = sched.arguments.get(nxt)
    if own is not None and any(a.WhichOneof("kind") == "reference" for a in own.values):
        return None
    if not _may_run_here(sched.dag, fn, nxt, gpu):
        return None
    return nxt


def _may_run_here(dag: pb.Dag, fn: str, nxt: str, gpu: bool) -> bool:
    """Whether ``nxt`` may run in place after ``fn`` despite the DAG options: not a
    GPU function on a worker without one, not MULTIEXEC or batching (they run on
    their own executor), not into a colocated group ``fn`` is not part of."""
    if (nxt in dag.gpu_functions and not gpu) or nxt in dag.multiexec:
        return False
    if nxt in dag.batching_functions:
        return False
    return all(fn in g.functions for g in dag.colocated if nxt in g.functions)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m executor.worker")
    parser.add_argument("--config")
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--node-id", default="")
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    setup_logging(
        cfg,
        "worker",
        f"worker{args.index}",
        f"%(asctime)s executor[{args.index}] %(levelname)s %(name)s: %(message)s",
    )
    worker = Worker(cfg, args.index, args.node_id)
    metrics.QUEUE_LENGTH.labels("worker", "parked").set_function(lambda: len(worker.parked))
    metrics.serve(cfg, "worker", f"worker{args.index}", args.index)
    # Everything allocated so far lives as long as the process: keep it out of the
    # cyclic GC's generations so collections stay short (fewer latency spikes).
    gc.collect()
    gc.freeze()
    signal.signal(signal.SIGTERM, worker.stop)
    signal.signal(signal.SIGINT, worker.stop)
    signal.signal(signal.SIGUSR1, worker.retire)
    worker.serve()
    # Tell the schedulers right away instead of letting them wait for a timeout.
    try:
        st = worker.status()
        st.leaving = True
        for addr in {f"tcp://{scheduler_host(cfg)}:{cfg.scheduler.port}", *worker.beat_to}:
            worker._send(addr, pb.SchedulerRequest(heartbeat=st).SerializeToString())
    except Exception:
        pass
    if worker.retiring:  # retired by the node: run what was placed here before it knew
        worker.running = True
        worker.serve(until=time.monotonic() + cfg.executor.retire_drain_s)
    worker.backlog.close()
    try:
        worker.drop_results()
    except Exception:
        log.exception("deleting the pending call results failed")
    if worker.handoff is not None:
        worker.handoff.close()  # values handed off and not consumed
    time.sleep(0.05)
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
