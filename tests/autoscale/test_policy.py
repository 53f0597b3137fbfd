"""cloudburst.autoscale.policy: the cluster policy (pure)."""

from __future__ import annotations

import pytest

from cloudburst.autoscale.policy import (
    ClusterPolicy,
    FunctionLoad,
    Inputs,
    NodeLoad,
    PolicyConfig,
    StorageLoad,
)


def kinds(decisions: list) -> list[str]:  # type: ignore[type-arg]
    return [d.action.kind for d in decisions]


def busy(util: float, n: int = 1, wait: float = 0.0) -> Inputs:
    return Inputs(executors=[NodeLoad(f"n{i}", util, 3, wait) for i in range(n)])


def test_config_checks_its_thresholds() -> None:
    with pytest.raises(ValueError):
        PolicyConfig(executor_low=0.7, executor_high=0.6)
    with pytest.raises(ValueError):
        PolicyConfig(hysteresis=0)


def test_adds_an_executor_node_after_the_hysteresis_and_then_waits_the_grace() -> None:
    p = ClusterPolicy(PolicyConfig(hysteresis=2, grace_s=30))
    assert p.decide(busy(0.9), 0.0) == []  # once is not enough
    [d] = p.decide(busy(0.9), 10.0)
    assert d.action.kind == "add_executor_node"
    assert d.inputs["executor_utilization"] == pytest.approx(0.9)
    assert "0.90 > 0.6" in d.reason and "executor_utilization=0.9" in d.log_line()
    for t in (20.0, 30.0, 39.0):  # grace: no second node yet
        assert p.decide(busy(0.9, 2), t) == []
    assert kinds(p.decide(busy(0.9, 2), 41.0)) == ["add_executor_node"]


def test_a_blip_does_not_act() -> None:
    p = ClusterPolicy(PolicyConfig(hysteresis=2))
    for t, u in enumerate([0.9, 0.3, 0.9, 0.3, 0.9]):
        assert p.decide(busy(u), float(t)) == []


def test_long_queue_waits_add_a_node_even_at_moderate_utilization() -> None:
    p = ClusterPolicy(PolicyConfig(hysteresis=1))
    [d] = p.decide(busy(0.5, wait=3.0), 0.0)
    assert d.action.kind == "add_executor_node" and "waited" in d.reason


def test_removes_the_least_loaded_node_when_idle_never_below_the_minimum() -> None:
    p = ClusterPolicy(PolicyConfig(hysteresis=1, grace_s=0, min_executor_nodes=1))
    inputs = Inputs(executors=[NodeLoad("a", 0.05), NodeLoad("b", 0.0), NodeLoad("c", 0.08)])
    [d] = p.decide(inputs, 0.0)
    assert (d.action.kind, d.action.target) == ("remove_executor_node", "b")
    draining = Inputs(executors=[NodeLoad("a", 0.05), NodeLoad("b", 0.0, draining=True)])
    assert p.decide(draining, 1.0) == []  # one live node left: the minimum


def test_between_the_thresholds_nothing_happens() -> None:
    p = ClusterPolicy(PolicyConfig(hysteresis=1, grace_s=0))
    for t in range(5):
        assert p.decide(busy(0.3, 2), float(t)) == []


def test_at_the_maximum_no_node_is_added() -> None:
    p = ClusterPolicy(PolicyConfig(hysteresis=1, max_executor_nodes=2))
    assert p.decide(busy(0.95, 2), 0.0) == []


def test_hot_functions_are_replicated_and_back() -> None:
    p = ClusterPolicy(PolicyConfig(hysteresis=2, hot_function_rate=100))
    hot = Inputs(functions={"f": FunctionLoad(rate=500, replicas=1)})
    assert p.decide(hot, 0.0) == []
    [d] = p.decide(hot, 1.0)
    assert (d.action.kind, d.action.target, d.action.count) == ("replicate_function", "f", 2)
    cold = Inputs(functions={"f": FunctionLoad(rate=1, replicas=2)})
    p.decide(cold, 2.0)
    [d] = p.decide(cold, 3.0)
    assert (d.action.target, d.action.count) == ("f", 1)


