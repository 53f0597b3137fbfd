"""The future a call returns: ``CloudburstFuture.get(timeout=None)``."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import weakref
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from cloudburst.shared import serializer, wire
from cloudburst.shared.errors import (
    CallCancelled,
    CloudburstException,
    CloudburstTimeoutError,
    ExecutorFailed,
    RemoteExecutionError,
)
from cloudburst.shared.proto import cloudburst_pb2 as pb

if TYPE_CHECKING:
    from cloudburst.client.client import CloudburstConnection

_UNSET: Any = object()
log = logging.getLogger(__name__)
#: A call whose executor died is sent again only with at least this much of the
#: caller's timeout left (a retry needs a scheduler round trip); with less, the
#: timeout error says "lost" and a later get()/wait() retries it.
RETRY_MIN_S = 0.5
_CALLBACK_LOCK = threading.Lock()


class CloudburstFuture:
    """The result of a call, to come.

    ``get()`` blocks (without polling in a loop: it waits on the client's socket) until
    the result arrives and returns it, or raises: the remote exception as a
    :class:`~cloudburst.shared.errors.RemoteExecutionError`, a platform error (unknown
    function, ...), :class:`~cloudburst.shared.errors.ExecutorFailed` if the executor
    running the call died and the retry failed too, or a
    :class:`~cloudburst.shared.errors.CloudburstTimeoutError` when ``timeout`` seconds
    passed. A future passed as an argument to another call stands for its result.

    A future refers to its connection weakly (no reference cycle keeps a dropped
    connection alive): once the result is here it stays readable, but waiting for one
    after the connection was closed or garbage-collected raises
    :class:`~cloudburst.shared.errors.CloudburstException` at once.

    >>> fut = cloud_sq(3)      # doctest: +SKIP
    >>> fut.get(timeout=5)     # doctest: +SKIP
    9
    """

    def __init__(
        self,
        conn: CloudburstConnection,
        request_id: str,
        key: str = "",
        schedule: pb.DagSchedule | None = None,
        resend: Any = None,
    ) -> None:
        self._conn_ref = weakref.ref(conn)
        self.request_id = request_id
        self._key = key
        # exec_func: the result comes back to the client only; it is stored under
        # ``obj_id`` (by this client) once someone needs it there (see ``obj_id``).
        self._lazy = False
        self._store_wanted = False
        self._stored = False
        self._schedule = schedule
        self._resend = resend
        self._retried = False
        self._value: Any = _UNSET
        self._error: BaseException | None = None
        self._awaiting_ack = False  # sent through the scheduler, acknowledgement not seen
        self._ack_error = False  # the scheduler refused the call
        #: What is called: ``fn:<name>`` or ``dag:<name>`` (for messages and repr).
        self.function = ""
        self._sent_at = time.monotonic()
        self._last_check = self._sent_at  # last liveness check of its executors
        self._callbacks: list[Callable[[CloudburstFuture], Any]] | None = []
        self._cancelled = False
        # Futures passed to this call as arguments (references to their results), and
        # whether the executor gave up waiting for one while it still runs.
        self._upstreams: list[CloudburstFuture] = []
        self._rearm = False
        self._output = ""  # what the call printed and logged (executor capture)
        self._output_shown = False
        # map(): the map's feeder while this call is in flight (counted down when it
        # resolves), and while it is not started yet (``_deferred``).
        self._feeder: Any = None
        self._deferred: Any = None

    @property
    def id(self) -> str:
        """The call's id: every executor log line about the call carries it."""
        return self.request_id

    def __repr__(self) -> str:
        fn = self.function.split(":", 1)[-1] or "?"
        return f"<CloudburstFuture {fn} id={self.request_id} state={self._state()}>"

    def _state(self) -> str:
        if self._cancelled:
            return "cancelled"
        if self._error is not None:
            return f"failed ({type(self._error).__name__})"
        if self._value is not _UNSET:
            return "done"
        if self._deferred is not None:
            return "pending (not started)"
        return "pending"

    def _finished(self) -> bool:
        return self._value is not _UNSET or self._error is not None

    def add_done_callback(self, fn: Callable[[CloudburstFuture], Any]) -> None:
        """Call ``fn(future)`` once the result (or error) is here. If it is already,
        ``fn`` runs now; otherwise it runs in the thread that receives the result,
        i.e. during a ``get()``, ``wait()``, ``as_completed()``, ``done()`` or
        ``progress()`` on the same connection (there is no background thread). An
        exception raised by ``fn`` is logged and ignored."""
        if self._callbacks is not None and not self._finished():
            self._callbacks.append(fn)
            return
        _run_callback(fn, self)

    def _fire_callbacks(self) -> None:
        """Run the done-callbacks once (never under the connection's locks)."""
        with _CALLBACK_LOCK:
            callbacks, self._callbacks = self._callbacks, None
        for fn in callbacks or ():
            _run_callback(fn, self)

    def cancel(self) -> bool:
        """Cancel the call, like ``concurrent.futures.Future.cancel``. False if the
        result is here already. Otherwise the future is marked cancelled (``get()``
        raises :class:`~cloudburst.shared.errors.CallCancelled`), its result is
        ignored if it still arrives, True is returned, and the cluster is told
        (one message to the scheduler, which passes it on to the call's executors):
        a call not started yet (queued behind others, waiting for an argument or an
        executor) is dropped; a running one is stopped (its worker exits and is
        replaced, as for a time limit). Best effort: a call that ends meanwhile has
        ended, and a result it stored in the KVS stays."""
        if self._finished():
            return False
        self._cancelled = True
        self._error = CallCancelled(f"call {self.request_id} ({self.function}) was cancelled")
        conn = self._conn_ref()
        if conn is not None:
            conn._resolved(self.request_id, self)
            if self.request_id:
                conn._send_cancel(self.request_id, self.executors)
        self._fire_callbacks()
        return True

    def logs(self) -> str:
        """What the call wrote to stdout/stderr and through ``logging`` (the sink's,
        for a DAG), once its result is here: ``""`` before, or if it printed
        nothing. Bounded by the executor (the last 64 KiB; truncation is marked)."""
        return self._output

    def _show_output(self) -> None:
        """In a notebook, print the call's output under the cell once (see
        ``CloudburstConnection(show_output=...)``)."""
        if self._output_shown or not self._output:
            return
        self._output_shown = True
        conn = self._conn_ref()
        if conn is not None and conn.show_output:
            text = self._output if self._output.endswith("\n") else self._output + "\n"
            sys.stdout.write(text)

    def cancelled(self) -> bool:
        return self._cancelled

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The error the call ended with (None if it succeeded); waits like get()."""
        try:
            self.get(timeout)
        except CloudburstTimeoutError:
            if not self._finished():
                raise
        except BaseException:  # noqa: BLE001 - the call's own error
            pass
        return self._error

    def __await__(self) -> Generator[Any, None, Any]:
        """``await future``: polls the socket without blocking the event loop (1 ms,
        doubling up to 50 ms), checking the call's executors every
        ``liveness_interval`` like ``get()``."""
        delay = 0.001
        last_check = time.monotonic()
        while not self.done():
            yield from asyncio.sleep(delay).__await__()
            delay = min(delay * 2, 0.05)
            conn = self._conn
            if time.monotonic() - last_check >= conn.liveness_interval:
                self._check_executors(min(1.0, conn.timeout))
                last_check = time.monotonic()
        return self.get(0)

    @property
    def obj_id(self) -> str:
        """KVS key of the result ('' if it is only sent to the client).

        For ``exec_func`` calls the result travels executor -> client only; reading
        ``obj_id`` (which passing a pending future to another call does) asks for it to
        be stored under this key too: at once if it has arrived, else as soon as it
        arrives (while this connection receives, e.g. in any ``get()``)."""
        if self._lazy and not self._store_wanted:
            self._store_wanted = True
            if self._value is not _UNSET:
                self._conn._store_result(self)
        return self._key

    @obj_id.setter
    def obj_id(self, key: str) -> None:
        self._key = key

    @property
    def _conn(self) -> CloudburstConnection:
        conn = self._conn_ref()
        if conn is None:
            raise CloudburstException(
                f"call {self.request_id}: its CloudburstConnection was garbage-collected "
                "before the result arrived (keep a reference to the connection while "
                "waiting for its futures)"
            )
        return conn

    @property
    def executors(self) -> list[str]:
        """Addresses of the executors the call was placed on (when known)."""
        return list(self._schedule.locations.values()) if self._schedule is not None else []

    def done(self) -> bool:
        """Whether the result (or error) is here, without blocking."""
        if self._value is _UNSET and self._error is None:
            conn = self._conn_ref()
            if conn is not None and not conn._closed:
                conn._poll_for(self, 0.0)
        return self._value is not _UNSET or self._error is not None

    def _learn_clock(self) -> None:
        """MULTI: the output's clock becomes the client's (its next call follows it).
        Called when the result comes and when call_dag has named the client (either
        may be first); merging twice is harmless."""
        client_id = getattr(self, "_client_id", "")
        clock = getattr(self, "_result_clock", None)
        conn = self._conn_ref()
        if client_id and clock and conn is not None:
            mine = conn._clocks.setdefault(client_id, {})
            for node, n in clock.items():
                mine[node] = max(mine.get(node, 0), n)

    def _set_message(self, msg: pb.ClientMessage) -> None:
        kind = msg.WhichOneof("kind")
        if kind == "result":
            res = msg.result
            self._output = res.output
            if res.success:
                self._value = serializer.from_value(res.value)
                if res.HasField("clock"):
                    self._result_clock = dict(res.clock.entries)
                    self._learn_clock()
            elif self._upstreams and _argument_wait_expired(res.error):
                # The executor parks a call for its argument's result only so long
                # (scheduler.call_timeout_s); the upstream call may still be running:
                # get() checks it and sends this call again (see _check_executors).
                self._rearm = True
            else:
                self._error = wire.exception_for(res.error)
                if res.output and isinstance(self._error, RemoteExecutionError):
                    self._error.output = res.output
        elif kind == "response":  # the scheduler's acknowledgement
            self._awaiting_ack = False
            resp = msg.response
            if not resp.success:
                self._error = wire.exception_for_code(resp.error, resp.message)
                self._ack_error = True
            elif resp.HasField("schedule"):
                self._schedule = resp.schedule

    def get(self, timeout: float | None = None) -> Any:
        """The call's result; see the class docstring for what it raises."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._value is _UNSET and self._error is None:
            conn = self._conn
            check_every = conn.liveness_interval
        while self._value is _UNSET and self._error is None:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise CloudburstTimeoutError(
                    f"call {self.request_id} ({self.function}) did not answer within "
                    f"{timeout}s: {self._where()}"
                )
            # Until the next liveness check (every liveness_interval, across get()s).
            until_check = max(0.0, self._last_check + check_every - now)
            wait = until_check if deadline is None else min(until_check, deadline - now)
            if conn._poll_for(self, wait):
                continue
            now = time.monotonic()
            if self._value is _UNSET and self._error is None:
                if now - self._last_check >= check_every:
                    self._last_check = now
                    left = None if deadline is None else deadline - now
                    self._check_executors(left)
        conn = self._conn_ref()
        if conn is not None:
            conn._resolved(self.request_id, self)  # idempotent bookkeeping
            conn._run_callbacks()
        if self._output and not isinstance(self._error, RemoteExecutionError):
            self._show_output()  # (a remote error's message carries the output's tail)
        if self._error is not None:
            raise self._error
        return self._value

    def _check_upstreams(self, timeout: float | None) -> None:
        """A call waiting for futures passed as its arguments waits as long as they
        run: an upstream whose executor died is retried (it stores its result under
        the same key), an upstream that failed fails this call, and when the executor
        gave up waiting (its park deadline) while the upstream still runs or just
        finished, this call is sent again."""
        for up in self._upstreams:
            if not up.done():
                up._check_executors(timeout)
            if up._error is not None:
                self._error = CloudburstException(
                    f"call {self.request_id} ({self.function}): its argument, the result "
                    f"of call {up.request_id} ({up.function}), failed: "
                    f"{type(up._error).__name__}: {up._error}"
                )
                self._rearm = False
                return
        if not self._rearm or self._resend is None:
            return
        if timeout is not None and timeout < RETRY_MIN_S:
            return  # sent again by a later wait with time for the acknowledgement
        self._rearm = False
        conn = self._conn
        old = self.request_id
        conn._drop_pending(old)
        log.info("call %s: its argument is still being computed; sending it again", old)
        try:
            again = self._resend([], timeout)
        except CloudburstException as exc:
            self._error = exc
            return
        self.request_id, self._schedule = again.request_id, again._schedule
        self._value, self._error = again._value, again._error
        self._sent_at = time.monotonic()
        if not self._finished():
            conn._pending[self.request_id] = self

    def _where(self) -> str:
        """Where the call is, as far as the scheduler's view of its executors tells
        (from their last heartbeats): queued, running (where, how long), or lost."""
        addresses = sorted(set(self.executors))
        feeder = self._deferred
        if feeder is not None:
            return (
                f"not started yet: map() keeps at most {feeder.limit} of its calls in "
                f"flight, and {feeder.in_flight} are; it starts when one of them finishes"
            )
        if not addresses:
            return "its placement is not known (the scheduler has not acknowledged it)"
        sent = time.monotonic() - self._sent_at
        conn = self._conn
        try:
            query = pb.StatusQuery(addresses=addresses)
            status = conn._request("status", query, timeout=min(1.0, conn.timeout)).status
        except CloudburstException:
            return (
                f"sent {sent:.1f}s ago to executor(s) {', '.join(addresses)}; the scheduler "
                "did not answer a status request, so whether it runs is unknown"
            )
        return describe_wait(self.request_id, addresses, status, sent)

    def _check_executors(self, timeout: float | None = None, dead: set[str] | None = None) -> None:
        """No result for a while: ask the scheduler whether our executors live (or use
        ``dead``, already asked for many futures); if one died, retry the call once
        elsewhere, or fail saying so."""
        if self._upstreams:
            self._check_upstreams(timeout)
            if self._finished():
                return
        addresses = self.executors
        if not addresses:
            return
        conn = self._conn
        if dead is None:
            dead = conn._dead_executors(addresses, timeout)
        else:
            dead = dead & set(addresses)
        if not dead:
            return
        if timeout is not None and timeout < RETRY_MIN_S and not self._retried:
            return  # no time for a retry in this wait: the timeout error says "lost"
        conn._forget_placement(dead)
        if self._retried or self._resend is None:
            self._error = ExecutorFailed(
                f"call {self.request_id}: executor(s) {sorted(dead)} died while running it"
                + (" (after one retry)" if self._retried else "")
                + f" ({conn._dead_reason})"
            )
            return
        self._retried = True
        old = self.request_id
        conn._drop_pending(old)
        try:
            retry = self._resend(sorted(dead), timeout)
        except CloudburstException as exc:
            self._error = ExecutorFailed(
                f"call {old}: executor(s) {sorted(dead)} died while running it "
                f"({conn._dead_reason}) and the retry could not start: {exc}"
            )
            return
        # This future takes the retry over (its result may even be here already).
        self.request_id, self._schedule = retry.request_id, retry._schedule
        self._value, self._error = retry._value, retry._error
        if self._lazy and self._store_wanted and self._value is not _UNSET:
            conn._store_result(self)
        if self._value is _UNSET and self._error is None:
            conn._pending[self.request_id] = self


def _argument_wait_expired(err: pb.RemoteError) -> bool:
    """The executor stopped waiting for a referenced result (executor/worker.py: its
    park limit, ``scheduler.call_timeout_s``), identified by its error code."""
    return err.error == pb.ARGUMENT_NOT_READY


def describe_wait(call_id: str, addresses: list[str], status: pb.ClusterStatus, sent: float) -> str:
    """Pure: what a call that has not answered is doing, from the scheduler's status
    of its executors (``addresses``) and the seconds since it was ``sent``."""
    dead = sorted(set(status.dead) & set(addresses))
    if dead:
        return (
            f"lost: executor(s) {', '.join(dead)} stopped heartbeating (dead); get() "
            "without a timeout retries the call once elsewhere"
        )
    infos = {e.address: e for e in status.executors if e.address in addresses}
    for address in addresses:
        info = infos.get(address)
        if info is not None and info.current_call == call_id:
            return f"running on executor {address} for {info.current_call_s:.1f}s"
    parts = []
    for address in addresses:
        info = infos.get(address)
        if info is None:
            parts.append(f"executor {address} is not in the scheduler's view")
        elif info.current_call:
            others = max(0, info.load - 1)
            parts.append(
                f"queued on executor {address} (sent {sent:.1f}s ago) behind the call "
                f"running there for {info.current_call_s:.1f}s ({info.current_call})"
                + (f" and about {others} more queued or just placed" if others else "")
            )
        else:
            parts.append(
                f"sent {sent:.1f}s ago to executor {address}, which is alive and idle: "
                "the call waits for an argument's result (a future passed to it), runs "
                "in another function of its DAG, or its result is on its way"
            )
    return "; ".join(parts)


def _run_callback(fn: Callable[[CloudburstFuture], Any], fut: CloudburstFuture) -> None:
    try:
        fn(fut)
    except Exception:
        log.exception("a done-callback of %r raised", fut)
