"""The Cloudburst client: ``CloudburstConnection``.

>>> from cloudburst.client.client import CloudburstConnection       # doctest: +SKIP
>>> cloud = CloudburstConnection('127.0.0.1', '127.0.0.1', local=True)
>>> square = cloud.register(lambda _, x: x * x, 'square')
>>> square(2).get()
4
>>> cloud.register_dag('dag', ['square'], [])
(True, 0)
>>> cloud.call_dag('dag', {'square': [2]}).get()
4

The client binds one PULL socket on a random port of ``ip``; the scheduler's answers
and every result (executors reply directly) arrive there. See ``docs/client.md``.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import math
import os
import sys
import threading
import time
import types
import uuid
import weakref
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

import cloudpickle
import zmq

from anna.errors import AnnaError, AnnaTimeoutError
from cloudburst.client.dags import dag_message
from cloudburst.client.future import _UNSET, CloudburstFuture
from cloudburst.shared import security, serializer, version, wire
from cloudburst.shared.config import ExecutorConfig, SchedulerConfig
from cloudburst.shared.errors import (
    CloudburstException,
    CloudburstTimeoutError,
    ConnectionFailed,
    InvalidArgument,
    KeyNotFound,
    WireError,
)
from cloudburst.shared.kvs import make_kvs_client, split_address
from cloudburst.shared.processes import port_open
from cloudburst.shared.proto import cloudburst_pb2 as pb
from cloudburst.shared.reference import CloudburstReference
from cloudburst.shared.values import from_lattice, to_lattice
from lattices import LWWPairLattice, make_timestamp
from scheduler.logic import sources

log = logging.getLogger(__name__)

NORMAL = pb.NORMAL
SINGLE = pb.SINGLE  # docs/consistency.md
MULTI = pb.MULTI
#: How long a wait for an answer polls without sleeping before it blocks (seconds).
SPIN_S = 200e-6
#: The longest a wait blocks on the socket in one go: a waiting thread notices within
#: this time that another thread closed the connection.
WAIT_SLICE_S = 0.1
#: Calls ``CloudburstFunction.map`` sends before it waits for their acknowledgements.
MAP_WINDOW = 128
#: ``CloudburstFunction.map`` keeps at most this many of its calls unfinished; the
#: others start as earlier ones finish (``map(..., max_in_flight=)``).
MAP_MAX_IN_FLIGHT = 1000
#: How long close() waits for a KVS request running in another thread.
CLOSE_WAIT_S = 0.5


class DagRegistration(tuple[bool, int]):
    """``(success, error)`` as the original client returned it, plus ``message``.
    Truthy iff the registration succeeded."""

    message: str

    def __new__(cls, success: bool, error: int, message: str = "") -> DagRegistration:
        obj = super().__new__(cls, (success, error))
        obj.message = message
        return obj

    @property
    def success(self) -> bool:
        return self[0]

    @property
    def error(self) -> int:
        return self[1]

    def __bool__(self) -> bool:
        return self[0]


class CloudburstFunction:
    """A registered function; calling it runs it remotely and returns a future."""

    def __init__(
        self, name: str, conn: CloudburstConnection, signature: inspect.Signature | None = None
    ) -> None:
        self.name = name
        self._conn = conn
        # The registered function's signature, user library first (from register()):
        # a call with the wrong arguments fails here, saying so.
        self._signature = signature

    def _check_args(self, args: Sequence[Any]) -> None:
        """Too many positional arguments for a function without ``*args``: the
        function most likely forgot its user-library parameter; say so here instead
        of a remote arity error counting a hidden argument. (Other mismatches are
        the function's own remote ``TypeError``.)"""
        sig = self._signature
        if sig is None:
            return
        params = list(sig.parameters.values())
        if any(p.kind is p.VAR_POSITIONAL for p in params):
            return
        n = sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)
        if len(args) + 1 > n:
            first = params[0].name if params else None
            raise InvalidArgument(
                f"{self.name!r} is declared {sig} but called with {len(args)} argument(s) "
                f"plus the user library, which is always passed first"
                + (f" (to its first parameter, {first!r})" if first else "")
                + ": did it forget the user-library parameter? write "
                "def f(cloudburst, ...)"
            )

    def __call__(self, *args: Any) -> CloudburstFuture:
        self._check_args(args)
        return self._conn.exec_func(self.name, list(args))

    def map(
        self, *iterables: Iterable[Any], max_in_flight: int | None = MAP_MAX_IN_FLIGHT
    ) -> list[CloudburstFuture]:
        """One call per element, like the builtin ``map``: ``f.map(xs)`` calls
        ``f(x)`` for each ``x``; ``f.map(xs, ys)`` calls ``f(x, y)`` pairwise. Returns
        the futures in order; gather them with :func:`cloudburst.client.wait`,
        ``as_completed`` or ``progress``.

        At most ``max_in_flight`` calls (default 1,000; ``None`` = no bound) are
        started before it returns; each of the others starts when an earlier one
        finishes, while this connection receives (any ``get``/``wait``/
        ``as_completed``/``progress``/``done`` on it), so a long iterable never floods
        the cluster. A future not started yet is ``pending``, with an empty ``id``."""
        if not iterables:
            raise TypeError("map() needs at least one iterable")
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, not {max_in_flight}")
        all_args = [tuple(args) for args in zip(*iterables, strict=False)]
        for args in all_args:
            self._check_args(args)
        limit = len(all_args) if max_in_flight is None else max_in_flight
        conn = self._conn
        futs: list[CloudburstFuture] = []
        batch: list[CloudburstFuture] = []
        # Calls are sent in windows of MAP_WINDOW, each window's acknowledgements
        # awaited together (one scheduler round trip per window, not per call).
        for args in all_args[:limit]:
            batch.append(conn._exec(self.name, list(args), defer_ack=True))
            if len(batch) >= MAP_WINDOW:
                conn._await_acks(batch)
                futs += batch
                batch = []
        conn._await_acks(batch)
        futs += batch
        rest = all_args[limit:]
        if not rest:
            return futs
        feeder = _MapFeeder(self.name, conn, limit)
        with conn._lock:
            for fut in futs:
                feeder.track(fut)
        later = []
        for args in rest:
            fut = CloudburstFuture(conn, "")
            fut.function = f"fn:{self.name}"
            fut._deferred = feeder
            later.append(fut)
            feeder.todo.append((fut, args))
        feeder.fill()
        return futs + later

    def __repr__(self) -> str:
        return f"CloudburstFunction({self.name!r})"


class _MapFeeder:
    """The calls of one ``map`` not started yet: each starts when an earlier call of
    the map finishes (``CloudburstConnection._resolved`` counts them down, and
    ``_run_callbacks``, outside the locks, calls :meth:`fill`)."""

    def __init__(self, name: str, conn: CloudburstConnection, limit: int) -> None:
        self.name = name
        self.conn_ref = weakref.ref(conn)
        self.limit = limit
        self.in_flight = 0
        self.most_in_flight = 0  # the highest in_flight seen (tests check the bound)
        self.todo: deque[tuple[CloudburstFuture, tuple[Any, ...]]] = deque()
        self._filling = False

    def track(self, fut: CloudburstFuture) -> None:
        """Count ``fut`` in flight until it resolves (under the connection's lock)."""
        if fut._finished() and not fut._awaiting_ack:
            return
        fut._feeder = self
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)

    def fill(self) -> None:
        """Start calls until ``limit`` are in flight (never re-entered)."""
        conn = self.conn_ref()
        if conn is None or self._filling:
            return
        self._filling = True
        try:
            while self.todo and self.in_flight < self.limit and not conn._closed:
                fut, args = self.todo.popleft()
                if fut._finished():  # cancelled before it started
                    continue
                try:
                    started = conn._exec(self.name, list(args), defer_ack=True)
                except CloudburstException as exc:
                    fut._error = exc
                    fut._deferred = None
                    fut._fire_callbacks()
                    continue
                conn._adopt(fut, started, self)
        finally:
            self._filling = False


