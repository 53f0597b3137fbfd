"""Scheduler logic of the original's DAG options: continuations, colocated groups,
GPU functions and batching homes (pure: no sockets)."""

from __future__ import annotations

import pytest

from cloudburst.client.dags import dag_message
from cloudburst.shared import serializer, wire
from cloudburst.shared.errors import InvalidArgument
from cloudburst.shared.proto import cloudburst_pb2 as pb
from scheduler.logic import (
    PlanError,
    SchedulerState,
    build_dag,
    continued_arguments,
    same_dag,
    validate_dag,
)
from scheduler.placement import ExecutorView, PlacementPolicy, place


def _args(*values: object) -> pb.Arguments:
    out = pb.Arguments()
    wire.encode_args(values, out)
    return out


def test_continuation_result_is_appended_to_each_source() -> None:
    dag = build_dag("d", ["a", "b", "c"], [("a", "c"), ("b", "c")])
    call = pb.DagCall(name="d", continued=True)
    call.function_args["a"].CopyFrom(_args("own"))
    call.continued_with.CopyFrom(_args(16))
    got = continued_arguments(dag, call)
    assert wire.decode_args(got["a"]) == ["own", 16]
    assert wire.decode_args(got["b"]) == [16]
    assert "c" not in got
    assert wire.decode_args(call.function_args["a"]) == ["own"]  # the request is unchanged


def test_a_plain_call_keeps_its_arguments() -> None:
    dag = build_dag("d", ["a"], [])
    call = pb.DagCall(name="d")
    call.function_args["a"].CopyFrom(_args(1))
    assert {k: wire.decode_args(v) for k, v in continued_arguments(dag, call).items()} == {"a": [1]}


# --- placement: GPU, colocated groups, batching homes --------------------------


def _views(spec: dict[str, tuple[str, bool]]) -> dict[str, ExecutorView]:
    """address -> (node, gpu)."""
    return {a: ExecutorView(a, node, last_seen=0.0, gpu=gpu) for a, (node, gpu) in spec.items()}


def test_gpu_functions_go_only_to_gpu_executors() -> None:
    views = _views({"a1": ("A", False), "a2": ("A", False), "b1": ("B", True)})
    for _ in range(5):
        got = place(views, ["pre", "model"], now=0.1, gpu={"model"})
        assert got is not None and got["model"] == "b1"
    assert place(_views({"a1": ("A", False)}), ["model"], now=0.1, gpu={"model"}) is None


def test_colocated_functions_share_a_node() -> None:
    views = _views({f"{n}{i}": (n, False) for n in "AB" for i in range(2)})
    for _ in range(6):  # whatever node the first lands on, the group follows it
        got = place(views, ["f", "g", "h"], now=0.1, colocated=[{"f", "g", "h"}])
        assert got is not None
        assert len({views[a].node_id for a in got.values()}) == 1
        assert len({got["f"], got["g"]}) == 2  # own workers while the node has them


def test_colocation_falls_back_when_its_node_has_no_candidate() -> None:
    views = _views({"a1": ("A", False), "b1": ("B", True)})
    got = place(views, ["f", "g"], now=0.1, gpu={"g"}, colocated=[{"f", "g"}])
    assert got == {"f": "a1", "g": "b1"} or got == {"f": "b1", "g": "b1"}
    got = place(views, ["f", "g"], now=0.1, colocated=[{"f", "g"}], exclude={"a1"})
    assert got == {"f": "b1", "g": "b1"}


def test_batching_function_calls_meet_on_one_executor() -> None:
    views = _views({f"a{i}": ("A", False) for i in range(3)})
    homes: dict[str, str] = {}
    seen = set()
    for i in range(6):
        got = place(views, ["b"], now=0.1 + i * 1e-3, batching={"b"}, homes=homes)
        assert got is not None
        seen.add(got["b"])
    assert len(seen) == 1 and homes == {"b": seen.pop()}
    # Its home dies (or is excluded): the next call finds a new one.
    old = homes["b"]
    got = place(views, ["b"], now=0.2, batching={"b"}, homes=homes, exclude={old})
    assert got is not None and got["b"] != old and homes["b"] == got["b"]


# --- planning and registration ------------------------------------------------


def _state(gpu: bool) -> SchedulerState:
    state = SchedulerState(PlacementPolicy(heartbeat_timeout=10.0))
    state.on_heartbeat(pb.ExecutorStatus(address="tcp://x:1", node_id="n", pid=1, gpu=gpu), 0.0)
    return state


def test_a_gpu_function_without_gpu_executor_is_a_clear_error() -> None:
    dag = dag_message("d", ["model"], [], gpu_functions=["model"])
    with pytest.raises(PlanError) as err:
        _state(False).plan(dag, {}, 0.1, request_id="r", response_address="")
    assert err.value.code == pb.NO_RESOURCES
    assert "GPU" in err.value.message and "executor.gpu: true" in err.value.message
    schedule, _ = _state(True).plan(dag, {}, 0.1, request_id="r", response_address="")
    assert schedule.locations["model"] == "tcp://x:1"


def test_options_must_name_functions_of_the_dag() -> None:
    for kw in (
        {"gpu_functions": ["zz"]},
        {"batching_functions": ["zz"]},
        {"colocated": ["f", "zz"]},
    ):
        with pytest.raises(PlanError, match="zz"):
            validate_dag(dag_message("d", ["f"], [], **kw), {"f"})  # type: ignore[arg-type]
    validate_dag(dag_message("d", ["f", ("g", [None])], [("f", "g")]), {"f", "g"})


def test_dag_message_forms() -> None:
    dag = dag_message("d", ["f", ("g", [None, 0])], [("f", "g")], colocated=[["f"], ["g"]])
    assert [list(g.functions) for g in dag.colocated] == [["f"], ["g"]]
    assert [serializer.from_value(v) for v in dag.multiexec["g"].values] == [None, 0]
    with pytest.raises(InvalidArgument):
        dag_message("d", [("g", [1], 2)], [])
    with pytest.raises(InvalidArgument):
        dag_message("d", ["f"], [], gpu_functions=[1])  # type: ignore[list-item]


def test_options_are_part_of_a_registration() -> None:
    base = dag_message("d", ["f", "g"], [("f", "g")])
    assert same_dag(base, dag_message("d", ["g", "f"], [("f", "g")]))
    for kw in ({"gpu_functions": ["g"]}, {"batching_functions": ["g"]}, {"colocated": ["f", "g"]}):
        assert not same_dag(base, dag_message("d", ["f", "g"], [("f", "g")], **kw))  # type: ignore[arg-type]
    assert not same_dag(base, dag_message("d", ["f", ("g", [None])], [("f", "g")]))


def test_a_colocated_group_starts_on_a_node_with_room_for_it() -> None:
    views = _views({"a1": ("A", False), **{f"b{i}": ("B", False) for i in range(3)}})
    views["b0"].last_assigned = 5.0  # round robin would start on a1
    got = place(views, ["f", "g", "h"], now=0.1, colocated=[{"f", "g", "h"}])
    assert got is not None and sorted(got.values()) == ["b0", "b1", "b2"]
