"""A hot function's placement replicas (FunctionReplication): pure logic, no processes."""

from __future__ import annotations

from collections import Counter

from cloudburst.shared.proto import cloudburst_pb2 as pb
from scheduler.logic import SchedulerState
from scheduler.placement import ExecutorView, PlacementPolicy, place

POLICY = PlacementPolicy(heartbeat_timeout=3.0, overload=4, recent_window=0.05)
SUMMARIES = {"n1": {"k": 1000}, "n2": {"k": 10}, "n3": {}}


def cluster() -> dict[str, ExecutorView]:
    return {
        f"{n}w{i}": ExecutorView(f"{n}w{i}", n, last_seen=10.0, slot=i)
        for n in ("n1", "n2", "n3")
        for i in range(2)
    }


def burst(replicas: dict[str, int], calls: int = 12) -> Counter[str]:
    """Nodes that get ``calls`` calls of f (each referencing key k) placed together."""
    execs = cluster()
    nodes: Counter[str] = Counter()
    for _ in range(calls):
        where = place(
            execs,
            ["f"],
            10.0,
            POLICY,
            ref_keys={"f": ["k"]},
            cache_summaries=SUMMARIES,
            replicas=replicas,
        )
        assert where is not None
        nodes[execs[where["f"]].node_id] += 1
    return nodes


def test_locality_puts_a_burst_on_one_node_until_it_is_overloaded() -> None:
    # the node caching k takes every call while its workers are below the overload (4)
    assert burst({}, calls=8) == Counter({"n1": 8})


def test_a_replicated_function_spreads_over_that_many_nodes() -> None:
    two = burst({"f": 2})
    assert set(two) == {"n1", "n2"} and two["n1"] == two["n2"]  # n3 caches nothing
    three = burst({"f": 3})
    assert set(three) == {"n1", "n2", "n3"}
    assert burst({"g": 3}, calls=8) == Counter({"n1": 8})  # other functions unchanged


def test_the_scheduler_state_keeps_replicas_and_places_with_them() -> None:
    st = SchedulerState(POLICY)
    st.executors.update(cluster())
    st.cache_summaries.update(SUMMARIES)
    st.set_replicas("f", 2)
    assert st.replicas == {"f": 2}
    dag = pb.Dag(name="f", functions=["f"])
    args = pb.Arguments()
    ref = args.values.add()
    ref.reference.key = "k"
    nodes = Counter()
    for i in range(8):
        sched, _ = st.plan(dag, {"f": args}, 10.0, request_id=f"c{i}", response_address="")
        nodes[st.executors[sched.locations["f"]].node_id] += 1
    assert set(nodes) == {"n1", "n2"}, nodes
    st.set_replicas("f", 1)  # back to the default
    assert st.replicas == {}
