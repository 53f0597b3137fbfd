"""Worker pool elasticity on one executor node. Pure logic: no sockets, no clock.

The node (``executor.node``) feeds a :class:`Pool` what it sees and carries out the
actions :meth:`Pool.decide` returns:

- ``status(name, ...)``: a worker's heartbeat (workers heartbeat to their node too);
- ``spilled(call_id, data, now, deadline)``: a worker that has been running one call
  while another waited behind it for ``grow_after_s`` handed the waiting call back
  (``executor.worker``); it waits here for a free worker;
- ``started`` / ``exited``: what the node did to its worker processes; ``died``: a
  worker crashed (the handed-back calls it had not finished come back as :class:`Lost`,
  for the node to tell their callers at once).

Actions, in the order to carry them out:

- :class:`Dispatch`: send a waiting call to an idle worker (claimed until a status
  shows it completed one more call: workers send one whenever they fall idle);
- :class:`Start`: start ``count`` workers: calls wait, no worker is idle, and the
  pool is below ``max_workers`` (workers already starting count as coming capacity);
- :class:`Fail`: a waiting call reached its deadline; when the pool is at its maximum
  the message says so (never a silent wait);
- :class:`Retire`: a worker idle for ``idle_retire_s`` while the pool is above
  ``min_workers`` and no call waits (at most one per ``retire_every_s``: the pool
  shrinks gradually). A worker whose handed-back call still runs elsewhere stays:
  the caller watches the worker it sent the call to, and would take its exit for
  the call's failure.

>>> pool = Pool(PoolPolicy(min_workers=1, max_workers=2, idle_retire_s=10))
>>> pool.started("worker0", now=0.0)
>>> pool.status("worker0", "tcp://a:1", busy=True, queue=0, now=0.5)
>>> pool.spilled("c1", b"trigger", now=1.0, deadline=31.0)
>>> pool.decide(now=1.0)
[Start(count=1, reason='1 call(s) waiting, 0 worker(s) free, 0 starting')]
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, field

#: A worker not heard from for this long is not offered calls (it may be gone).
STALE_S = 3.0


def default_max_workers(workers: int, cores: int | None = None) -> int:
    """The pool's maximum when the config leaves it at 0: four workers per core, at
    least 16 (calls that wait on each other need one worker each), never below
    ``workers``."""
    cores = cores or os.cpu_count() or 1
    return max(workers, 16, 4 * cores)


@dataclass(frozen=True)
class PoolPolicy:
    min_workers: int = 3
    max_workers: int = 16
    #: a worker idle for this long is retired (above ``min_workers``)
    idle_retire_s: float = 30.0
    #: a worker that has not sent its first heartbeat within this counts as failed
    start_timeout_s: float = 30.0
    #: at most one retirement per this many seconds
    retire_every_s: float = 1.0

    def __post_init__(self) -> None:
        if self.min_workers < 1 or self.max_workers < self.min_workers:
            raise ValueError("need 1 <= min_workers <= max_workers")


@dataclass
class WorkerInfo:
    name: str
    started_at: float
    address: str = ""
    busy: bool = False
    queue: int = 0
    last_seen: float = float("-inf")
    idle_since: float | None = None
    completed: int = 0  # calls it completed, as of its last status
    claimed: int = 0  # free again once ``completed`` reaches this (a call was given to it)
    retiring: bool = False

    @property
    def starting(self) -> bool:
        return not self.address

    def free(self, now: float) -> bool:
        return (
            bool(self.address)
            and not self.retiring
            and not self.busy
            and self.queue == 0
            and self.completed >= self.claimed
            and now - self.last_seen <= STALE_S
        )


@dataclass(frozen=True)
class Dispatch:
    call_id: str
    data: bytes = field(repr=False)
    worker: str
    address: str


@dataclass(frozen=True)
class Start:
    count: int
    reason: str


@dataclass(frozen=True)
class Fail:
    call_id: str
    data: bytes = field(repr=False)
    at_maximum: bool
    message: str


@dataclass(frozen=True)
class Retire:
    worker: str
    reason: str


Action = Dispatch | Start | Fail | Retire


@dataclass
class _Waiting:
    data: bytes
    since: float
    deadline: float
    origin: str


@dataclass
class _Moved:
    origin: str  # the worker the caller thinks runs the call
    worker: str  # the worker that runs it
    at: float
    data: bytes = field(default=b"", repr=False)  # its trigger (to answer the caller)


@dataclass(frozen=True)
class Lost:
    """A handed-back call whose new worker died before it finished: the caller
    watches the worker the scheduler named (alive), so the node tells it."""

    call_id: str
    data: bytes = field(repr=False)
    worker: str
    message: str


class Pool:
    """The node's view of its workers and of the calls waiting for one."""

    def __init__(self, policy: PoolPolicy) -> None:
        self.policy = policy
        self.workers: dict[str, WorkerInfo] = {}
        self.waiting: OrderedDict[str, _Waiting] = OrderedDict()
        self.moved: dict[str, _Moved] = {}  # call id -> where a handed-back call went
        self.last_retire = float("-inf")

    # --- events ------------------------------------------------------------

    def started(self, name: str, now: float) -> None:
        self.workers[name] = WorkerInfo(name, started_at=now)

    def exited(self, name: str) -> None:
        """A worker is gone (retired, or exited and not to be restarted)."""
        self.workers.pop(name, None)
        for call_id, moved in list(self.moved.items()):
            if moved.worker == name:
                del self.moved[call_id]

    def died(self, name: str, reason: str, now: float) -> list[Lost]:
        """Worker ``name`` died (``reason``: its exit): the handed-back calls it was
        given and had not finished are lost; their callers are to be told."""
        lost = []
        for call_id, moved in list(self.moved.items()):
            if moved.worker == name:
                del self.moved[call_id]
                lost.append(
                    Lost(
                        call_id,
                        moved.data,
                        name,
                        f"the worker running this call died ({name} of its node, {reason}) "
                        f"{now - moved.at:.1f}s after the call was handed to it (it had "
                        f"waited behind a busy worker, {moved.origin}); the call did not "
                        "finish",
                    )
                )
        info = self.workers.get(name)
        if info is not None and not info.retiring:  # a new process takes the slot
            self.workers[name] = WorkerInfo(name, started_at=now)
        return lost

    def restarted(self, name: str, now: float) -> None:
        """The supervisor restarted a worker: it binds a new address."""
        info = self.workers.get(name)
        if info is not None and not info.retiring:
            self.workers[name] = WorkerInfo(name, started_at=now)

    def status(
        self,
        name: str,
        address: str,
        busy: bool,
        queue: int,
        now: float,
        leaving: bool = False,
        completed: int | None = None,
    ) -> None:
        info = self.workers.get(name)
        if info is None:
            return  # not ours (or retired meanwhile)
        if leaving:
            info.retiring = True
        info.address = address
        idle = not busy and queue == 0
        if idle and (info.idle_since is None or info.busy or info.queue):
            info.idle_since = now
        elif not idle:
            info.idle_since = None
        info.busy, info.queue, info.last_seen = busy, queue, now
        if completed is not None:
            info.completed = completed
        if idle and info.completed >= info.claimed:  # the calls handed to it are done
            for call_id, moved in list(self.moved.items()):
                if moved.worker == name:
                    del self.moved[call_id]

    def spilled(
        self, call_id: str, data: bytes, now: float, deadline: float, origin: str = ""
    ) -> None:
        """``origin`` handed back call ``call_id`` (its trigger ``data``)."""
        moved = self.moved.pop(call_id, None)  # handed back again: keep the first origin
        if moved is not None:
            origin = moved.origin
        if call_id not in self.waiting:
            self.waiting[call_id] = _Waiting(data, now, deadline, origin)

    # --- decisions ---------------------------------------------------------

    def size(self) -> int:
        return sum(1 for w in self.workers.values() if not w.retiring)

    def decide(self, now: float) -> list[Action]:
        actions: list[Action] = []
        # Dispatch the waiting calls, oldest first, to free workers.
        free = sorted(
            (w for w in self.workers.values() if w.free(now)),
            key=lambda w: (w.idle_since or 0.0, w.name),
        )
        for call_id in list(self.waiting):
            if not free:
                break
            worker = free.pop(0)
            wait = self.waiting.pop(call_id)
            worker.claimed = worker.completed + 1
            worker.idle_since = None
            if wait.origin:
                self.moved[call_id] = _Moved(wait.origin, worker.name, now, wait.data)
            actions.append(Dispatch(call_id, wait.data, worker.name, worker.address))
        size = self.size()
        at_max = size >= self.policy.max_workers
        # Refuse the calls whose deadline passed (the first ``starting`` ones wait for
        # the workers on their way, up to ``start_timeout_s`` longer).
        starting = self._starting()
        for position, (call_id, wait) in enumerate(list(self.waiting.items())):
            if now < wait.deadline:
                continue
            if position < starting and now < wait.deadline + self.policy.start_timeout_s:
                continue  # a starting worker will take it
            del self.waiting[call_id]
            waited = now - wait.since
            if at_max:
                msg = (
                    f"the cluster is at its maximum: all {size} workers of this node "
                    f"(executor.max_workers={self.policy.max_workers}) stayed busy; the call "
                    f"waited {waited:.1f}s for one and was not started"
                )
            else:
                msg = (
                    f"no worker became free within {waited:.1f}s ({size} workers, "
                    f"{self._starting()} starting; maximum {self.policy.max_workers}); "
                    "the call was not started"
                )
            actions.append(Fail(call_id, wait.data, at_max, msg))
        # Grow for the calls still waiting.
        starting = self._starting()
        need = len(self.waiting) - starting
        room = self.policy.max_workers - size
        if need > 0 and room > 0:
            count = min(need, room)
            reason = f"{len(self.waiting)} call(s) waiting, 0 worker(s) free, {starting} starting"
            actions.append(Start(count, reason))
        # Shrink: one idle worker at a time, never below the minimum, never while calls wait.
        if (
            not self.waiting
            and size > self.policy.min_workers
            and now - self.last_retire >= self.policy.retire_every_s
        ):
            pinned = {m.origin for m in self.moved.values()}
            idle = [
                w
                for w in self.workers.values()
                if w.free(now)
                and w.name not in pinned
                and w.idle_since is not None
                and now - w.idle_since >= self.policy.idle_retire_s
            ]
            if idle:
                # The most recently started first: the original workers stay.
                victim = max(idle, key=lambda w: (w.started_at, w.name))
                victim.retiring = True
                self.last_retire = now
                assert victim.idle_since is not None
                actions.append(
                    Retire(victim.name, f"idle for {now - victim.idle_since:.1f}s, pool {size}")
                )
        return actions

    def _starting(self) -> int:
        return sum(1 for w in self.workers.values() if w.starting and not w.retiring)

    def timed_out_starts(self, now: float) -> list[str]:
        """Workers that never heartbeated within ``start_timeout_s``."""
        return [
            w.name
            for w in self.workers.values()
            if w.starting and now - w.started_at > self.policy.start_timeout_s
        ]
