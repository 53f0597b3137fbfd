"""cloudburst.autoscale.inputs: what the autoscaler measures between evaluations."""

from __future__ import annotations

import math

import pytest

from cloudburst.autoscale.inputs import BusyMeter, key_access_counts, mean_latencies
from cloudburst.autoscale.server import Autoscaler, executor_inputs
from cloudburst.shared.config import load_config, replace
from cloudburst.shared.proto import cloudburst_pb2 as pb

HEARTBEAT_S = 0.25


class PeriodicLoad:
    """Two nodes of two workers; a call of ``length`` seconds starts every ``every``
    seconds, on the first worker of node a, then of node b, and so on (the scheduler
    packs on the lowest slot and goes round robin among equals). Workers heartbeat
    every 0.25 s; :meth:`status` is what the scheduler reports at ``t``: each worker's
    last heartbeat (busy flag, busy time, age)."""

    def __init__(self, length: float, every: float) -> None:
        self.length, self.every = length, every

    def calls_on(self, node: int) -> list[float]:
        return [j * self.every for j in range(node, 10_000, 2)]

    def busy_s(self, node: int, t: float) -> float:
        return sum(min(self.length, t - s) for s in self.calls_on(node) if s < t)

    def busy(self, node: int, t: float) -> bool:
        return any(s <= t < s + self.length for s in self.calls_on(node))

    def status(self, t: float) -> pb.ClusterStatus:
        beat = math.floor((t - 0.05) / HEARTBEAT_S) * HEARTBEAT_S + 0.05  # last heartbeat
        st = pb.ClusterStatus()
        for node, name in enumerate("ab"):
            for slot in range(2):
                st.executors.add(
                    address=f"tcp://{name}:{slot}",
                    node_id=name,
                    pid=100 + slot,
                    busy=int(slot == 0 and self.busy(node, beat)),
                    busy_s=self.busy_s(node, beat) if slot == 0 else 0.0,
                    uptime_s=beat + 100.0,
                )
        return st


def test_a_periodic_load_sampled_in_phase_reads_the_same_busy_flag_every_time() -> None:
    # The CI failure of test_autoscale's light phase: calls of 0.1 s every 0.5 s on
    # four workers (true utilization 0.05), the autoscaler every 0.5 s at the phase
    # where the last call runs. The busy flags read one busy worker each time: 0.25 for
    # ever, never below executor_low; busy time reads the truth.
    load = PeriodicLoad(length=0.1, every=0.5)
    times = [100.0 + 0.15 + 0.5 * k for k in range(20)]
    sampled = [executor_inputs(load.status(t)).summary()["executor_utilization"] for t in times]
    assert sampled == [0.25] * len(times)
    meter = BusyMeter()
    measured = [
        executor_inputs(load.status(t), meter=meter).summary()["executor_utilization"]
        for t in times
    ]
    assert measured[0] == 0.25  # first reading: the flag (no interval yet)
    assert all(u == pytest.approx(0.05, abs=0.02) for u in measured[1:]), measured


class Actuator:
    def __init__(self) -> None:
        self.removed: list[str] = []

    def owns(self, node: str) -> bool:
        return node == "b"

    def remove_executor_node(self, node: str) -> bool:
        self.removed.append(node)
        return True

    def reap(self) -> list[str]:
        return []


def test_the_autoscaler_removes_a_node_under_a_light_periodic_load() -> None:
    cfg = replace(load_config(None, env={}), autoscale={"hysteresis": 2, "executor_low": 0.1})
    load = PeriodicLoad(length=0.1, every=0.5)
    act = Actuator()
    clock = {"t": 0.0}
    scaler = Autoscaler(cfg, act, lambda: load.status(clock["t"]))
    for k in range(6):
        clock["t"] = 100.15 + 0.5 * k
        scaler.step(clock["t"])
    assert act.removed == ["b"], [d.log_line() for _, d in scaler.history]


def test_busy_meter_handles_restarts_silence_and_departures() -> None:
    m = BusyMeter()
    assert m.utilization("a", 1, False, 5.0, 10.0) == 0.0
    m.end_round()
    assert m.utilization("a", 1, False, 6.0, 12.0) == 0.5
    m.end_round()
    # no heartbeat since the last evaluation: the same interval's value
    assert m.utilization("a", 1, False, 6.0, 12.0) == 0.5
    m.end_round()
    # restarted (a new pid): its counters start over; the flag until the next report
    assert m.utilization("a", 2, True, 0.1, 0.2) == 1.0
    m.end_round()
    assert m.utilization("a", 2, False, 0.1, 1.2) == 0.0
    m.end_round()
    m.end_round()  # not seen in a round: forgotten
    assert m.last == {}


def test_key_access_counts_and_mean_latencies_from_cumulative_counters() -> None:
    assert key_access_counts({"k": 10.0, "gone": 3.0}, {"k": 1510.0, "new": 7.0}) == {
        "k": 1500,
        "new": 7,
    }
    assert key_access_counts({"k": 100.0}, {"k": 20.0}) == {"k": 20}  # shard restarted
    before = {"w0": {"f": (1.0, 10.0)}, "w1": {"f": (2.0, 10.0), "g": (1.0, 1.0)}}
    now = {"w0": {"f": (3.0, 20.0)}, "w1": {"f": (0.5, 5.0), "g": (1.0, 1.0)}}
    # f: w0 2.0 s over 10 calls, w1 restarted: 0.5 s over 5 calls; g: no calls
    assert mean_latencies(before, now) == {"f": pytest.approx(2.5 / 15)}


