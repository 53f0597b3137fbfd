"""Executor side of the original's DAG options (pure: no sockets)."""

from __future__ import annotations

from cloudburst.client.dags import dag_message
from cloudburst.shared.proto import cloudburst_pb2 as pb
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
