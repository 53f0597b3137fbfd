"""Many futures at once: ``wait``, ``as_completed``, ``progress`` (like
``concurrent.futures`` and Dask).

The futures may come from several connections. Waiting receives on each connection's
socket (no polling loop of ``done()``), hands every arriving result to its future and
checks the executors of the still-pending calls every ``liveness_interval`` with one
status request per connection (not one per future), retrying a call whose executor
died like ``get()`` does.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from cloudburst.client.future import _UNSET, CloudburstFuture
from cloudburst.shared.errors import CloudburstException, CloudburstTimeoutError

FIRST_COMPLETED = "FIRST_COMPLETED"
FIRST_EXCEPTION = "FIRST_EXCEPTION"
ALL_COMPLETED = "ALL_COMPLETED"


class DoneAndNotDone(NamedTuple):
    done: set[CloudburstFuture]
    not_done: set[CloudburstFuture]


def _pump(pending: list[CloudburstFuture], wait: float, stop: Any) -> None:
    """Receive for at most ``wait`` seconds on the connections of ``pending`` (until
    ``stop()``), checking executors' liveness every ``liveness_interval``."""
    conns: dict[int, Any] = {}
    for fut in pending:
        conn = fut._conn_ref()
        if conn is None or conn._closed:
            # Nothing can arrive any more: it ends with the error get() would raise.
            fut._error = CloudburstException(
                f"call {fut.request_id}: its CloudburstConnection was closed or "
                "garbage-collected before the result arrived"
            )
            continue
        conns.setdefault(id(conn), conn)
    if not conns:
        return
    each = wait if len(conns) == 1 else min(wait, 0.01)
    for conn in conns.values():
        conn._wait_until(stop, each)
        conn._run_callbacks()


def _check_liveness(pending: list[CloudburstFuture], timeout: float | None) -> None:
    by_conn: dict[int, tuple[Any, list[CloudburstFuture]]] = {}
    for fut in pending:
        conn = fut._conn_ref()
        if conn is not None and not fut._finished() and (fut.executors or fut._upstreams):
            by_conn.setdefault(id(conn), (conn, []))[1].append(fut)
    for conn, futs in by_conn.values():
        addresses = sorted({a for f in futs for a in f.executors})
        dead = conn._dead_executors(addresses, timeout) if addresses else set()
        for fut in futs:
            if dead or fut._upstreams:
                fut._check_executors(timeout, dead=dead)
                if fut._finished():
                    conn._resolved(fut.request_id, fut)
        conn._run_callbacks()


def _errored(fut: CloudburstFuture) -> bool:
    return fut._error is not None