SCHEDULER = """# TYPE cloudburst_calls_total counter
cloudburst_calls_total{kind="function",name="f",role="scheduler"} %d
"""
WORKER = """# TYPE cloudburst_call_seconds histogram
cloudburst_call_seconds_sum{kind="function",name="f",role="executor"} %g
cloudburst_call_seconds_count{kind="function",name="f",role="executor"} %d
"""
SHARD = """# TYPE anna_key_accesses gauge
anna_key_accesses{key="hot",shard="0"} %d
anna_key_accesses{key="warm",shard="0"} 40
# TYPE anna_key_access_window_seconds gauge
anna_key_access_window_seconds{shard="0"} 10
"""


class Kvs:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def set_replication(self, key: str, count: int) -> None:
        self.calls.append((key, count))


def test_latencies_and_hot_keys_reach_the_policy_and_its_decisions_carry_them() -> None:
    from cloudburst.shared import metrics

    cfg = replace(
        load_config(None, env={}),
        autoscale={"hysteresis": 1, "period_s": 5.0, "hot_function_workers": 2.0},
    )
    kvs = Kvs()
    texts = {"s": SCHEDULER % 0, "w": WORKER % (0.0, 0), "k": SHARD % 3000}
    scaler = Autoscaler(
        cfg,
        Actuator(),
        lambda: pb.ClusterStatus(),
        kvs=kvs,
        scrape=lambda: ({"127.0.0.1": texts["k"]}, texts["s"], {"w0/1": texts["w"]}),
    )
    first = scaler.step(10.0)  # 3000 accesses in 10 s = 1500 per 5 s period
    assert [(d.action.kind, d.action.target, d.action.count) for d in first] == [
        ("set_key_replication", "hot", 3)
    ]
    assert first[0].inputs["key_accesses"] == 1500 and first[0].inputs["key_replication"] == 1
    assert kvs.calls == [("hot", 3)] and scaler.key_replication == {"hot": 3}
    # 10 calls/s of 0.5 s each: five busy workers > 2 per replica (the rate is far
    # below hot_function_rate); the latency comes from the workers' histograms
    texts.update(s=SCHEDULER % 50, w=WORKER % (25.0, 50))
    [d] = scaler.step(15.0)  # (the hot key is still hot: already raised)
    assert (d.action.kind, d.action.target, d.action.count) == ("replicate_function", "f", 2)
    assert d.inputs["function_rate"] == pytest.approx(10.0)
    assert d.inputs["function_latency_s"] == pytest.approx(0.5)
    assert "busy workers" in d.log_line() and "function_latency_s=0.5" in d.log_line()
    value = metrics.REGISTRY.get_sample_value
    assert value("cloudburst_autoscaler_function_input", {"function": "f", "input": "latency_s"})
    assert value("cloudburst_autoscaler_key_accesses", {"key": "warm"}) == 20.0
    # the hot key cooled down (1 access per period < cold_key_accesses): back to 1
    texts.update(k=SHARD % 2)
    later = scaler.step(20.0)
    assert ("set_key_replication", "hot", 1) in [
        (x.action.kind, x.action.target, x.action.count) for x in later
    ]
    assert kvs.calls[-1] == ("hot", 1) and scaler.key_replication == {}


KVS_WORKER = """# TYPE cloudburst_kvs_request_seconds histogram
cloudburst_kvs_request_seconds_sum{type="get"} %g
cloudburst_kvs_request_seconds_count{type="get"} %d
cloudburst_kvs_request_seconds_sum{type="put"} 1.0
cloudburst_kvs_request_seconds_count{type="put"} 100
"""
RSS = """# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 4.0e+08
"""


def test_the_executors_kvs_latency_feeds_the_storage_tier() -> None:
    cfg = replace(
        load_config(None, env={}),
        autoscale={"hysteresis": 1, "kvs_capacity_bytes": 10**9, "kvs_latency_high_s": 0.05},
    )
    texts = {"w": KVS_WORKER % (1.0, 100)}
    adds: list[str] = []

    class Storage(Actuator):
        def add_storage_node(self) -> str:
            adds.append("storage")
            return "s2"

    scaler = Autoscaler(
        cfg,
        Storage(),
        lambda: pb.ClusterStatus(),
        scrape=lambda: ({"127.0.0.1": RSS}, "", {"w0/1": texts["w"]}),
    )
    assert scaler.step(5.0) == []  # memory 0.4, no interval for latencies yet
    # 100 gets took 20 s in this period: 0.2 s each > 50 ms
    texts["w"] = KVS_WORKER % (21.0, 200)
    [d] = scaler.step(10.0)
    assert d.action.kind == "add_storage_node" and adds == ["storage"]
    assert d.inputs["kvs_latency_s"] == pytest.approx(0.2)
    assert "latency 200.0 ms > 50 ms" in d.log_line()