def _in_jupyter() -> bool:
    """Whether this runs in an IPython kernel (Jupyter), not a terminal."""
    import sys

    if "ipykernel" not in sys.modules:
        return False
    try:
        from IPython import get_ipython  # type: ignore[attr-defined]
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _local_ip_for(host: str) -> str:
    import socket

    if host.startswith("127.") or host == "localhost":
        return "127.0.0.1"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, 9))
            return str(s.getsockname()[0])
    except OSError:
        return "127.0.0.1"


def _expire_results(ref: weakref.ref[CloudburstConnection]) -> None:
    conn = ref()
    if conn is not None and not conn._closed:
        conn._delete_stored(time.monotonic())


class CloudburstConnection:
    """A connection to a Cloudburst cluster.

    ``func_addr`` is the scheduler: ``'host'``, ``'host:port'`` or
    ``'tcp://host:port'`` (the port defaults to ``port=`` or 5000, overridable with
    ``CLOUDBURST_SCHEDULER__PORT``). ``ip`` is this machine's address the cluster
    replies to (default: the one that routes to ``func_addr``). ``tid`` and ``local``
    are accepted for compatibility with the original client. ``timeout`` bounds every
    control request (register, list, ...); connecting to a scheduler that is not there
    raises :class:`ConnectionFailed` within ``connect_timeout`` seconds.
    ``kvs_address`` (``'host:port'``) replaces the KVS routing address the scheduler
    reports, for a client outside the cluster's DNS (docs/deploy.md).

    ``direct=True`` lets the client reuse a DAG's (or function's) placement for up to
    ``placement_lease`` seconds and trigger the executors itself (one hop less); a
    call made while another of the same DAG is still outstanding goes through the
    scheduler, which spreads the load.
    """

    def __init__(
        self,
        func_addr: str,
        ip: str | None = None,
        tid: int = 0,
        local: bool = False,
        timeout: float = 10.0,
        *,
        port: int | None = None,
        connect_timeout: float = 5.0,
        direct: bool = True,
        placement_lease: float = 1.0,
        liveness_interval: float = 1.0,
        show_output: bool | None = None,
        keys_dir: str | None = None,
        kvs_address: str | None = None,
    ) -> None:
        # CURVE keys (docs/security.md): keys_dir or $CLOUDBURST_SECURITY__KEYS_DIR.
        self._sec = security.client_security(keys_dir)
        default_port = port or _default_scheduler_port()
        host, sched_port = split_address(func_addr, default_port)
        if port:
            sched_port = port
        self.tid = tid
        self.local = local
        self.timeout = timeout
        self.direct = direct
        self.placement_lease = placement_lease
        self.liveness_interval = liveness_interval
        #: Print what a call printed (``future.logs()``) when its ``get()`` returns:
        #: by default only in a Jupyter (IPython kernel) session.
        self.show_output = _in_jupyter() if show_output is None else show_output
        self.scheduler_address = f"tcp://{host}:{sched_port}"
        self.ip = ip or _local_ip_for(host)
        self._lock = threading.RLock()
        self._kvs_lock = threading.Lock()
        # Sends and bookkeeping take _lock (never held while waiting); receiving takes
        # _recv_lock; waiters are woken through _arrived (see _wait_until).
        self._recv_lock = threading.Lock()
        self._arrived = threading.Condition(threading.Lock())
        self._pid = os.getpid()
        self._closed = False
        self._closing = threading.Event()  # set by close() and by the finalizer
        # A private context, its sockets and the KVS client are released by a
        # finalizer that holds them but not the connection: it runs when the
        # connection is closed, dropped (even inside a reference cycle) or still alive
        # at interpreter exit, closes every socket (linger 0) and only then terminates
        # the context, so nothing ever waits in Context.term().
        self._ctx: zmq.Context[Any] = zmq.Context()
        self._sockets: list[zmq.Socket[Any]] = []
        self._owned: list[Any] = []  # the KVS client, once made
        self._finalizer = weakref.finalize(
            self,
            _release,
            self._ctx,
            self._sockets,
            self._owned,
            self._pid,
            (self._recv_lock, self._lock),  # the order every thread takes them in
            self._closing,
        )
        self._pull = self._socket(zmq.PULL)
        self._pull.setsockopt(zmq.RCVHWM, 0)
        self.response_address = (
            f"tcp://{self.ip}:{self._pull.bind_to_random_port(f'tcp://{self.ip}')}"
        )
        self._sched = self._socket(zmq.PUSH)
        self._sched.connect(self.scheduler_address)
        self._push: dict[str, zmq.Socket[Any]] = {}
        self._prefix = f"{uuid.uuid4().hex[:12]}-"
        self._seq = itertools.count()
        self._pending: dict[str, Any] = {}  # request id -> future or control slot
        # exec_func results this client stored on demand (CloudburstFuture.obj_id),
        # deleted after result_ttl_s (the executors' executor.result_ttl_s default).
        self.result_ttl_s = ExecutorConfig.result_ttl_s
        self._stored_results: deque[tuple[float, str]] = deque()
        self._expiry_timer: threading.Timer | None = None
        self._replies: dict[str, pb.ClientMessage] = {}
        self._due: list[CloudburstFuture] = []  # resolved futures with done-callbacks
        self._feeders_due: set[_MapFeeder] = set()  # maps with a free slot (map())
        # name -> (placement, lease end, [(source executor, trigger template bytes)])
        self._placements: dict[str, tuple[pb.DagSchedule, float, list[tuple[str, bytes]]]] = {}
        self._inflight: dict[str, int] = {}
        # MULTI: client_id -> the clock of its last output (docs/consistency.md).
        self._clocks: dict[str, dict[str, int]] = {}
        self._kvs: Any = None
        self._dead_reason = ""  # why _dead_executors found executors dead (for messages)
        self.kvs_address = ""
        self._kvs_override = kvs_address
        try:
            self._connect(min(connect_timeout, timeout))
        except BaseException:
            self.close()
            raise

    # --- plumbing ----------------------------------------------------------

    def _socket(self, kind: int) -> zmq.Socket[Any]:
        sock = security.client_socket(self._ctx, kind, self._sec)
        sock.setsockopt(zmq.LINGER, 0)
        self._sockets.append(sock)
        return sock

    def _close_socket(self, sock: zmq.Socket[Any]) -> None:
        sock.close(linger=0)
        try:
            self._sockets.remove(sock)
        except ValueError:
            pass

    def _connect(self, connect_timeout: float) -> None:
        host, port = split_address(self.scheduler_address, 0)
        if not port_open(host, port, timeout=min(1.0, connect_timeout)):
            raise ConnectionFailed(
                f"cannot reach the Cloudburst scheduler at {self.scheduler_address}: nothing "
                "accepts connections there (is the cluster running? start a local one with "
                "./scripts/start-cloudburst-local.sh)"
            )
        refused = security.refusal(self.scheduler_address, self._sec, connect_timeout)
        if refused:
            raise ConnectionFailed(f"the scheduler at {self.scheduler_address}: {refused}")
        try:
            query = pb.StatusQuery(client_version=version.__version__)
            status = self._request("status", query, timeout=connect_timeout).status
        except CloudburstTimeoutError:
            raise ConnectionFailed(
                f"the Cloudburst scheduler at {self.scheduler_address} accepted a connection "
                f"but did not answer within {connect_timeout}s"
            ) from None
        # The KVS routing as the scheduler names it, unless this client reaches it by
        # another name (a host outside the cluster's DNS: kvs_address='10.0.0.5:6450').
        self.kvs_address = self._kvs_override or status.kvs_address
        version.check(log, status.server_version, "client", "scheduler")

    def _next_id(self) -> str:
        return self._prefix + str(next(self._seq))

    def _send_scheduler(self, req: pb.SchedulerRequest) -> None:
        try:
            self._sched.send(req.SerializeToString(), zmq.NOBLOCK)
        except zmq.Again:
            raise ConnectionFailed(
                f"cannot send to the scheduler at {self.scheduler_address}: its queue is full"
            ) from None

    def _request(self, kind: str, body: Any, timeout: float | None = None) -> pb.ClientMessage:
        """Send a control request and wait for its answer (raising on an error)."""
        rid = self._next_id()
        req = pb.SchedulerRequest(request_id=rid, response_address=self.response_address)
        field = getattr(req, kind)
        if isinstance(body, str):
            setattr(req, kind, body)
        else:
            field.CopyFrom(body)
        try:
            with self._lock:
                self._check_open()
                self._pending[rid] = None
                self._send_scheduler(req)
            wait = self.timeout if timeout is None else timeout
            replies = self._replies
            if not self._wait_until(lambda: rid in replies, wait):
                raise CloudburstTimeoutError(
                    f"the scheduler at {self.scheduler_address} did not answer a "
                    f"{kind} request within {wait}s"
                )
            with self._lock:
                return self._replies.pop(rid)
        finally:
            with self._lock:
                self._pending.pop(rid, None)
                self._replies.pop(rid, None)

    def _send_cancel(self, call_id: str, addresses: Sequence[str]) -> None:
        """Tell the scheduler a call is cancelled (no answer; see ``future.cancel``)."""
        req = pb.SchedulerRequest(request_id=self._next_id())
        req.cancel.call_id = call_id
        req.cancel.addresses.extend(addresses)
        with self._lock:
            if self._closed or os.getpid() != self._pid:
                return
            try:
                self._send_scheduler(req)
            except ConnectionFailed as exc:
                log.warning("could not send the cancel of call %s: %s", call_id, exc)

    def _control(self, kind: str, body: Any) -> pb.GenericResponse:
        msg = self._request(kind, body)
        resp = msg.response
        if not resp.success:
            raise wire.exception_for_code(resp.error, resp.message)
        return resp

    def _wait_until(self, done: Any, wait: float) -> bool:
        """Wait at most ``wait`` seconds for ``done()``; whether it came true.

        One thread at a time receives (``_recv_lock``) and hands every message to its
        future or request; the others wait on ``_arrived``, which the receiver
        notifies after each batch, and one of them takes over when it stops. The
        state lock is never held while waiting, so other threads keep sending."""
        deadline = time.monotonic() + wait
        recv_lock, arrived = self._recv_lock, self._arrived
        while True:
            if done():
                return True
            remaining = deadline - time.monotonic()
            if recv_lock.acquire(blocking=False):
                try:
                    self._pump(max(0.0, min(remaining, WAIT_SLICE_S)))
                except zmq.ZMQError:
                    self._check_open()  # closed under us: say so
                    raise
                finally:
                    recv_lock.release()
                    with arrived:
                        arrived.notify_all()
                self._run_callbacks()
            elif remaining > 0:
                with arrived:
                    if not done():
                        arrived.wait(min(remaining, WAIT_SLICE_S))
                self._check_open()
            if remaining <= 0:
                return bool(done())

    def _pump(self, wait: float) -> bool:
        """Receive what arrives within ``wait`` seconds (at least one message, then
        whatever is queued); returns whether anything arrived."""
        self._check_open()
        pull = self._pull
        if not pull.poll(0):
            # Poll without sleeping for a moment first (yielding the core between
            # polls): an answer arriving meanwhile skips a thread wake-up.
            now = time.monotonic()
            spin_end = now + min(wait, SPIN_S)
            end = now + wait
            while True:
                if pull.poll(0):
                    break
                now = time.monotonic()
                if now >= spin_end:
                    # Blocking waits in slices: a close() from another thread is
                    # noticed within WAIT_SLICE_S.
                    left = end - now
                    got = pull.poll(max(0, math.ceil(min(left, WAIT_SLICE_S) * 1000)))
                    if got:
                        break
                    self._check_open()
                    if left <= WAIT_SLICE_S:
                        return False
                    continue
                os.sched_yield()
        while True:
            try:
                data = self._pull.recv(zmq.NOBLOCK)
            except zmq.Again:
                return True
            self._dispatch(data)

    def _dispatch(self, data: bytes) -> None:
        try:
            msg = wire.parse_client_message(data)
        except WireError as exc:
            log.warning("dropping a malformed message: %s", exc)
            return
        rid = msg.response_id
        with self._lock:
            target = self._pending.get(rid, _UNSET)
            if target is _UNSET:
                return  # a late answer (an ack after its result, a retried call's first try)
            if target is None:
                self._replies[rid] = msg
                return
            target._set_message(msg)
            if (
                target._value is not _UNSET or target._error is not None
            ) and not target._awaiting_ack:
                self._resolved(rid, target)
        if target._store_wanted and target._value is not _UNSET:
            self._store_result(target)  # outside the lock: a KVS round trip

    def _store_result(self, fut: CloudburstFuture) -> None:
        """Store an exec_func result under its ``obj_id`` (once): it was passed to
        another call or its id was asked for (see ``CloudburstFuture.obj_id``). It is
        deleted ``result_ttl_s`` later (or at ``close()``), like the executors' results."""
        if fut._stored:
            return
        fut._stored = True
        try:
            ok = self.put_object(fut._key, fut._value)
        except CloudburstException as exc:
            ok = False
            log.warning(
                "storing the result of %s under %r failed: %s", fut.request_id, fut._key, exc
            )
        if not ok:
            log.warning("storing the result of %s under %r failed", fut.request_id, fut._key)
            return
        with self._lock:
            self._stored_results.append((time.monotonic() + self.result_ttl_s, fut._key))
            if self._expiry_timer is None:
                self._arm_expiry(self.result_ttl_s)

    def _arm_expiry(self, delay: float) -> None:
        timer = threading.Timer(max(0.05, delay), _expire_results, (weakref.ref(self),))
        timer.daemon = True
        self._expiry_timer = timer
        timer.start()

    def _delete_stored(self, now: float) -> None:
        """Delete the results this client stored whose time has come."""
        with self._lock:
            due = []
            while self._stored_results and self._stored_results[0][0] <= now:
                due.append(self._stored_results.popleft()[1])
            self._expiry_timer = None
            if self._stored_results and not self._closed:
                self._arm_expiry(self._stored_results[0][0] - time.monotonic())
        if due:
            try:
                self._kvs_call(lambda kvs: kvs.delete(due))
            except Exception as exc:  # the KVS is down: the keys stay
                log.warning("deleting %d stored call results failed: %s", len(due), exc)

    def _adopt(self, fut: CloudburstFuture, started: CloudburstFuture, feeder: _MapFeeder) -> None:
        """A map's future not started yet takes over the call just ``started`` for it."""
        with self._lock:
            for attr in (
                "request_id", "_key", "_lazy", "_schedule", "_resend", "_value", "_error",
                "_awaiting_ack", "_ack_error", "function", "_sent_at", "_upstreams",
                "_output",
            ):  # fmt: skip
                setattr(fut, attr, getattr(started, attr))
            name = getattr(started, "_placement_name", None)
            if name is not None:
                started._placement_name = None  # type: ignore[attr-defined]
                fut._placement_name = name  # type: ignore[attr-defined]
            fut._deferred = None
            rid = fut.request_id
            if self._pending.get(rid) is started:
                self._pending[rid] = fut
            if fut._finished() and not fut._awaiting_ack:
                self._resolved(rid, fut)
            else:
                feeder.track(fut)

    def _resolved(self, rid: str, fut: CloudburstFuture) -> None:
        with self._lock:
            self._pending.pop(rid, None)
            feeder = fut._feeder
            if feeder is not None:
                fut._feeder = None
                feeder.in_flight -= 1
                if feeder.todo:
                    self._feeders_due.add(feeder)
            if fut._callbacks:
                self._due.append(fut)  # run by _run_callbacks, outside the locks
            name = getattr(fut, "_placement_name", None)
            if name is not None:
                fut._placement_name = None  # type: ignore[attr-defined]
                if self._inflight.get(name, 0) > 0:
                    self._inflight[name] -= 1

    def _run_callbacks(self) -> None:
        """Run the done-callbacks of the futures resolved meanwhile (no lock held),
        and start the calls of maps waiting for a free slot."""
        if self._feeders_due:
            with self._lock:
                feeders, self._feeders_due = self._feeders_due, set()
            for feeder in feeders:
                feeder.fill()
        if not self._due:
            return
        with self._lock:
            due, self._due = self._due, []
        for fut in due:
            fut._fire_callbacks()

    def _poll_for(self, fut: CloudburstFuture, wait: float) -> bool:
        """Receive until ``fut`` has its result or ``wait`` seconds passed."""
        if self._wait_until(lambda: fut._value is not _UNSET or fut._error is not None, wait):
            self._resolved(fut.request_id, fut)
            return True
        return False

    def _drop_pending(self, rid: str) -> None:
        self._pending.pop(rid, None)

    def _dead_executors(self, addresses: Sequence[str], timeout: float | None = None) -> set[str]:
        wait = self.timeout if timeout is None else max(0.05, min(timeout, self.timeout))
        try:
            query = pb.StatusQuery(addresses=list(addresses))
            status = self._request("status", query, timeout=wait).status
        except CloudburstTimeoutError:
            # No scheduler to ask (down or restarting): an executor that does not even
            # accept connections any more is not running the call.
            gone = set()
            for address in addresses:
                host, port = split_address(address, 0)
                if not port_open(host, port, timeout=0.2):
                    gone.add(address)
            if not gone:
                log.warning(
                    "the scheduler at %s did not answer a liveness check; still waiting",
                    self.scheduler_address,
                )
            self._dead_reason = (
                f"they no longer accept connections and the scheduler at "
                f"{self.scheduler_address} does not answer"
            )
            return gone
        self._dead_reason = (
            f"the scheduler at {self.scheduler_address} marked them dead: no heartbeat"
        )
        return set(status.dead)

    def _forget_placement(self, dead: Iterable[str]) -> None:
        """Drop cached placements on ``dead`` executors and the sockets to them (a
        restarted cluster runs its executors elsewhere)."""
        dead = set(dead)
        with self._lock:
            for name, (tmpl, _, _) in list(self._placements.items()):
                if dead & set(tmpl.locations.values()):
                    del self._placements[name]
            for address in dead:
                sock = self._push.pop(address, None)
                if sock is not None:
                    self._close_socket(sock)

    def _check_open(self) -> None:
        if self._closed or self._closing.is_set():
            raise CloudburstException("this CloudburstConnection is closed")
        if os.getpid() != self._pid:
            raise CloudburstException(
                f"this CloudburstConnection was created in process {self._pid} and cannot "
                f"be used in process {os.getpid()} (a forked child): ZeroMQ sockets do not "
                "survive fork(); make a new connection in the child"
            )

    def _encode_args(
        self,
        args: Iterable[Any],
        out: pb.Arguments,
        upstreams: list[CloudburstFuture] | None = None,
    ) -> None:
        for arg in args:
            if isinstance(arg, CloudburstFuture):
                if arg.done():
                    arg = arg.get()  # its value, or its error raised here
                elif arg.obj_id:
                    if upstreams is not None:
                        upstreams.append(arg)
                    arg = wire.PendingReference(arg.obj_id, True)
                else:
                    arg = arg.get()
            wire.encode_argument(arg, out.values.add())

    # --- calls -------------------------------------------------------------

    def _start_call(
        self,
        placement_name: str,
        kind: str,
        body: Any,
        arguments: dict[str, pb.Arguments],
        output_key: str,
        consistency: int,
        client_id: str,
        defer_ack: bool = False,
        direct: bool = True,
    ) -> CloudburstFuture:
        """Start a call: directly on a cached placement if possible (and ``direct``),
        else through the scheduler (waiting for its acknowledgement, so unknown names
        raise here; with ``defer_ack`` the caller waits for it: :meth:`_await_acks`)."""
        ref = weakref.ref(self)  # the future must not keep the connection alive

        def resend(exclude: list[str], timeout: float | None = None) -> CloudburstFuture:
            conn = ref()
            if conn is None:
                raise CloudburstException("the connection was garbage-collected")
            body.ClearField("exclude")
            body.exclude.extend(exclude)
            return conn._via_scheduler(
                kind, body, output_key, placement_name, retry=True, timeout=timeout
            )

        with self._lock:  # never held while waiting (see _wait_until)
            self._check_open()
            fut = (
                self._direct_call(
                    placement_name,
                    arguments,
                    output_key,
                    consistency,
                    client_id,
                    body.client_clock if consistency == pb.MULTI else None,
                )
                if direct
                else None
            )
        if fut is None and defer_ack:
            fut = self._send_via_scheduler(kind, body, output_key)
            fut._ack_for = placement_name  # type: ignore[attr-defined]
        elif fut is None:
            fut = self._via_scheduler(kind, body, output_key, placement_name)
        fut._resend = resend  # one retry through the scheduler if an executor dies
        fut.function = placement_name
        return fut

    def _via_scheduler(
        self,
        kind: str,
        body: Any,
        output_key: str,
        placement_name: str,
        retry: bool = False,
        timeout: float | None = None,
    ) -> CloudburstFuture:
        """Send a call through the scheduler and wait for its acknowledgement (at most
        the connection's timeout, or ``timeout`` if shorter). A retry (``retry=True``)
        is taken over by the original future: no placement caching, no in-flight count
        of its own."""
        wait = self.timeout if timeout is None else max(0.0, min(timeout, self.timeout))
        fut = self._send_via_scheduler(kind, body, output_key)
        # Wait for the acknowledgement (it carries the placement), even if the result
        # came first: it follows right behind.
        acked = self._wait_until(lambda: not fut._awaiting_ack, wait)
        with self._lock:
            return self._after_ack(fut, acked, wait, placement_name, retry)

    def _send_via_scheduler(self, kind: str, body: Any, output_key: str) -> CloudburstFuture:
        """Send a call to the scheduler; its future awaits the acknowledgement."""
        rid = self._next_id()
        req = pb.SchedulerRequest(request_id=rid, response_address=self.response_address)
        getattr(req, kind).CopyFrom(body)
        fut = CloudburstFuture(self, rid, output_key)
        fut._awaiting_ack = True
        with self._lock:
            self._check_open()
            self._pending[rid] = fut
            try:
                self._send_scheduler(req)
            except BaseException:
                self._pending.pop(rid, None)
                raise
        return fut

    def _await_acks(self, futs: Sequence[CloudburstFuture]) -> None:
        """Wait for the acknowledgements of calls started with ``defer_ack`` (all
        sent first: one round trip for the batch instead of one per call); raises
        the first refusal (unknown function, ...) after handling them all."""
        deferred = [f for f in futs if getattr(f, "_ack_for", None) is not None]
        if not deferred:
            return
        wait = self.timeout
        self._wait_until(lambda: not any(f._awaiting_ack for f in deferred), wait)
        first: BaseException | None = None
        with self._lock:
            for fut in deferred:
                name = fut._ack_for  # type: ignore[attr-defined]
                fut._ack_for = None  # type: ignore[attr-defined]
                try:
                    self._after_ack(fut, not fut._awaiting_ack, wait, name, False)
                except CloudburstException as exc:
                    first = first or exc
        if first is not None:
            raise first

    def _after_ack(
        self, fut: CloudburstFuture, acked: bool, wait: float, placement_name: str, retry: bool
    ) -> CloudburstFuture:
        rid = fut.request_id
        if not acked and fut._value is _UNSET and fut._error is None:
            self._pending.pop(rid, None)
            raise ConnectionFailed(
                f"the scheduler at {self.scheduler_address} did not acknowledge call {rid} "
                f"within {wait:g}s (is it running?)"
            )
        # (not acked but answered anyway: only the placement is unknown)
        if fut._ack_error:
            self._pending.pop(rid, None)
            assert fut._error is not None
            raise fut._error  # refused by the scheduler: raise at the call
        if fut._value is not _UNSET or fut._error is not None:
            self._pending.pop(rid, None)  # answered already
        if fut._schedule is not None and not retry and self.direct:
            self._placements[placement_name] = (
                fut._schedule,
                time.monotonic() + self.placement_lease,
                _trigger_templates(fut._schedule),
            )
        if rid in self._pending and not retry:
            fut._placement_name = placement_name  # type: ignore[attr-defined]
            self._inflight[placement_name] = self._inflight.get(placement_name, 0) + 1
        return fut

    def _direct_call(
        self,
        placement_name: str,
        arguments: dict[str, pb.Arguments],
        output_key: str,
        consistency: int,
        client_id: str,
        client_clock: pb.Clock | None = None,
    ) -> CloudburstFuture | None:
        if not self.direct:
            return None
        cached = self._placements.get(placement_name)
        if cached is None or self._inflight.get(placement_name, 0) > 0:
            return None
        tmpl, expires, prefixes = cached
        if time.monotonic() > expires:
            del self._placements[placement_name]
            return None
        if _has_references(arguments):
            # KVS references: let the scheduler place the call where the data is
            # cached (locality) instead of reusing the last placement.
            return None
        rid = self._next_id()
        # Only what changes per call is serialized: a protobuf parser merges
        # concatenated messages, so cached template bytes + these bytes = the trigger.
        delta = pb.ExecutorMessage()
        sched = delta.trigger.schedule
        sched.id = rid
        sched.response_address = self.response_address
        sched.sent_at = time.time()
        if output_key:
            sched.output_key = output_key
        if consistency:
            sched.consistency = consistency  # type: ignore[assignment]
        if client_id:
            sched.client_id = client_id
        if client_clock is not None and client_clock.entries:
            sched.client_clock.CopyFrom(client_clock)
        for fn, args in arguments.items():
            sched.arguments[fn].CopyFrom(args)
        tail = delta.SerializeToString()
        msgs = [(address, prefix + tail) for address, prefix in prefixes]
        fut = CloudburstFuture(self, rid, output_key, schedule=tmpl)
        self._pending[rid] = fut
        for address, data in msgs:
            sock = self._push.get(address)
            if sock is None:
                sock = self._push[address] = self._socket(zmq.PUSH)
                sock.setsockopt(zmq.SNDHWM, 1000)
                # Queue only on a live connection: a send to an executor that is gone
                # (or not connected yet) fails at once and the call uses the scheduler.
                sock.setsockopt(zmq.IMMEDIATE, 1)
                sock.connect(address)
            try:
                sock.send(data, zmq.NOBLOCK)
            except zmq.Again:  # that executor is not taking messages: use the scheduler
                self._pending.pop(rid, None)
                del self._placements[placement_name]
                # It may be gone for good (a restarted cluster places elsewhere).
                self._close_socket(self._push.pop(address))
                return None
        fut._placement_name = placement_name  # type: ignore[attr-defined]
        self._inflight[placement_name] = self._inflight.get(placement_name, 0) + 1
        return fut

    # --- public API --------------------------------------------------------

    def register(
        self,
        function: Any,
        name: str,
        *,
        timeout: float | None = None,
        memory: int | None = None,
    ) -> CloudburstFunction:
        """Register ``function`` (a function taking the user library first, a class,
        or ``(Class, init_args)``) under ``name``; returns a callable handle.

        ``timeout`` (seconds) and ``memory`` (bytes a call may allocate) limit each
        call; ``None`` takes the executors' config defaults. A call past its time limit
        raises ``FunctionTimeout``, past its memory limit ``FunctionMemoryExceeded``.
        Registering under an existing name replaces that function."""
        if not isinstance(name, str) or not name:
            raise InvalidArgument(f"a function name must be a non-empty string, not {name!r}")
        ok = callable(function) or (
            isinstance(function, tuple)
            and len(function) == 2
            and isinstance(function[0], type)
            and isinstance(function[1], tuple | list)
        )
        if not ok:
            raise InvalidArgument(
                f"register() takes a function or (Class, init_args), not {type(function).__name__}"
            )
        if isinstance(function, tuple):
            function = (function[0], tuple(function[1]))
        _check_signature(function, name)
        try:
            body = _pickle_function(function)
        except Exception as exc:
            raise InvalidArgument(f"cannot pickle function {name!r}: {exc}") from exc
        for what, limit in (("timeout", timeout), ("memory", memory)):
            if limit is not None and (isinstance(limit, bool) or not limit > 0):
                raise InvalidArgument(f"{what} must be a positive number, not {limit!r}")
        msg = pb.Function(name=name, body=body)
        if timeout is not None:
            msg.timeout_s = float(timeout)
        if memory is not None:
            msg.memory_bytes = int(memory)
        self._control("register_function", msg)
        # Cached placements carry function versions: ask the scheduler again.
        self._placements.clear()
        return CloudburstFunction(name, self, _call_signature(function))

    def get_function(self, name: str) -> CloudburstFunction:
        """A handle to the registered function ``name`` (raises FunctionNotFound)."""
        self._control("get_function", name)
        return CloudburstFunction(name, self)

    def list(self, prefix: str | None = None) -> list[str]:
        """Names of the registered functions (starting with ``prefix``), sorted."""
        return list(self._control("list_functions", prefix or "").names)

    def register_dag(
        self,
        name: str,
        functions: Sequence[Any],
        connections: Iterable[Sequence[str]],
        gpu_functions: Iterable[str] = (),
        batching_functions: Iterable[str] = (),
        colocated: Iterable[Any] = (),
    ) -> DagRegistration:
        """Register a DAG: ``functions`` by name, ``connections`` as ``(source, sink)``
        pairs. Returns ``(True, 0)`` or ``(False, error)`` like the original
        (``DAG_ALREADY_EXISTS``, ``FUNC_NOT_FOUND``, ``INVALID_ARGUMENT``) with the
        reason in ``.message``.

        The original's options (docs/client.md, "DAG options"): a function given as
        ``(name, [invalid results])`` is MULTIEXEC; ``gpu_functions`` run only on
        executors with a GPU; ``batching_functions`` run over several calls at once;
        ``colocated`` functions (one group, or a list of groups) share a node."""
        dag = dag_message(
            name, functions, connections, gpu_functions, batching_functions, colocated
        )
        resp = self._request("register_dag", dag).response
        if not resp.success:
            log.warning("register_dag(%r) failed: %s", name, resp.message)
        return DagRegistration(resp.success, resp.error, resp.message)

    def delete_dag(self, name: str) -> DagRegistration:
        """Delete a DAG: ``(True, 0)`` or ``(False, NO_SUCH_DAG)``."""
        self._placements.pop(f"dag:{name}", None)
        resp = self._request("delete_dag", name).response
        return DagRegistration(resp.success, resp.error, resp.message)

    def delete_function(self, name: str) -> None:
        """Delete the registered function ``name``: later calls raise
        ``FunctionNotFound``. Raises ``FunctionNotFound`` if there is none, and
        ``InvalidArgument`` while a registered DAG uses it (delete the DAG first)."""
        self._control("delete_function", name)
        self._placements.clear()

    def exec_func(self, name: str, args: Any = ()) -> CloudburstFuture:
        """Call function ``name`` with ``args`` (a list; a scalar is one argument).
        The result comes straight back to the client; it is stored in the KVS under
        ``future.obj_id`` only when needed (the future is passed to another call
        before it is done, or ``obj_id`` is read): see ``CloudburstFuture.obj_id``."""
        return self._exec(name, args)

    def _exec(self, name: str, args: Any, defer_ack: bool = False) -> CloudburstFuture:
        if not isinstance(args, list | tuple):
            args = [args]
        call = pb.FunctionCall(name=name)
        upstreams: list[CloudburstFuture] = []
        self._encode_args(args, call.arguments, upstreams)
        fut = self._start_call(
            f"fn:{name}", "call", call, {name: call.arguments}, "", NORMAL, "", defer_ack=defer_ack
        )
        fut._key = f"results/{self._prefix}{uuid.uuid4().hex}"
        fut._lazy = True
        fut._upstreams = upstreams  # waited for as long as they run (see the future)
        return fut

    def call_dag(
        self,
        dname: str,
        arg_map: dict[str, Any],
        direct_response: bool = False,
        consistency: int = NORMAL,
        output_key: str | None = None,
        client_id: str | None = None,
        dry_run: bool = False,
        continuation: pb.DagCall | None = None,
    ) -> Any:
        """Call DAG ``dname``; ``arg_map`` maps a function to its arguments (a list, or
        a scalar for one argument). Returns a future, or with ``direct_response=True``
        the result itself. With ``output_key`` the result is also stored there.

        ``consistency=SINGLE``: every read of a key in the call returns the version the
        call read first, on any node; ``MULTI`` adds causal consistency and needs
        ``output_key`` and ``client_id`` (docs/consistency.md).

        ``dry_run=True`` returns the call message (a ``DagCall``) without sending it.
        ``continuation`` (such a message) is called when this call is done, with this
        call's result appended to the arguments of each of its source functions; the
        future then stands for the continuation's result (chains nest)::

            then = cloud.call_dag('square_dag', {}, dry_run=True)
            cloud.call_dag('incr_dag', {'incr': 3}, continuation=then).get()  # 16
        """
        if consistency not in (pb.NORMAL, pb.SINGLE, pb.MULTI):
            raise InvalidArgument(f"unknown consistency {consistency!r}")
        if consistency == pb.MULTI and not (output_key and client_id):
            raise InvalidArgument(
                "consistency=MULTI needs output_key and client_id: the result is stored "
                "under output_key as a causal version with client_id's clock entry "
                "incremented, which orders a client's successive calls (docs/consistency.md)"
            )
        if not isinstance(arg_map, dict):
            raise InvalidArgument(
                f"arg_map must be a dict of function -> arguments, not {arg_map!r}"
            )
        call = pb.DagCall(
            name=dname,
            consistency=consistency,  # type: ignore[arg-type]
            output_key=output_key or "",
            client_id=client_id or "",
        )
        if consistency == pb.MULTI and client_id in self._clocks:
            # The clock of this client's last output: the new one follows it.
            call.client_clock.entries.update(self._clocks[client_id])
        upstreams: list[CloudburstFuture] = []
        for fname, fargs in arg_map.items():
            if not isinstance(fargs, list | tuple):
                fargs = [fargs]
            self._encode_args(fargs, call.function_args[fname], upstreams)
        if continuation is not None:
            if not isinstance(continuation, pb.DagCall):
                raise InvalidArgument(
                    "continuation must be the call message that call_dag(..., dry_run=True) "
                    f"returns, not {type(continuation).__name__}"
                )
            call.continuation.CopyFrom(continuation)
        if dry_run:
            return call
        last = call  # the result (and the output key it is stored under) is the last one's
        while last.HasField("continuation"):
            last = last.continuation
        fut = self._start_call(
            f"dag:{dname}",
            "dag_call",
            call,
            dict(call.function_args),
            last.output_key,
            consistency,
            call.client_id,
            direct=continuation is None,  # cached placements carry no continuation
        )
        fut._upstreams = upstreams
        if consistency == pb.MULTI:
            fut._client_id = call.client_id  # its result's clock updates self._clocks
            fut._learn_clock()  # (if the result came already)
        if direct_response:
            return fut.get()
        return fut

    def get_object(self, key: str, deserialize: bool = True, default: Any = None) -> Any:
        """The value stored under ``key``; ``default`` (``None`` unless given) if the
        key was never written (or was deleted). To tell a stored ``None`` from a
        missing key, pass a sentinel: ``get_object(k, default=MISSING)``; or pass
        ``default=KeyNotFound`` to raise :class:`KeyNotFound` (a ``KeyError``)."""
        lattice = self._kvs_call(lambda kvs: kvs.get([key]).get(key))
        if lattice is None:
            if default is KeyNotFound:
                raise KeyNotFound(wire._Message(f"the KVS holds no key {key!r}"))
            return default
        return from_lattice(lattice) if deserialize else lattice

    def put_object(self, key: str, value: Any) -> bool:
        """Store ``value`` under ``key``: a ``set`` as a Set lattice, anything else as
        LWW (a lattice is stored as is)."""
        pieces = serializer.large_value_pieces(value)
        if pieces is not None:  # a large array: sent from its own memory, not copied
            ts = make_timestamp()

            def put_pieces(kvs: Any) -> bool:
                put = getattr(kvs, "put_lww_pieces", None)
                if put is None:
                    return bool(kvs.put(key, LWWPairLattice(ts, b"".join(pieces))))
                return bool(put(key, ts, pieces))

            return bool(self._kvs_call(put_pieces))
        lattice = to_lattice(value)
        return bool(self._kvs_call(lambda kvs: kvs.put(key, lattice)))

    def delete_object(self, key: str) -> bool:
        """Delete ``key`` from the KVS (replicas, caches and the WAL honour it; a later
        ``get_object`` returns ``None`` until the next ``put_object``). True once a
        replica acknowledged."""
        return bool(self._kvs_call(lambda kvs: kvs.delete(key)))

    def status(self) -> dict[str, Any]:
        """What the scheduler sees: ``{'executors': live worker count, ...}``."""
        st = self._request("status", pb.StatusQuery()).status
        return {
            "executors": len(st.executors),
            "executor_list": [
                {
                    "address": e.address,
                    "node_id": e.node_id,
                    "pid": e.pid,
                    "functions": list(e.functions),
                    "load": e.load,
                    "gpu": e.gpu,
                }
                for e in st.executors
            ],
            "scheduler": st.scheduler_address,
            "kvs": st.kvs_address,
            "functions": st.functions,
            "dags": st.dags,
        }

    def _kvs_client(self) -> Any:
        self._check_open()
        if self._kvs is None:
            host, port = split_address(self.kvs_address, 6450)
            if not port_open(host, port, timeout=min(1.0, self.timeout)):
                raise ConnectionFailed(
                    f"cannot reach the KVS routing tier at tcp://{host}:{port}: nothing "
                    "accepts connections there"
                )
            self._kvs = make_kvs_client(host, port, ip=self.ip, timeout=self.timeout, sec=self._sec)
            self._owned.append(self._kvs)
        return self._kvs

    def _kvs_call(self, op: Any) -> Any:
        """Run ``op(kvs_client)`` (one thread at a time: the KVS client is not
        thread-safe), bounded by the connection's timeout; a KVS server that does
        not answer is named as the routing tier or a storage node."""
        with self._kvs_lock:
            kvs = self._kvs_client()
            try:
                return op(kvs)
            except AnnaTimeoutError as exc:
                routing = kvs.routing_address
                if exc.address == routing or "KeyAddressResponse" in str(exc):
                    part = f"the KVS routing tier at {routing}"
                else:
                    part = f"the KVS storage node at {exc.address or '?'}"
                raise AnnaTimeoutError(f"{part} did not answer: {exc}", exc.address) from None
            except AnnaError as exc:
                if type(exc) is not AnnaError:
                    raise  # NoServersError is a ConnectionFailed already
                raise ConnectionFailed(f"KVS request failed: {exc}") from None

    def close(self) -> None:
        """Close the sockets and terminate the context (promptly, whatever is
        outstanding); the connection cannot be used afterwards. Safe to call from
        another thread while one waits on a future (that wait raises), and from a
        forked child (which leaves the parent's sockets alone)."""
        if self._closed:
            return
        if self._stored_results and os.getpid() == self._pid:
            timer = self._expiry_timer
            if timer is not None:
                timer.cancel()
            self._delete_stored(float("inf"))  # results this client stored
        self._closed = True  # a thread waiting on the socket stops within WAIT_SLICE_S
        self._closing.set()
        if os.getpid() != self._pid:
            self._finalizer.detach()
            return
        # A KVS request in another thread ends within the connection's timeout; wait
        # a little for it, else leave the KVS client to be closed when it is dropped.
        got_kvs = self._kvs_lock.acquire(timeout=CLOSE_WAIT_S)
        try:
            if not got_kvs and self._kvs is not None:
                self._owned.remove(self._kvs)
            self._finalizer()  # takes the receive, then the send lock
        finally:
            if got_kvs:
                self._kvs_lock.release()

    def __reduce__(self) -> Any:
        raise TypeError(
            "a CloudburstConnection cannot be pickled or sent to another process "
            "(multiprocessing spawn/forkserver, a process pool): make a connection in "
            "each process"
        )

    def __enter__(self) -> CloudburstConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _release(
    ctx: zmq.Context[Any],
    sockets: list[zmq.Socket[Any]],
    owned: list[Any],
    pid: int,
    locks: tuple[Any, ...],
    closing: threading.Event,
) -> None:
    """The connection's finalizer (``close()``, garbage collection or interpreter exit):
    sockets first, with no linger, then the context. In a forked child it does nothing:
    those sockets are the parent's. At exit a daemon thread may still be waiting on
    the socket: ``closing`` makes it stop (within WAIT_SLICE_S) and release ``locks``
    (sending, receiving) before the sockets are closed under it."""
    if os.getpid() != pid:
        return
    closing.set()
    held = [lock for lock in locks if lock.acquire(timeout=4 * WAIT_SLICE_S)]
    try:
        _close_all(ctx, sockets, owned)
    finally:
        for lock in reversed(held):
            lock.release()