def test_storage_grows_on_memory_or_latency_and_shrinks_through_depart() -> None:
    p = ClusterPolicy(PolicyConfig(hysteresis=1, grace_s=10))
    full = Inputs(storage=[StorageLoad("s1", 80, 100)])
    [d] = p.decide(full, 0.0)
    assert d.action.kind == "add_storage_node" and "memory 0.80" in d.reason
    assert d.inputs["kvs_memory"] == pytest.approx(0.8)
    slow = Inputs(storage=[StorageLoad("s1", 10, 100, latency_s=0.2)] * 2)
    assert p.decide(slow, 5.0) == []  # grace
    assert kinds(p.decide(slow, 11.0)) == ["add_storage_node"]
    empty = Inputs(storage=[StorageLoad("s1", 5, 100), StorageLoad("s2", 1, 100)])
    [d] = p.decide(empty, 30.0)
    assert (d.action.kind, d.action.target) == ("remove_storage_node", "s2")
    assert "depart" in d.reason


def test_hot_keys_get_more_replicas_and_cold_ones_go_back() -> None:
    p = ClusterPolicy(PolicyConfig(hysteresis=1, hot_key_accesses=100, hot_key_replication=3))
    [d] = p.decide(Inputs(key_accesses={"k": 500, "cold": 3}), 0.0)
    assert (d.action.kind, d.action.target, d.action.count) == ("set_key_replication", "k", 3)
    # already raised: not again; cooled down: back to the default
    assert p.decide(Inputs(key_accesses={"k": 500}, key_replication={"k": 3}), 1.0) == []
    [d] = p.decide(Inputs(key_accesses={"k": 2}, key_replication={"k": 3}), 2.0)
    assert (d.action.target, d.action.count) == ("k", 1)


def test_nothing_reported_nothing_done() -> None:
    p = ClusterPolicy(PolicyConfig(hysteresis=1))
    assert p.decide(Inputs(), 0.0) == []


def test_only_removable_nodes_are_removed() -> None:
    p = ClusterPolicy(PolicyConfig(hysteresis=1, grace_s=0))
    inputs = Inputs(executors=[NodeLoad("orig", 0.0, removable=False), NodeLoad("added", 0.05)])
    [d] = p.decide(inputs, 0.0)
    assert d.action.target == "added"
    only_orig = Inputs(
        executors=[NodeLoad("orig", 0.0, removable=False), NodeLoad("x", 0.0, removable=False)]
    )
    assert p.decide(only_orig, 1.0) == []


def test_no_node_is_added_while_one_is_still_starting() -> None:
    p = ClusterPolicy(PolicyConfig(hysteresis=1, grace_s=0))
    starting = Inputs(executors=[NodeLoad("a", 1.0)], pending_executor_nodes=1)
    assert p.decide(starting, 0.0) == []
    assert kinds(p.decide(busy(1.0), 1.0)) == ["add_executor_node"]


def test_the_grace_period_runs_from_when_an_added_node_arrives() -> None:
    # A node that takes longer to start than grace_s: no second add the moment it
    # shows up (the load measured while it started does not count), grace from then.
    p = ClusterPolicy(PolicyConfig(hysteresis=1, grace_s=3.0))
    assert kinds(p.decide(busy(1.0), 0.0)) == ["add_executor_node"]
    for t in range(1, 14):
        starting = Inputs(executors=[NodeLoad("a", 1.0)], pending_executor_nodes=1)
        assert p.decide(starting, float(t)) == [], t
    arrived = Inputs(executors=[NodeLoad("a", 1.0), NodeLoad("b", 0.5)])
    assert p.decide(arrived, 14.0) == []
    assert p.decide(arrived, 15.5) == []  # last seen starting at 13, + 3: still in grace
    assert kinds(p.decide(arrived, 16.5)) == ["add_executor_node"]
