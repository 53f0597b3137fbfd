"""cloudburst.autoscale.server: status in, decisions logged and carried out (no sockets)."""

from __future__ import annotations

import logging

import pytest

from cloudburst.autoscale.server import Autoscaler, executor_inputs
from cloudburst.shared.config import load_config, replace
from cloudburst.shared.proto import cloudburst_pb2 as pb


def status(nodes: dict[str, list[tuple[int, int, float]]]) -> pb.ClusterStatus:
    st = pb.ClusterStatus()
    for node, workers in nodes.items():
        for i, (busy, queue, running_s) in enumerate(workers):
            st.executors.add(
                address=f"tcp://{node}:{i}",
                node_id=node,
                busy=busy,
                queue_length=queue,
                current_call_s=running_s,
            )
    return st


def test_executor_inputs_per_node() -> None:
    inputs = executor_inputs(
        status({"a": [(1, 2, 0.7), (1, 0, 5.0), (0, 0, 0.0)], "b": [(0, 0, 0.0)]}),
        draining={"b"},
    )
    a, b = inputs.executors
    assert (a.node_id, a.workers, a.queue_wait_s) == ("a", 3, 0.7)
    assert a.utilization == pytest.approx(2 / 3)
    assert b.draining and b.utilization == 0.0


class FakeActuator:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.ours: set[str] = set()

    def owns(self, node: str) -> bool:
        return node in self.ours

    def add_executor_node(self) -> str:
        self.calls.append(("add", ""))
        self.ours.add("new")
        return "new"

    def remove_executor_node(self, node: str) -> bool:
        self.calls.append(("remove", node))
        return node in self.ours

    def reap(self) -> list[str]:
        return []


def test_decisions_are_logged_with_inputs_and_carried_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = replace(load_config(None, env={}), autoscale={"hysteresis": 1, "grace_s": 5.0})
    act = FakeActuator()
    current = {"st": status({"orig": [(1, 1, 2.0), (1, 0, 1.0)]})}
    scaler = Autoscaler(cfg, act, lambda: current["st"])
    with caplog.at_level(logging.INFO, logger="cloudburst.autoscale.server"):
        [d] = scaler.step(0.0)
    assert d.action.kind == "add_executor_node" and act.calls == [("add", "")]
    assert "executor_utilization=1" in caplog.text
    current["st"] = status({"orig": [(0, 0, 0.0)] * 2, "new": [(0, 0, 0.0)] * 3})
    assert scaler.step(1.0) == []  # grace
    [d] = scaler.step(6.0)
    assert (d.action.kind, d.action.target) == ("remove_executor_node", "new")
    assert scaler.draining == {"new"}
    # the draining node no longer counts; the original one is never removed
    assert scaler.step(20.0) == []


class ReplicaActuator:
    """Like the Kubernetes actuator: a scale-down lowers a count, the platform picks
    the node that goes (no ``owns``, no ``reap``)."""

    def __init__(self) -> None:
        self.replicas = 2

    def add_executor_node(self) -> str:
        self.replicas += 1
        return f"replica {self.replicas}"

    def remove_executor_node(self, node: str) -> bool:
        self.replicas -= 1
        return True


def test_a_replica_count_scale_down_marks_no_node_draining() -> None:
    cfg = replace(load_config(None, env={}), autoscale={"hysteresis": 1, "grace_s": 5.0})
    act = ReplicaActuator()
    idle = status({"a": [(0, 0, 0.0)] * 2, "b": [(0, 0, 0.0)] * 2})
    scaler = Autoscaler(cfg, act, lambda: idle)
    [d] = scaler.step(0.0)
    assert d.action.kind == "remove_executor_node" and act.replicas == 1
    # the policy's target may not be the pod that goes: both still count as live
    assert scaler.draining == set()
    inputs = executor_inputs(idle, scaler.draining)
    assert not any(n.draining for n in inputs.executors)


SHARD_METRICS = """# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 4.0e+08
"""

SCHEDULER_METRICS = """# HELP cloudburst_calls_total calls handled, by function or DAG
# TYPE cloudburst_calls_total counter
cloudburst_calls_total{kind="function",name="f",role="scheduler"} 1000.0
cloudburst_calls_total{kind="dag",name="d",role="scheduler"} 5.0
"""


def test_storage_inputs_from_the_shards_resident_memory() -> None:
    from cloudburst.autoscale.server import storage_inputs

    loads = storage_inputs(
        {"127.0.0.1": SHARD_METRICS + SHARD_METRICS, "127.0.0.2": SHARD_METRICS}, 10**9, 6200
    )
    assert [(s.node_id, s.memory_bytes) for s in loads] == [
        ("127.0.0.1:6200", 8 * 10**8),
        ("127.0.0.2:6200", 4 * 10**8),
    ]
    assert loads[0].memory_fraction == pytest.approx(0.8)


def test_function_rates_from_the_schedulers_call_counters() -> None:
    from cloudburst.autoscale.server import function_rates

    rates, counts = function_rates({}, SCHEDULER_METRICS, 5.0)
    assert rates == {} and counts == {"f": 1000.0}  # a first reading has no rate
    later = SCHEDULER_METRICS.replace("1000.0", "1500.0")
    rates, _ = function_rates(counts, later, 5.0)
    assert rates["f"].rate == pytest.approx(100.0)


def test_scraped_inputs_reach_the_policy() -> None:
    cfg = replace(
        load_config(None, env={}),
        autoscale={"hysteresis": 1, "kvs_capacity_bytes": 10**9, "hot_function_rate": 50.0},
    )
    texts = {"sched": SCHEDULER_METRICS}
    scaler = Autoscaler(
        cfg,
        FakeActuator(),
        lambda: status({"n": [(0, 0, 0.0)]}),
        scrape=lambda: ({"127.0.0.1": SHARD_METRICS * 2}, texts["sched"]),
    )
    decisions = scaler.step(10.0)  # memory 0.8 > 0.7 at once; no rate yet
    texts["sched"] = SCHEDULER_METRICS.replace("1000.0", "2000.0")
    decisions += scaler.step(20.0)  # 100 calls/s
    kinds = sorted(d.action.kind for d in decisions)
    assert kinds == ["add_storage_node", "replicate_function"], [d.log_line() for d in decisions]
    assert scaler.trace[-1][1]["kvs_memory"] == pytest.approx(0.8)