def _close_all(ctx: zmq.Context[Any], sockets: list[zmq.Socket[Any]], owned: list[Any]) -> None:
    for client in owned:
        try:
            client.close()
        except Exception:  # noqa: BLE001 - best effort at teardown
            pass
    owned.clear()
    for sock in sockets:
        try:
            sock.close(linger=0)
        except Exception:  # noqa: BLE001
            pass
    sockets.clear()
    ctx.destroy(linger=0)  # also any socket made behind our back; then term()


def _trigger_templates(tmpl: pb.DagSchedule) -> list[tuple[str, bytes]]:
    """Per source function of a placement: its executor and the serialized trigger
    without the per-call fields (id, reply address, arguments)."""
    out = []
    msg = pb.ExecutorMessage()
    msg.trigger.schedule.CopyFrom(tmpl)
    msg.trigger.schedule.ClearField("id")
    for fn in sources(tmpl.dag):
        msg.trigger.target_function = fn
        out.append((tmpl.locations[fn], msg.SerializeToString()))
    return out


#: Top-level packages every executor has (Cloudburst itself).
_CLUSTER_PACKAGES = frozenset({"cloudburst", "executor", "scheduler", "anna", "lattices", "cache"})
#: Objects looked at per registration when searching for the user's modules.
_SCAN_LIMIT = 20_000


