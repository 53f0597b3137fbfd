"""Trigger bookkeeping of an executor worker. Pure logic: no sockets, no clock.

A function of a DAG runs when a trigger has arrived from each of its upstream
functions (a source runs on its first trigger). :class:`TriggerBook` collects the
triggers of each ``(invocation id, function)`` and says when to run, with the
upstream results in the order of the DAG's connections (not arrival order).

>>> from cloudburst.shared.proto import cloudburst_pb2 as pb
>>> sched = pb.DagSchedule(id="c1", dag=pb.Dag(name="d", functions=["f"]))
>>> book = TriggerBook(ttl=30.0)
>>> action = book.add(pb.DagTrigger(schedule=sched, target_function="f"), now=0.0)
>>> type(action).__name__, action.function
('Run', 'f')
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cloudburst.shared import serializer
from cloudburst.shared.proto import cloudburst_pb2 as pb


class InvalidTrigger(ValueError):
    """A trigger that does not fit its own schedule."""


@dataclass(frozen=True)
class Run:
    """Run ``function`` with its own arguments then the upstream results, in order."""

    schedule: pb.DagSchedule
    function: str
    upstream: list[pb.Arguments]
    #: SINGLE/MULTI: the upstream read sets (executor/session.py), in connection order.
    sessions: list[pb.CallSession] = field(default_factory=list)


@dataclass(frozen=True)
class Cancel:
    """An upstream failed: the call is over; tell ``function``'s downstreams."""

    schedule: pb.DagSchedule
    function: str
    error: pb.RemoteError


def upstreams(dag: pb.Dag, function: str) -> list[str]:
    """Functions feeding ``function``, in connection order."""
    return [link.source for link in dag.connections if link.sink == function]


def downstreams(dag: pb.Dag, function: str) -> list[str]:
    """Functions ``function`` feeds, in connection order, each once."""
    out: list[str] = []
    for link in dag.connections:
        if link.source == function and link.sink not in out:
            out.append(link.sink)
    return out


@dataclass
class _Pending:
    schedule: pb.DagSchedule
    created: float
    args: dict[str, pb.Arguments] = field(default_factory=dict)
    sessions: dict[str, pb.CallSession] = field(default_factory=dict)


@dataclass
class TriggerBook:
    """Triggers waiting for the rest of their function's inputs."""

    ttl: float = 60.0
    pending: dict[tuple[str, str], _Pending] = field(default_factory=dict)
    cancelled: dict[tuple[str, str], float] = field(default_factory=dict)
    #: MULTIEXEC functions: (call, function) -> (invalid results so far, first seen),
    #: and those settled (a valid result continued, or all were invalid) -> when
    invalid: dict[tuple[str, str], tuple[int, float]] = field(default_factory=dict)
    settled: dict[tuple[str, str], float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.pending)

    def add(self, trigger: pb.DagTrigger, now: float) -> Run | Cancel | None:
        """Record a trigger; returns what to do now, if anything."""
        sched = trigger.schedule
        fn = trigger.target_function
        if not sched.id:
            raise InvalidTrigger("trigger without an invocation id")
        if fn not in sched.dag.functions:
            raise InvalidTrigger(f"trigger for {fn!r}, not a function of DAG {sched.dag.name!r}")
        key = (sched.id, fn)
        if trigger.HasField("error"):
            self.pending.pop(key, None)
            if key in self.cancelled:
                return None  # already cancelled through another upstream
            self.cancelled[key] = now
            return Cancel(sched, fn, trigger.error)
        if key in self.cancelled:
            return None
        ups = upstreams(sched.dag, fn)
        if fn in sched.dag.multiexec:
            # MULTIEXEC: run on every trigger as it comes, until a valid result won.
            if key in self.settled:
                return None
            if ups and trigger.source not in ups:
                raise InvalidTrigger(f"{fn!r} got a trigger from {trigger.source!r}, not {ups}")
            sessions = [trigger.session] if trigger.HasField("session") else []
            return Run(sched, fn, [trigger.arguments] if ups else [], sessions)
        if not ups:
            if trigger.source:
                raise InvalidTrigger(
                    f"{fn!r} is a source but got a trigger from {trigger.source!r}"
                )
            return Run(sched, fn, [])
        if trigger.source not in ups:
            raise InvalidTrigger(
                f"{fn!r} got a trigger from {trigger.source!r}, which is not upstream of it ({ups})"
            )
        entry = self.pending.get(key)
        if entry is None:
            entry = self.pending[key] = _Pending(sched, now)
        entry.args[trigger.source] = trigger.arguments
        if trigger.HasField("session"):
            entry.sessions[trigger.source] = trigger.session
        if len(entry.args) < len(set(ups)):
            return None
        del self.pending[key]
        sessions = [entry.sessions[src] for src in dict.fromkeys(ups) if src in entry.sessions]
        return Run(sched, fn, [entry.args[src] for src in ups], sessions)

    def multiexec_result(self, sched: pb.DagSchedule, fn: str, valid: bool, now: float) -> str:
        """A run of MULTIEXEC ``fn`` ended: ``"continue"`` for the first valid result,
        ``"drop"`` for an invalid one (or any after the first valid one), and
        ``"exhausted"`` when every upstream's result was invalid (the call fails)."""
        key = (sched.id, fn)
        if key in self.settled:
            return "drop"
        if valid:
            self.invalid.pop(key, None)
            self.settled[key] = now
            return "continue"
        count, first = self.invalid.get(key, (0, now))
        if count + 1 >= max(1, len(set(upstreams(sched.dag, fn)))):
            self.invalid.pop(key, None)
            self.settled[key] = now
            return "exhausted"
        self.invalid[key] = (count + 1, first)
        return "drop"

    def settle(self, call_id: str, fn: str, now: float) -> None:
        """MULTIEXEC ``fn`` of the call is done with (it failed): drop later triggers."""
        self.invalid.pop((call_id, fn), None)
        self.settled[(call_id, fn)] = now

    def expire(self, now: float) -> list[tuple[str, str]]:
        """Drop entries older than ``ttl`` (an upstream never came); returns their keys."""
        return [(e.schedule.id, fn) for e, fn, _ in self.expire_calls(now)]

    def expire_calls(self, now: float) -> list[tuple[_Pending, str, list[str]]]:
        """Like :meth:`expire`, with each dropped entry, its function and the upstream
        functions whose results never came (so the caller can be told)."""
        old = [k for k, p in self.pending.items() if now - p.created > self.ttl]
        out = []
        for k in old:
            entry = self.pending.pop(k)
            ups = upstreams(entry.schedule.dag, k[1])
            out.append((entry, k[1], [u for u in dict.fromkeys(ups) if u not in entry.args]))
        for k in [k for k, t in self.cancelled.items() if now - t > self.ttl]:
            del self.cancelled[k]
        for k in [k for k, t in self.settled.items() if now - t > self.ttl]:
            del self.settled[k]
        for k in [k for k, (_, t) in self.invalid.items() if now - t > self.ttl]:
            del self.invalid[k]
        return out


