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


def test_same_dag_ignores_order_but_not_content() -> None:
    from scheduler.logic import same_dag

    a = build_dag("d", ["f", "g"], [("f", "g")])
    assert same_dag(a, build_dag("d", ["g", "f"], [("f", "g")]))
    assert not same_dag(a, build_dag("d", ["f", "g"], []))
    assert not same_dag(a, build_dag("d", ["f", "g", "h"], [("f", "g")]))
    assert not same_dag(a, build_dag("d", ["f", "g"], [("g", "f")]))
    assert not same_dag(a, build_dag("e", ["f", "g"], [("f", "g")]))


@pytest.mark.parametrize(
    ("timeout", "memory", "ok"),
    [
        (0.0, 0, True),
        (2.5, 1 << 30, True),
        (-1.0, 0, False),
        (float("inf"), 0, False),
        (float("nan"), 0, False),
        (1.0, 1000, False),
    ],
)
def test_limits_are_checked(timeout: float, memory: int, ok: bool) -> None:
    from scheduler.logic import check_limits

    if ok:
        check_limits("f", timeout, memory)
    else:
        with pytest.raises(PlanError) as info:
            check_limits("f", timeout, memory)
        assert info.value.code == pb.INVALID_ARGUMENT and "'f'" in info.value.message


def _beat(address: str, pid: int, index: int | None, node: str = "n1") -> pb.ExecutorStatus:
    st = pb.ExecutorStatus(address=address, node_id=node, pid=pid)
    if index is not None:
        st.index, st.indexed = index, True
    return st


def test_a_new_worker_in_a_slot_marks_its_predecessor_dead_at_once() -> None:
    state = SchedulerState(PlacementPolicy(heartbeat_timeout=3.0))
    state.on_heartbeat(_beat("tcp://a:1", 10, 0), 0.0)
    state.on_heartbeat(_beat("tcp://a:2", 11, 1), 0.0)
    state.on_heartbeat(_beat("tcp://b:1", 20, 0, node="n2"), 0.0)
    # Worker 0 of n1 was restarted (new pid, new address): the old one is gone now,
    # long before its heartbeats would time out; the others stay.
    assert state.on_heartbeat(_beat("tcp://a:3", 12, 0), 0.5)
    assert not state.is_alive("tcp://a:1", 0.5)
    assert {v.address for v in state.alive(0.5)} == {"tcp://a:2", "tcp://a:3", "tcp://b:1"}
    # Heartbeats of the same process change nothing; unindexed (older) workers neither.
    state.on_heartbeat(_beat("tcp://a:3", 12, 0), 0.6)
    state.on_heartbeat(_beat("tcp://c:1", 30, None), 0.6)
    state.on_heartbeat(_beat("tcp://c:2", 31, None), 0.6)
    assert len(state.alive(0.6)) == 5


def test_expire_reports_replaced_and_silent_executors_once() -> None:
    state = SchedulerState(PlacementPolicy(heartbeat_timeout=3.0))
    state.on_heartbeat(_beat("tcp://a:1", 10, 0), 0.0)
    state.on_heartbeat(_beat("tcp://a:2", 11, 1), 0.0)
    state.on_heartbeat(_beat("tcp://a:3", 12, 0), 1.0)  # replaces a:1
    assert state.expire(1.0) == ["tcp://a:1"]
    assert state.expire(1.0) == []
    assert state.expire(3.5) == ["tcp://a:2"]  # silent since 0.0


def test_a_lost_connection_marks_an_executor_dead_until_it_beats_again() -> None:
    state = SchedulerState(PlacementPolicy(heartbeat_timeout=3.0))
    state.on_heartbeat(_beat("tcp://a:1", 10, 0), 0.0)
    assert state.disconnected("tcp://a:1")
    assert not state.is_alive("tcp://a:1", 0.1)
    assert not state.disconnected("tcp://a:1")  # once
    assert state.expire(0.2) == ["tcp://a:1"]
    assert state.on_heartbeat(_beat("tcp://a:1", 10, 0), 0.5)  # it was alive after all
    assert state.is_alive("tcp://a:1", 0.6)