def _installed_roots() -> tuple[str, ...]:
    import site
    import sysconfig

    paths = sysconfig.get_paths()
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, paths["purelib"], paths["platlib"]}
    roots.add(paths["stdlib"])
    try:
        roots.update(site.getsitepackages())
        roots.add(site.getusersitepackages())
    except AttributeError:  # a virtualenv without site helpers
        pass
    return tuple(os.path.abspath(r) + os.sep for r in roots if r)


def _is_installed(mod: types.ModuleType) -> bool:
    """Whether executors can be expected to import ``mod`` themselves: the standard
    library, Cloudburst, or an installed distribution (site-packages, an editable
    install). Anything else (files next to the notebook) is the user's own code."""

    top = mod.__name__.split(".")[0]
    if top in _CLUSTER_PACKAGES or top in sys.stdlib_module_names or top == "__main__":
        return True
    path = getattr(mod, "__file__", None)
    if path is None and not hasattr(mod, "__path__"):
        return True  # a builtin module
    paths = [path] if path else list(getattr(mod, "__path__", []))
    roots = _installed_roots()
    if paths and all(os.path.abspath(p).startswith(roots) for p in paths):
        return True
    return top in _distribution_packages()


_DISTS: dict[str, Any] = {}


def _distribution_packages() -> Any:
    """Top-level names provided by installed distributions (computed once)."""
    import importlib.metadata

    if "map" not in _DISTS:
        _DISTS["map"] = importlib.metadata.packages_distributions()
    return _DISTS["map"]


