"""Scheduler state machine: DAG validation, heartbeats, planning."""

from __future__ import annotations

import pytest

from cloudburst.shared.proto import cloudburst_pb2 as pb
from scheduler.logic import PlanError, SchedulerState, build_dag, sources, validate_dag
from scheduler.placement import PlacementPolicy


def test_valid_dag_passes() -> None:
    dag = build_dag("d", ["a", "b", "c"], [("a", "c"), ("b", "c")])
    validate_dag(dag, {"a", "b", "c"})
    assert sources(dag) == ["a", "b"]


@pytest.mark.parametrize(
    ("functions", "links", "code", "text"),
    [
        (["a", "x"], [], pb.FUNC_NOT_FOUND, "unregistered"),
        ([], [], pb.INVALID_ARGUMENT, "no functions"),
        (["a", "a"], [], pb.INVALID_ARGUMENT, "twice"),
        (["a"], [("a", "zz")], pb.INVALID_ARGUMENT, "not one of its functions"),
        (["a", "b"], [("a", "b"), ("b", "a")], pb.INVALID_ARGUMENT, "cycle"),
        (["a"], [("a", "a")], pb.INVALID_ARGUMENT, "cycle"),
        (["a", "b"], [("a", "b"), ("a", "b")], pb.INVALID_ARGUMENT, "twice"),
    ],
)
def test_bad_dags_are_refused_with_a_reason(
    functions: list[str], links: list[tuple[str, str]], code: int, text: str
) -> None:
    with pytest.raises(PlanError) as info:
        validate_dag(build_dag("d", functions, links), {"a", "b"})
    assert info.value.code == code
    assert text in info.value.message


def test_bad_dag_name_is_refused() -> None:
    with pytest.raises(PlanError):
        validate_dag(build_dag("", ["a"], []), {"a"})


def hb(addr: str, pid: int = 1, **kw: object) -> pb.ExecutorStatus:
    return pb.ExecutorStatus(address=addr, node_id="n", pid=pid, **kw)  # type: ignore[arg-type]


def test_heartbeats_register_and_expire_executors() -> None:
    st = SchedulerState(PlacementPolicy(heartbeat_timeout=3.0))
    assert st.on_heartbeat(hb("a"), 0.0) is True
    assert st.on_heartbeat(hb("b"), 0.0) is True
    assert st.on_heartbeat(hb("b"), 2.0) is False
    assert st.expire(2.9) == []
    assert st.expire(3.5) == ["a"]
    assert not st.is_alive("a", 3.5)
    assert st.is_alive("b", 3.5)
    assert [v.address for v in st.alive(3.5)] == ["b"]


def test_a_new_pid_at_the_same_address_is_a_new_executor() -> None:
    st = SchedulerState()
    st.on_heartbeat(hb("a", pid=1, functions=["f"]), 0.0)
    assert st.on_heartbeat(hb("a", pid=2), 0.5) is True
    assert st.executors["a"].functions == frozenset()


def test_leaving_executor_is_not_used() -> None:
    st = SchedulerState()
    st.on_heartbeat(hb("a", leaving=True), 0.0)
    with pytest.raises(PlanError) as info:
        st.plan(build_dag("d", ["f"], []), {}, 0.1, request_id="r", response_address="x")
    assert info.value.code == pb.NO_RESOURCES


def test_cache_summaries_are_kept_per_node_and_dropped_with_it() -> None:
    st = SchedulerState(PlacementPolicy(heartbeat_timeout=1.0))
    status = hb("a", has_cache_summary=True)
    status.cached_key_sizes["k"] = 42
    st.on_heartbeat(status, 0.0)
    assert st.cache_summaries == {"n": {"k": 42}}
    st.on_heartbeat(hb("a"), 0.5)  # no summary in this one: the last one stays
    assert st.cache_summaries == {"n": {"k": 42}}
    st.expire(5.0)
    assert st.cache_summaries == {}


def test_plan_triggers_every_source_with_the_whole_schedule() -> None:
    st = SchedulerState()
    for a in ("e1", "e2", "e3"):
        st.on_heartbeat(hb(a), 0.0)
    dag = build_dag("d", ["a", "b", "c"], [("a", "c"), ("b", "c")])
    args = {"a": pb.Arguments(values=[pb.Argument(value=pb.Value(body=b"1", type=pb.BYTES))])}
    sched, sends = st.plan(
        dag, args, 0.1, request_id="r1", response_address="tcp://c:1", output_key="out"
    )
    assert set(sched.locations) == {"a", "b", "c"}
    assert sched.id == "r1" and sched.output_key == "out" and sched.response_address == "tcp://c:1"
    msgs = [(s.address, pb.ExecutorMessage.FromString(s.data)) for s in sends]
    assert sorted(m.trigger.target_function for _, m in msgs) == ["a", "b"]
    for address, msg in msgs:
        assert address == sched.locations[msg.trigger.target_function]
        assert msg.trigger.schedule.arguments["a"].values[0].value.body == b"1"
        assert msg.trigger.schedule.output_key == "out"


def test_plan_rejects_arguments_for_unknown_functions() -> None:
    st = SchedulerState()
    st.on_heartbeat(hb("e"), 0.0)
    with pytest.raises(PlanError) as info:
        st.plan(
            build_dag("d", ["a"], []),
            {"zz": pb.Arguments()},
            0.1,
            request_id="r",
            response_address="",
        )
    assert info.value.code == pb.INVALID_ARGUMENT and "zz" in info.value.message


def test_plan_excludes_failed_executors() -> None:
    st = SchedulerState()
    st.on_heartbeat(hb("e1"), 0.0)
    st.on_heartbeat(hb("e2"), 0.0)
    for _ in range(5):
        sched, _ = st.plan(
            build_dag("d", ["a"], []), {}, 0.1, request_id="r", response_address="", exclude={"e1"}
        )
        assert sched.locations["a"] == "e2"
