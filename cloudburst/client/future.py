"""The future a call returns: ``CloudburstFuture.get(timeout=None)``."""

from __future__ import annotations

import time
import weakref
from typing import TYPE_CHECKING, Any

from cloudburst.shared import serializer, wire
from cloudburst.shared.errors import CloudburstException, CloudburstTimeoutError, ExecutorFailed
from cloudburst.shared.proto import cloudburst_pb2 as pb

if TYPE_CHECKING:
    from cloudburst.client.client import CloudburstConnection

_UNSET: Any = object()


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
            self._conn._poll_for(self, 0.0)
        return self._value is not _UNSET or self._error is not None

    def _set_message(self, msg: pb.ClientMessage) -> None:
        kind = msg.WhichOneof("kind")
        if kind == "result":
            res = msg.result
            if res.success:
                self._value = serializer.from_value(res.value)
            else:
                self._error = wire.exception_for(res.error)
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
                    f"call {self.request_id} did not answer within {timeout}s" + self._waiting_on()
                )
            wait = check_every if deadline is None else min(check_every, deadline - now)
            if conn._poll_for(self, wait):
                continue
            if self._value is _UNSET and self._error is None:
                left = None if deadline is None else deadline - time.monotonic()
                self._check_executors(left)
        conn = self._conn_ref()
        if conn is not None:
            conn._resolved(self.request_id, self)  # idempotent bookkeeping
        if self._error is not None:
            raise self._error
        return self._value

    def _waiting_on(self) -> str:
        if self.executors:
            return f" (waiting on executor(s) {', '.join(sorted(set(self.executors)))})"
        return " (its placement is not known: the scheduler has not acknowledged it)"

    def _check_executors(self, timeout: float | None = None) -> None:
        """No result for a while: ask the scheduler whether our executors live; if one
        died, retry the call once elsewhere, or fail saying so."""
        addresses = self.executors
        if not addresses:
            return
        conn = self._conn
        dead = conn._dead_executors(addresses, timeout)
        if not dead:
            return
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