def _top_module(mod: types.ModuleType) -> types.ModuleType:
    """The top-level package of ``mod`` if it is the user's too (registering it by
    value covers its submodules), else ``mod``."""
    top = sys.modules.get(mod.__name__.split(".")[0])
    if top is not None and top is not mod and not _is_installed(top):
        return top
    return mod


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def user_modules(obj: Any) -> list[types.ModuleType]:
    """The user's own modules (not installed: see :func:`_is_installed`) that
    ``obj`` needs, found through what it references: the module defining it, the
    globals its code uses, closures, defaults, classes and their methods, and
    recursively what those modules' own functions and classes use. They are pickled
    by value so executors need not import them."""
    found: dict[str, types.ModuleType] = {}
    seen: set[int] = set()
    stack: list[Any] = [obj]
    checked: dict[str, bool] = {}

    def module_named(name: str | None) -> None:
        mod = sys.modules.get(name or "")
        if mod is not None:
            stack.append(mod)

    while stack and len(seen) < _SCAN_LIMIT:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if isinstance(o, types.ModuleType):
            name = o.__name__
            if name not in checked:
                checked[name] = not _is_installed(o)
            if checked[name] and name not in found:
                found[name] = o
                # Its functions and classes are pickled by value too: what they use.
                for value in list(vars(o).values()):
                    if isinstance(value, types.FunctionType | type | types.ModuleType):
                        stack.append(value)
            continue
        if isinstance(o, types.MethodType):
            stack.append(o.__func__)
            continue
        if isinstance(o, types.FunctionType):
            module_named(o.__module__)
            g = o.__globals__
            for name in _code_names(o.__code__):
                if name in g:
                    stack.append(g[name])
            for cell in o.__closure__ or ():
                try:
                    stack.append(cell.cell_contents)
                except ValueError:  # an empty cell
                    pass
            stack.extend(o.__defaults__ or ())
            stack.extend((o.__kwdefaults__ or {}).values())
            continue
        if isinstance(o, type):
            if o.__module__ == "builtins":
                continue
            module_named(o.__module__)
            for value in list(vars(o).values()):
                if isinstance(value, staticmethod | classmethod):
                    value = value.__func__
                elif isinstance(value, property):
                    value = value.fget
                if isinstance(value, types.FunctionType | type):
                    stack.append(value)
            stack.extend(b for b in o.__bases__ if b is not object)
            continue
        if isinstance(o, tuple | list | frozenset | set):
            if len(o) <= 1000:
                stack.extend(o)
            continue
        if isinstance(o, dict):
            if len(o) <= 1000:
                stack.extend(o.values())
            continue
        t = type(o)
        if t.__module__ != "builtins":
            stack.append(t)  # an instance: its class (and its module) is needed
    tops: dict[str, types.ModuleType] = {}
    for mod in found.values():
        top = _top_module(mod)
        tops.setdefault(top.__name__, top)
    # A submodule of a package already listed is covered by it.
    return [
        m
        for name, m in tops.items()
        if not any(name.startswith(other + ".") for other in tops if other != name)
    ]