def is_invalid(result: Any, invalids: Iterable[Any]) -> bool:
    """Whether a MULTIEXEC result equals one of its invalid results: the same type and
    ``==`` (so ``0`` is not ``False``), or the same serialized bytes where ``==`` does
    not give a truth value (arrays)."""
    for bad in invalids:
        if result is bad:
            return True
        if type(result) is not type(bad):
            continue
        try:
            if bool(result == bad):
                return True
        except Exception:
            try:
                if serializer.dumps(result) == serializer.dumps(bad):
                    return True
            except Exception:
                continue
    return False


def forward_schedule(schedule: pb.DagSchedule, done: Iterable[str]) -> pb.DagSchedule:
    """The schedule to send downstream: without the arguments of functions that ran
    (a large argument of a source is not copied along the whole DAG)."""
    out = pb.DagSchedule()
    out.CopyFrom(schedule)
    for fn in done:
        if fn in out.arguments:
            del out.arguments[fn]
    return out


@dataclass
class CancelBook:
    """Call ids their callers cancelled (``CallCancel``), remembered ``ttl`` seconds so
    a trigger arriving after the cancel (queued behind other calls, or sent directly
    by the client while the cancel went through the scheduler) is dropped.

    >>> book = CancelBook(ttl=10.0)
    >>> book.add("c1", now=0.0)
    True
    >>> "c1" in book, book.add("c1", now=1.0), "c2" in book
    (True, False, False)
    >>> book.prune(now=20.0); "c1" in book
    False
    """

    ttl: float = 300.0
    limit: int = 100_000
    ids: dict[str, float] = field(default_factory=dict)

    def __contains__(self, call_id: object) -> bool:
        return call_id in self.ids

    def add(self, call_id: str, now: float) -> bool:
        """Record a cancel; False if it was known already."""
        if call_id in self.ids:
            return False
        self.ids[call_id] = now
        if len(self.ids) > self.limit:
            self.prune(now)
        return True

    def prune(self, now: float) -> None:
        old = [k for k, t in self.ids.items() if now - t > self.ttl]
        for k in old:
            del self.ids[k]
        while len(self.ids) > self.limit:  # (oldest first: insertion order)
            del self.ids[next(iter(self.ids))]
