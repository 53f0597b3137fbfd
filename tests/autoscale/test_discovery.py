"""cloudburst.autoscale.discovery: the autoscaler's /metrics inputs on Kubernetes (the
pods of its namespace, listed through the fake API server of test_kubernetes_actuator,
scraped over real HTTP on loopback)."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from cloudburst.autoscale import discovery
from cloudburst.autoscale.actuators import KubernetesActuator
from cloudburst.autoscale.discovery import Pod, Target, targets
from cloudburst.autoscale.policy import Inputs
from cloudburst.autoscale.server import Autoscaler, make_actuator, make_scrape, scrape_local
from cloudburst.shared.config import Config, replace
from cloudburst.shared.proto import cloudburst_pb2 as pb
from tests.autoscale.test_kubernetes_actuator import NS, FakeApi


def cfg_with(base: int = 9400, **executor: Any) -> Config:
    return replace(
        Config(),
        metrics={"base_port": base},
        kvs={"shards": 2},
        executor={"workers": 2, "max_workers": 3, **executor},
    )


# ---- pods -> targets (pure) -----------------------------------------------------------


def test_targets_by_role_for_running_ready_pods_only() -> None:
    pods = [
        Pod("cloudburst-storage-0", "10.0.0.5", "storage", True),
        Pod("cloudburst-storage-1", "10.0.0.6", "storage", False),  # not ready
        Pod("cloudburst-executor-x", "10.0.0.7", "executor", True),
        Pod("cloudburst-scheduler-y", "10.0.0.8", "scheduler", True),
        Pod("cloudburst-routing-z", "10.0.0.9", "routing", True),  # no policy input
        Pod("cloudburst-autoscaler-w", "10.0.0.10", "autoscaler", True),
        Pod("cloudburst-executor-p", "", "executor", True),  # no IP yet
    ]
    got = targets(pods, cfg_with())
    assert got == [
        Target("worker", "cloudburst-executor-x/worker0", "http://10.0.0.7:9450/metrics"),
        Target("worker", "cloudburst-executor-x/worker1", "http://10.0.0.7:9451/metrics"),
        Target("worker", "cloudburst-executor-x/worker2", "http://10.0.0.7:9452/metrics"),
        Target("scheduler", "cloudburst-scheduler-y", "http://10.0.0.8:9401/metrics"),
        Target("shard", "10.0.0.5", "http://10.0.0.5:9410/metrics"),
        Target("shard", "10.0.0.5", "http://10.0.0.5:9411/metrics"),
    ]


def test_worker_ports_follow_the_pool_bounds() -> None:
    pod = [Pod("e", "10.0.0.7", "executor", True)]
    assert len(targets(pod, cfg_with(elastic=False))) == 2  # a fixed pool
    assert len(targets(pod, cfg_with(max_workers=0))) == discovery.AUTO_MAX_WORKERS
    assert len(targets(pod, cfg_with(workers=20, max_workers=0))) == 20


def test_no_targets_without_fixed_metrics_ports_and_ipv6_hosts() -> None:
    pod = [Pod("s", "fd00::5", "scheduler", True)]
    assert targets(pod, cfg_with(base=0)) == []  # random ports: nothing to find
    assert targets(pod, cfg_with())[0].url == "http://[fd00::5]:9401/metrics"


def test_pod_from_a_v1pod() -> None:
    from kubernetes import client

    def v1(phase: str, ready: str, ip: str | None) -> Any:
        return client.V1Pod(
            metadata=client.V1ObjectMeta(
                name="p", labels={"app.kubernetes.io/component": "storage"}
            ),
            status=client.V1PodStatus(
                phase=phase,
                pod_ip=ip,
                conditions=[client.V1PodCondition(type="Ready", status=ready)],
            ),
        )

    assert discovery.pod_from(v1("Running", "True", "10.0.0.1")) == Pod(
        "p", "10.0.0.1", "storage", True
    )
    assert not discovery.pod_from(v1("Running", "False", "10.0.0.1")).ready
    assert not discovery.pod_from(v1("Pending", "True", None)).ready
    assert discovery.pod_from(v1("Pending", "True", None)).ip == ""
    going = v1("Running", "True", "10.0.0.1")
    going.metadata.deletion_timestamp = "2026-01-01T00:00:00Z"  # draining, departing
    assert not discovery.pod_from(going).ready


def test_scrape_leaves_out_what_does_not_answer_and_skips_a_slow_host() -> None:
    found = [
        Target("shard", "10.0.0.5", "http://10.0.0.5:9410/metrics"),
        Target("shard", "10.0.0.5", "http://10.0.0.5:9411/metrics"),
        Target("worker", "e/worker0", "http://10.0.0.7:9450/metrics"),
        Target("worker", "e/worker1", "http://10.0.0.7:9451/metrics"),
        Target("worker", "e/worker2", "http://10.0.0.7:9452/metrics"),
        Target("scheduler", "s", "http://10.0.0.8:9401/metrics"),
    ]
    asked: list[str] = []

    def get(url: str) -> str:
        asked.append(url)
        if url.endswith(":9451/metrics"):
            raise ConnectionRefusedError  # a worker index not started
        if "10.0.0.5" in url:
            raise TimeoutError
        return url.split(":")[2].split("/")[0] + "\n"

    shards, scheduler, workers = discovery.scrape(found, get)
    assert shards == {} and scheduler == "9401\n"
    assert workers == {"e/worker0": "9450\n", "e/worker2": "9452\n"}
    assert "http://10.0.0.5:9411/metrics" not in asked  # its host timed out once
    # a host's shards are concatenated, as scrape_local does
    assert discovery.collect([("shard", "h", "a\n"), ("shard", "h", "b\n")])[0] == {"h": "a\nb\n"}


# ---- the pods of a (fake) API server, scraped over HTTP -------------------------------


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pod(name: str, component: str, ready: bool = True, ip: str = "127.0.0.1") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": {
                "app.kubernetes.io/name": "cloudburst",
                "app.kubernetes.io/component": component,
            },
        },
        "status": {
            "phase": "Running",
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


class Served:
    """The metrics a storage pod (one shard), an executor pod (two workers of at most
    three) and the scheduler serve, on 127.0.0.1 at ``base`` + their offsets."""

    def __init__(self) -> None:
        self.servers: list[Any] = []
        self.shard, self.scheduler, self.worker = (CollectorRegistry() for _ in range(3))
        Gauge("process_resident_memory_bytes", "rss", registry=self.shard).set(900)
        keys = Gauge("anna_key_accesses", "accesses", ["key"], registry=self.shard)
        keys.labels("hot").set(5000)
        keys.labels("cold").set(5)
        Gauge("anna_key_access_window_seconds", "window", registry=self.shard).set(5)
        self.calls = Counter(
            "cloudburst_calls", "calls", ["role", "kind", "name"], registry=self.scheduler
        ).labels("scheduler", "function", "f")
        self.seconds = Histogram(
            "cloudburst_call_seconds", "run", ["role", "kind", "name"], registry=self.worker
        ).labels("executor", "function", "f")
        self.other = CollectorRegistry()  # what a pod that is not ready would serve
        Gauge("process_resident_memory_bytes", "rss", registry=self.other).set(10**12)
        for _ in range(50):
            self.base = random.randrange(20000, 60000)
            try:
                for offset, reg in (
                    (1, self.scheduler),
                    (10, self.shard),
                    (50, self.worker),
                    (51, self.worker),
                    (11, self.other),  # shard 1: only the not-ready pod would have it
                ):
                    self.servers.append(
                        start_http_server(self.base + offset, "127.0.0.1", registry=reg)
                    )
                if _free(self.base + 52):  # worker 2 not started: refused
                    return
            except OSError:
                pass
            self.close()
        raise AssertionError("no free metrics ports")

    def close(self) -> None:
        for server, thread in self.servers:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
        self.servers.clear()


@pytest.fixture
def served() -> Iterator[Served]:
    s = Served()
    try:
        yield s
    finally:
        s.close()


def test_the_scraped_pods_inputs_reach_the_policy(fake: FakeApi, served: Served) -> None:
    from kubernetes import client

    fake.pods = [
        _pod("cloudburst-storage-0", "storage"),
        _pod("cloudburst-storage-1", "storage", ready=False, ip="127.0.0.2"),
        _pod("cloudburst-executor-a", "executor"),
        _pod("cloudburst-scheduler-b", "scheduler"),
        _pod("cloudburst-routing-c", "routing"),
        {**_pod("someone-else", "scheduler"), "metadata": {"name": "x", "labels": {}}},
    ]
    cfg = replace(
        cfg_with(served.base),
        kvs={"shards": 1},
        autoscale={"kvs_capacity_bytes": 1000, "hysteresis": 1, "period_s": 5.0},
    )
    act = KubernetesActuator(
        NS,
        "exec",
        "kvs",
        api_client=client.ApiClient(client.Configuration(host=fake.url)),
        depart=lambda ip: None,
    )
    scrape = make_scrape(cfg, act)
    assert isinstance(scrape, discovery.KubernetesScraper)
    replicated: list[tuple[str, int]] = []

    class Kvs:
        def set_replication(self, key: str, n: int) -> None:
            replicated.append((key, n))

    st = pb.ClusterStatus()
    st.executors.add(address="tcp://127.0.0.1:1", node_id="n", busy=0)
    scaler = Autoscaler(
        cfg,
        act,
        lambda: st,
        kvs=Kvs(),
        scrape=scrape,
        replicate=lambda fn, n: replicated.append((fn, n)),
    )
    seen: list[Inputs] = []
    decide = scaler.policy.decide
    scaler.policy.decide = lambda inputs, now: seen.append(inputs) or decide(inputs, now)  # type: ignore[method-assign]
    served.calls.inc(10)
    scaler.step(100.0)
    served.calls.inc(500)  # 500 calls in 1 s, each run 0.02 s
    for _ in range(500):
        served.seconds.observe(0.02)
    scaler.step(101.0)

    # only the listed, labelled pods were asked for, with the Role's selector
    lists = [p for m, p, _ in fake.log if m == "GET" and p.split("?")[0].endswith("/pods")]
    assert len(lists) == 2 and all("labelSelector=app.kubernetes.io" in p for p in lists)
    inputs = seen[-1]
    assert inputs.functions["f"].rate == pytest.approx(500.0)
    assert inputs.functions["f"].latency_s == pytest.approx(0.02)
    # the ready storage pod only (its node id: pod IP and shard base port)
    assert [(s.node_id, s.memory_bytes) for s in inputs.storage] == [
        (f"127.0.0.1:{cfg.kvs.shard_base_port}", 900)
    ]
    assert inputs.key_accesses == {"hot": 5000, "cold": 5}
    # (storage and the hot key act on the first step already; the function's rate
    # needs two readings of its counter)
    kinds = {(d.action.kind, d.action.target) for _, d in scaler.history}
    assert "add_storage_node" in {k for k, _ in kinds}
    assert ("set_key_replication", "hot") in kinds
    assert ("replicate_function", "f") in kinds
    # carried out: the StatefulSet grew, the key and the function were replicated
    assert fake.replicas[("statefulsets", "kvs")] == 4
    assert ("hot", cfg.autoscale.hot_key_replication) in replicated
    assert any(fn == "f" for fn, _ in replicated)


def test_without_the_pods_the_step_still_scales_executors(fake: FakeApi) -> None:
    # an API server that refuses the list (a Role without it): no /metrics inputs,
    # the executor tier still decides
    from kubernetes import client

    cfg = replace(cfg_with(), autoscale={"hysteresis": 1})
    act = KubernetesActuator(
        "elsewhere", "exec", "kvs", api_client=client.ApiClient(client.Configuration(host=fake.url))
    )
    assert make_scrape(cfg, act)() == ({}, "", {})
    st = pb.ClusterStatus()
    for i in range(3):
        st.executors.add(address=f"tcp://127.0.0.1:{i}", node_id="n", busy=1)
    scaler = Autoscaler(cfg, act, lambda: st, scrape=make_scrape(cfg, act))
    act.namespace = NS  # the actuator's own requests go to the fake's namespace
    decisions = scaler.step(1.0)
    assert [d.action.kind for d in decisions] == ["add_executor_node"]


def test_the_local_actuator_keeps_the_run_dir_endpoints(tmp_path: Any) -> None:
    from cloudburst.local import free_port_config

    cfg = free_port_config(tmp_path, workers=1)
    scrape = make_scrape(cfg, make_actuator(cfg))
    assert not isinstance(scrape, discovery.KubernetesScraper)
    assert scrape() == scrape_local(cfg) == ({}, "", {})