def wait(
    futures: Iterable[CloudburstFuture],
    timeout: float | None = None,
    return_when: str = ALL_COMPLETED,
) -> DoneAndNotDone:
    """Wait for ``futures`` like ``concurrent.futures.wait``: returns ``(done,
    not_done)`` sets when ``return_when`` is met (``ALL_COMPLETED``,
    ``FIRST_COMPLETED``, ``FIRST_EXCEPTION``) or ``timeout`` seconds passed (no
    exception on timeout: look at ``not_done``). It never raises a call's error:
    ``get()`` the done futures for their results."""
    if return_when not in (ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION):
        raise ValueError(f"unknown return_when {return_when!r}")
    futs = list(dict.fromkeys(futures))
    deadline = None if timeout is None else time.monotonic() + timeout
    pending = []
    conns: dict[int, Any] = {}
    for fut in futs:
        if not fut._finished():
            pending.append(fut)
            conn = fut._conn_ref()
            if conn is not None:
                conns[id(conn)] = conn
    # Pending futures in reverse order: results tend to arrive in call order, so the
    # check below pops finished ones from the end and stops at the first pending one.
    pending.reverse()

    hit = False  # a FIRST_* condition was met (met() pops what it saw)

    def met() -> bool:
        nonlocal hit
        if hit:
            return True
        while pending and pending[-1]._finished():
            fut = pending.pop()
            if return_when == FIRST_COMPLETED or (return_when == FIRST_EXCEPTION and _errored(fut)):
                hit = True
                return True
        if not pending:
            return True
        if return_when == ALL_COMPLETED:
            return False
        # Out of order: scan (only for FIRST_*).
        for i, fut in enumerate(pending):
            if fut._finished():
                del pending[i]
                if return_when == FIRST_COMPLETED or _errored(fut):
                    hit = True
                    return True
                return met()
        return False

    if return_when != ALL_COMPLETED:
        initially_done = [f for f in futs if f._finished()]
        if initially_done and (
            return_when == FIRST_COMPLETED
            or (return_when == FIRST_EXCEPTION and any(map(_errored, initially_done)))
        ):
            return _split(futs, conns)
    check_every = min((c.liveness_interval for c in conns.values()), default=1.0)
    next_check = time.monotonic() + check_every
    while not met():
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            break
        slice_end = next_check if deadline is None else min(next_check, deadline)
        _pump(pending, max(0.0, slice_end - now), met)
        now = time.monotonic()
        if now >= next_check and pending:
            left = None if deadline is None else max(0.05, deadline - now)
            _check_liveness(pending, left)
            next_check = time.monotonic() + check_every
    return _split(futs, conns)


def _split(futs: list[CloudburstFuture], conns: dict[int, Any]) -> DoneAndNotDone:
    """``(done, not_done)``, in one pass that also does the bookkeeping of futures
    finished but still registered with their connection (the receiver resolved the
    others already: a dict lookup each, the lock only when needed)."""
    done: set[CloudburstFuture] = set()
    not_done: set[CloudburstFuture] = set()
    registries = [c._pending for c in conns.values()]
    for fut in futs:
        if fut._value is _UNSET and fut._error is None:
            not_done.add(fut)
            continue
        done.add(fut)
        rid = fut.request_id
        for registered in registries:
            if rid in registered:
                conn = fut._conn_ref()
                if conn is not None:
                    conn._resolved(rid, fut)
    return DoneAndNotDone(done, not_done)


def as_completed(
    futures: Iterable[CloudburstFuture], timeout: float | None = None
) -> Iterator[CloudburstFuture]:
    """Yield ``futures`` as they complete (succeeded or failed), like
    ``concurrent.futures.as_completed``; raises :class:`CloudburstTimeoutError` if
    ``timeout`` seconds (from the call) pass before all are yielded."""
    deadline = None if timeout is None else time.monotonic() + timeout
    pending = list(dict.fromkeys(futures))
    while pending:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise CloudburstTimeoutError(
                f"{len(pending)} of the futures did not complete within {timeout}s"
            )
        done, _ = wait(pending, left, FIRST_COMPLETED)
        still = []
        for fut in pending:
            if fut in done:
                yield fut
            else:
                still.append(fut)
        pending = still


def progress(
    futures: Iterable[CloudburstFuture], timeout: float | None = None, **tqdm_kwargs: Any
) -> list[CloudburstFuture]:
    """Show a progress bar (``tqdm.auto``: a widget in Jupyter, text elsewhere) while
    ``futures`` complete; returns the futures, all done (unless ``timeout`` passed,
    which raises :class:`CloudburstTimeoutError`). Extra keyword arguments go to
    tqdm (``desc=``, ``disable=``...)."""
    from tqdm.auto import tqdm

    futs = list(futures)
    tqdm_kwargs.setdefault("desc", "calls")
    with tqdm(total=len(futs), **tqdm_kwargs) as bar:
        failed = 0
        for fut in as_completed(futs, timeout):
            if fut._error is not None:
                failed += 1
                bar.set_postfix(failed=failed)
            bar.update(1)
    return futs


__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "as_completed",
    "progress",
    "wait",
]
