"""Executor side of the original's DAG options (pure: no sockets)."""

from __future__ import annotations

import numpy as np

from cloudburst.client.dags import dag_message
from cloudburst.shared.proto import cloudburst_pb2 as pb
from executor.triggers import Run, TriggerBook, is_invalid
from executor.worker import _inline_next


def _sched(**options: object) -> pb.DagSchedule:
    functions = options.pop("functions", ["a", "b"])
    dag = dag_message("d", functions, [("a", "b")], **options)  # type: ignore[arg-type]
    return pb.DagSchedule(id="i", dag=dag)


def test_chain_links_are_not_run_in_place_against_the_dag_options() -> None:
    assert _inline_next(_sched(), "a", ["b"]) == "b"
    # A GPU function runs in place only on a worker that has a GPU.
    assert _inline_next(_sched(gpu_functions=["b"]), "a", ["b"]) is None
    assert _inline_next(_sched(gpu_functions=["b"]), "a", ["b"], gpu=True) == "b"
    assert _inline_next(_sched(batching_functions=["b"]), "a", ["b"]) is None
    assert _inline_next(_sched(functions=["a", ("b", [None])]), "a", ["b"]) is None
    # Into a colocated group only from inside it.
    assert _inline_next(_sched(colocated=[["b"]]), "a", ["b"]) is None
    assert _inline_next(_sched(colocated=["a", "b"]), "a", ["b"]) == "b"
    assert _inline_next(_sched(colocated=[["a"]]), "a", ["b"]) == "b"


# --- MULTIEXEC --------------------------------------------------------------------


def _trigger(sched: pb.DagSchedule, source: str, fn: str = "m") -> pb.DagTrigger:
    return pb.DagTrigger(schedule=sched, source=source, target_function=fn)


def test_multiexec_runs_on_every_trigger_until_a_valid_result() -> None:
    dag = dag_message("d", ["a", "b", ("m", [None])], [("a", "m"), ("b", "m")])
    sched = pb.DagSchedule(id="c", dag=dag)
    book = TriggerBook(ttl=10.0)
    run = book.add(_trigger(sched, "b"), 0.0)
    assert isinstance(run, Run) and run.function == "m" and len(run.upstream) == 1
    assert book.multiexec_result(sched, "m", False, 0.1) == "drop"
    assert isinstance(book.add(_trigger(sched, "a"), 0.2), Run)
    assert book.multiexec_result(sched, "m", True, 0.3) == "continue"
    assert len(book) == 0  # nothing waits: each trigger ran on its own


def test_multiexec_later_results_are_dropped() -> None:
    dag = dag_message("d", ["a", "b", ("m", [None])], [("a", "m"), ("b", "m")])
    sched = pb.DagSchedule(id="c", dag=dag)
    book = TriggerBook(ttl=10.0)
    assert isinstance(book.add(_trigger(sched, "a"), 0.0), Run)
    assert book.multiexec_result(sched, "m", True, 0.1) == "continue"
    assert book.add(_trigger(sched, "b"), 0.2) is None  # settled: not even run
    assert book.multiexec_result(sched, "m", True, 0.3) == "drop"
    book.expire(100.0)
    assert not book.settled and not book.invalid


def test_multiexec_all_invalid_is_exhausted() -> None:
    dag = dag_message("d", ["a", "b", ("m", [None])], [("a", "m"), ("b", "m")])
    sched = pb.DagSchedule(id="c", dag=dag)
    book = TriggerBook(ttl=10.0)
    assert book.multiexec_result(sched, "m", False, 0.0) == "drop"
    assert book.multiexec_result(sched, "m", False, 0.1) == "exhausted"
    assert book.add(_trigger(sched, "a"), 0.2) is None


def test_invalid_results_compare_by_type_and_value() -> None:
    assert is_invalid(None, [None]) and is_invalid("x", [None, "x"])
    assert not is_invalid(0, [False]) and not is_invalid(0.0, [0])
    assert is_invalid(np.zeros(3), [np.zeros(3)]) and not is_invalid(np.ones(3), [np.zeros(3)])
    assert not is_invalid([1], []) and is_invalid({"a": 1}, [{"a": 1}])


def test_a_failed_multiexec_run_ends_the_race() -> None:
    dag = dag_message("d", ["a", "b", ("m", [None])], [("a", "m"), ("b", "m")])
    sched = pb.DagSchedule(id="c", dag=dag)
    book = TriggerBook(ttl=10.0)
    assert isinstance(book.add(_trigger(sched, "a"), 0.0), Run)
    book.settle("c", "m", 0.1)  # the run raised: the call failed
    assert book.add(_trigger(sched, "b"), 0.2) is None