def _pickle_function(function: Any) -> bytes:
    """Cloudpickle a function or ``(Class, init_args)``; the user's own modules it
    needs (:func:`user_modules`) are shipped by value so executors need not import
    them."""
    mods = user_modules(function)
    registered = []
    for mod in mods:
        try:
            cloudpickle.register_pickle_by_value(mod)
            registered.append(mod)
        except ValueError:  # already registered by the user, or not in sys.modules
            pass
    try:
        return cloudpickle.dumps(function)
    finally:
        for mod in registered:
            cloudpickle.unregister_pickle_by_value(mod)


def _takes_user_library(fn: Any, bound: int) -> str | None:
    """None if ``fn`` (with ``bound`` leading parameters already bound: ``self``)
    accepts the user library as its first positional argument, else its signature."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: cannot tell
        return None
    params = list(sig.parameters.values())[bound:]
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if params and (
        params[0].kind in positional or params[0].kind is inspect.Parameter.VAR_POSITIONAL
    ):
        return None
    return "(" + ", ".join(str(p) for p in params) + ")"


def _call_signature(function: Any) -> inspect.Signature | None:
    """The signature calls are checked against (user library first), if known."""
    target = function[0] if isinstance(function, tuple) else function
    try:
        if isinstance(target, type):
            params = list(inspect.signature(target.run).parameters.values())[1:]  # self
            return inspect.Signature(params)
        return inspect.signature(target)
    except (TypeError, ValueError, AttributeError):
        return None


def _check_signature(function: Any, name: str) -> None:
    """Fail at register() (not at the first call, with an arity error counting a
    hidden argument) when the function does not take the user library first."""
    cls = function[0] if isinstance(function, tuple) else function
    if isinstance(cls, type):
        run = getattr(cls, "run", None)
        if not callable(run):
            raise InvalidArgument(
                f"class {cls.__name__} registered as {name!r} needs a method "
                "run(self, cloudburst, *args): each call runs it"
            )
        for what, meth in (("__init__", cls.__init__), ("run", run)):
            if meth is object.__init__:
                continue  # no __init__: built without the user library? it fails below
            got = _takes_user_library(meth, 1)
            if got is not None:
                raise InvalidArgument(
                    f"{cls.__name__}.{what} (registered as {name!r}) must take the user "
                    f"library after self: def {what}(self, cloudburst, ...); it takes "
                    f"{got} after self"
                )
        if cls.__init__ is object.__init__:
            raise InvalidArgument(
                f"class {cls.__name__} registered as {name!r} is built as "
                f"{cls.__name__}(cloudburst, *init_args): give it "
                "def __init__(self, cloudburst, ...)"
            )
        return
    got = _takes_user_library(function, 0)
    if got is not None:
        label = getattr(function, "__name__", name)
        raise InvalidArgument(
            f"function {label!r} (registered as {name!r}) must take the user library as "
            f"its first argument, e.g. def {label if label.isidentifier() else 'f'}"
            f"(cloudburst, ...); it takes {got}"
        )


def _default_scheduler_port() -> int:
    env = os.environ.get("CLOUDBURST_SCHEDULER__PORT")
    if env and env.isdigit():
        return int(env)
    return SchedulerConfig().port


def _has_references(arguments: dict[str, pb.Arguments]) -> bool:
    return any(
        arg.WhichOneof("kind") == "reference" for args in arguments.values() for arg in args.values
    )


__all__ = ["CloudburstConnection", "CloudburstFunction", "CloudburstFuture", "CloudburstReference"]
