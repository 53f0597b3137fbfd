"""Batching functions (``register_dag(..., batching_functions=[...])``): pending calls
of one function wait on their worker to run together. Pure logic: no sockets, no clock.

A batching function is called once for a batch, with one list per argument (the i-th
element from the i-th call) and returns one result per call, in order (the original's
prediction-serving batching). A batch runs when it holds ``max_size`` calls or its
oldest call has waited ``max_wait`` seconds (``executor.batch_max_size`` and
``executor.batch_max_wait_s``). Calls with different numbers of arguments do not share
a batch.

>>> from cloudburst.shared.proto import cloudburst_pb2 as pb
>>> from executor.triggers import Run
>>> book = BatchBook(max_size=2, max_wait=0.01)
>>> run = Run(pb.DagSchedule(id="a"), "f", [])
>>> book.add(run, now=0.0) is None, len(book.add(run, now=0.001) or [])
(True, 2)
>>> transpose([[1, "x"], [2, "y"]])
[[1, 2], ['x', 'y']]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from executor.triggers import Run


def arity(run: Run) -> int:
    """How many arguments the call passes: its own, then its upstream results."""
    own = run.schedule.arguments.get(run.function)
    return (len(own.values) if own is not None else 0) + sum(len(u.values) for u in run.upstream)


@dataclass
class BatchBook:
    """Calls of batching functions waiting to run, per ``(function, arity)``."""

    max_size: int = 16
    max_wait: float = 0.01
    queues: dict[tuple[str, int], list[tuple[Run, float]]] = field(default_factory=dict)

    def __len__(self) -> int:
        return sum(len(q) for q in self.queues.values())

    def add(self, run: Run, now: float) -> list[Run] | None:
        """Queue a call; returns a full batch to run now, if this call filled one."""
        key = (run.function, arity(run))
        queue = self.queues.setdefault(key, [])
        queue.append((run, now))
        if len(queue) < max(1, self.max_size):
            return None
        del self.queues[key]
        return [r for r, _ in queue]

    def due(self, now: float) -> list[list[Run]]:
        """The batches whose oldest call waited ``max_wait`` (removed from the book)."""
        out = []
        for key in [k for k, q in self.queues.items() if now - q[0][1] >= self.max_wait]:
            out.append([r for r, _ in self.queues.pop(key)])
        return out

    def next_due(self) -> float:
        """When the next batch is due (``inf`` if none waits)."""
        return min((q[0][1] + self.max_wait for q in self.queues.values()), default=float("inf"))


def transpose(calls: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """The arguments of a batch: one list per argument position."""
    width = len(calls[0]) if calls else 0
    if any(len(c) != width for c in calls):
        raise ValueError("the calls of a batch have different numbers of arguments")
    return [[c[i] for c in calls] for i in range(width)]


def split_results(function: str, result: Any, count: int) -> list[Any]:
    """One result per call of the batch (a list, a tuple, or anything iterable such as
    an array, split along its first axis), or ``ValueError`` saying what was wrong."""
    wrong = ValueError(
        f"batching function {function!r} returned a {type(result).__name__}; it must "
        f"return a list with one result per call, in order ({count} calls)"
    )
    if isinstance(result, str | bytes | dict):
        raise wrong
    if not isinstance(result, Sequence):
        try:
            result = list(result)
        except TypeError:
            raise wrong from None
    if len(result) != count:
        raise ValueError(
            f"batching function {function!r} returned {len(result)} results for a batch of "
            f"{count} calls; it must return one result per call, in order"
        )
    return list(result)
