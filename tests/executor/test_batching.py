"""Batching functions' bookkeeping (executor/batching.py): pure, no sockets."""

from __future__ import annotations

import numpy as np
import pytest

from cloudburst.shared import wire
from cloudburst.shared.proto import cloudburst_pb2 as pb
from executor.batching import BatchBook, arity, split_results, transpose
from executor.triggers import Run


def _run(call: str, *args: object, fn: str = "f") -> Run:
    sched = pb.DagSchedule(id=call)
    wire.encode_args(args, sched.arguments[fn])
    return Run(sched, fn, [])


def test_a_batch_runs_when_full() -> None:
    book = BatchBook(max_size=3, max_wait=10.0)
    assert book.add(_run("a", 1), 0.0) is None
    assert book.add(_run("b", 2), 0.1) is None
    assert len(book) == 2
    batch = book.add(_run("c", 3), 0.2)
    assert batch is not None and [r.schedule.id for r in batch] == ["a", "b", "c"]
    assert len(book) == 0 and book.next_due() == float("inf")


def test_a_batch_runs_when_its_oldest_call_waited_long_enough() -> None:
    book = BatchBook(max_size=10, max_wait=0.5)
    book.add(_run("a", 1), 1.0)
    book.add(_run("b", 2), 1.3)
    assert book.next_due() == 1.5
    assert book.due(1.49) == []
    due = book.due(1.5)
    assert [[r.schedule.id for r in b] for b in due] == [["a", "b"]]
    assert len(book) == 0


def test_calls_of_other_functions_or_arities_do_not_share_a_batch() -> None:
    book = BatchBook(max_size=2, max_wait=1.0)
    assert book.add(_run("a", 1), 0.0) is None
    assert book.add(_run("b", 1, 2), 0.0) is None  # two arguments
    assert book.add(_run("c", 1, fn="g"), 0.0) is None
    batch = book.add(_run("d", 5), 0.0)
    assert batch is not None and [r.schedule.id for r in batch] == ["a", "d"]
    up = pb.Arguments()
    wire.encode_args([7, 8], up)
    assert arity(Run(_run("e", 1).schedule, "f", [up])) == 3


def test_arguments_are_transposed_and_results_split() -> None:
    assert transpose([[1, "a"], [2, "b"], [3, "c"]]) == [[1, 2, 3], ["a", "b", "c"]]
    with pytest.raises(ValueError):
        transpose([[1], [1, 2]])
    assert split_results("f", [1, 2], 2) == [1, 2]
    assert split_results("f", (1, 2), 2) == [1, 2]
    parts = split_results("f", np.arange(6).reshape(3, 2), 3)
    assert [p.tolist() for p in parts] == [[0, 1], [2, 3], [4, 5]]
    with pytest.raises(ValueError, match="returned 1 results for a batch of 2"):
        split_results("f", [1], 2)
    with pytest.raises(ValueError, match="returned a str"):
        split_results("f", "ab", 2)
    with pytest.raises(ValueError, match="returned a int"):
        split_results("f", 3, 1)
