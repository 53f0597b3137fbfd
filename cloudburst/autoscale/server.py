"""The autoscaler: ``python -m cloudburst.autoscale.server --config <yaml>``.

Every ``autoscale.period_s`` seconds: read what the scheduler sees (per worker: busy,
queue, how long its call has run), turn it into the policy's :class:`Inputs`, ask
:class:`ClusterPolicy` what to do, log every decision with its inputs, count it in
``cloudburst_autoscaler_decisions`` (the inputs are in ``cloudburst_autoscaler_input``)
and carry it out through the actuator (``autoscale.actuator``: local processes or
Kubernetes replica counts). Key replication goes through the KVS client's
``set_replication``; a function's placement replication to the scheduler
(``FunctionReplication``: its calls spread over that many nodes).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cloudburst.autoscale.actuators import KubernetesActuator, LocalActuator
from cloudburst.autoscale.inputs import BusyMeter, mean_latencies
from cloudburst.autoscale.policy import (
    ClusterPolicy,
    Decision,
    FunctionLoad,
    Inputs,
    NodeLoad,
    StorageLoad,
    config_from,
)
from cloudburst.health import heartbeat_path
from cloudburst.shared import metrics
from cloudburst.shared.config import Config, kvs_host, load_config, scheduler_host
from cloudburst.shared.errors import ConnectionFailed
from cloudburst.shared.logs import setup_logging
from cloudburst.shared.proto import cloudburst_pb2 as pb

log = logging.getLogger(__name__)


def executor_inputs(
    status: pb.ClusterStatus,
    draining: set[str] | None = None,
    removable: Callable[[str], bool] = lambda node: True,
    meter: BusyMeter | None = None,
) -> Inputs:
    """Per executor node: its workers' mean utilization (with ``meter``: the share of
    the interval since the last evaluation each was busy, from their busy time; without:
    the share of them busy now), and how long the longest call has been running on a
    worker with calls waiting behind it."""
    nodes: dict[str, list[Any]] = defaultdict(list)
    for e in status.executors:
        nodes[e.node_id].append(e)
    loads = []
    for node_id, workers in sorted(nodes.items()):
        if meter is None:
            busy = float(sum(1 for w in workers if w.busy))
        else:
            busy = sum(
                meter.utilization(w.address, w.pid, w.busy > 0, w.busy_s, w.uptime_s)
                for w in workers
            )
        wait = max((w.current_call_s for w in workers if w.queue_length), default=0.0)
        loads.append(
            NodeLoad(
                node_id,
                busy / len(workers),
                len(workers),
                wait,
                node_id in (draining or set()),
                removable(node_id),
            )
        )
    if meter is not None:
        meter.end_round()
    return Inputs(executors=loads)


def _samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    from prometheus_client.parser import text_string_to_metric_families

    out = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out.append((dict(sample.labels), float(sample.value)))
    return out


def storage_inputs(
    shard_metrics: dict[str, str], capacity_bytes: int, shard_base_port: int
) -> list[StorageLoad]:
    """Per storage node (``<ip>:<shard_base_port>``, anna's node id): the resident
    memory of its shards (``shard_metrics``: each shard's ``/metrics`` text by its
    host) against ``capacity_bytes`` per node."""
    used: dict[str, float] = defaultdict(float)
    for host, text in shard_metrics.items():
        for _, value in _samples(text, "process_resident_memory_bytes"):
            used[f"{host}:{shard_base_port}"] += value
    return [StorageLoad(node, int(rss), capacity_bytes) for node, rss in sorted(used.items())]


def function_rates(
    before: dict[str, float], scheduler_metrics: str, seconds: float
) -> tuple[dict[str, FunctionLoad], dict[str, float]]:
    """Calls per second per function from the scheduler's ``cloudburst_calls_total``
    (``before``: the counters of the previous evaluation; returns the new ones)."""
    now: dict[str, float] = {}
    for labels, value in _samples(scheduler_metrics, "cloudburst_calls_total"):
        if labels.get("role") == "scheduler" and labels.get("kind") == "function":
            now[labels.get("name", "")] = value
    rates = {}
    if seconds > 0:
        for name, count in now.items():
            if name in before:
                rates[name] = FunctionLoad(rate=max(0.0, count - before[name]) / seconds)
    return rates, now


def hot_keys(shard_metrics: dict[str, str], period_s: float) -> dict[str, int]:
    """Accesses per key per evaluation period: the shards' ``anna_key_accesses`` (their
    most accessed keys in their last access window, summed over the shards) scaled
    from the window to ``period_s``."""
    counts: dict[str, float] = defaultdict(float)
    window = 0.0
    for text in shard_metrics.values():
        for labels, value in _samples(text, "anna_key_accesses"):
            counts[labels.get("key", "")] += value
        for _, value in _samples(text, "anna_key_access_window_seconds"):
            window = max(window, value)
    if not window:
        return {}
    return {key: int(round(n * period_s / window)) for key, n in counts.items()}


def call_seconds(worker_metrics: dict[str, str]) -> dict[str, dict[str, tuple[float, float]]]:
    """Per worker, per function: the cumulative ``(seconds, calls)`` of its runs
    (``cloudburst_call_seconds`` of role executor)."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for source, text in worker_metrics.items():
        sums: dict[str, float] = {}
        counts: dict[str, float] = {}
        for labels, value in _samples(text, "cloudburst_call_seconds_sum"):
            if labels.get("role") == "executor" and labels.get("kind") == "function":
                sums[labels.get("name", "")] = value
        for labels, value in _samples(text, "cloudburst_call_seconds_count"):
            if labels.get("role") == "executor" and labels.get("kind") == "function":
                counts[labels.get("name", "")] = value
        out[source] = {n: (sums.get(n, 0.0), c) for n, c in counts.items()}
    return out


def kvs_seconds(worker_metrics: dict[str, str]) -> dict[str, dict[str, tuple[float, float]]]:
    """Per worker: the cumulative ``(seconds, requests)`` of its KVS requests (every
    type; ``cloudburst_kvs_request_seconds``), under the name ``kvs``."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for source, text in worker_metrics.items():
        secs = sum(v for _, v in _samples(text, "cloudburst_kvs_request_seconds_sum"))
        count = sum(v for _, v in _samples(text, "cloudburst_kvs_request_seconds_count"))
        out[source] = {"kvs": (secs, count)}
    return out


class Autoscaler:
    def __init__(
        self,
        cfg: Config,
        actuator: Any,
        status: Callable[[], pb.ClusterStatus],
        kvs: Any = None,
        scrape: Callable[[], Any] | None = None,
        replicate: Callable[[str, int], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.policy = ClusterPolicy(config_from(cfg.autoscale))
        self.actuator = actuator
        self.status = status
        self.kvs = kvs
        # () -> (shard /metrics text by host, scheduler /metrics text[, worker /metrics
        # text by worker])
        self.scrape = scrape
        self.latencies: dict[str, dict[str, tuple[float, float]]] = {}
        self.kvs_latencies: dict[str, dict[str, tuple[float, float]]] = {}
        self.key_replication: dict[str, int] = {}  # keys whose replication we raised
        # () -> None: tell the scheduler to spread a function over N nodes
        self.replicate = replicate
        self.function_replicas: dict[str, int] = {}  # as the scheduler reports them
        self.calls: dict[str, float] = {}
        self.meter = BusyMeter()  # worker utilization between evaluations
        self.last_step = 0.0
        self.draining: set[str] = set()
        self.history: list[tuple[float, Decision]] = []
        self.trace: list[tuple[float, dict[str, float]]] = []  # inputs per step (bounded)

    def step(self, now: float) -> list[Decision]:
        try:
            owns = getattr(self.actuator, "owns", None)
            status = self.status()
            self.function_replicas = dict(status.function_replicas)
            inputs = executor_inputs(status, self.draining, owns or (lambda node: True), self.meter)
            starting = getattr(self.actuator, "starting", None)
            if starting is not None:
                seen = {n.node_id for n in inputs.executors}
                pending = starting(seen)
                inputs = dataclasses.replace(inputs, pending_executor_nodes=pending)
            if self.scrape is not None:
                shards, scheduler, *more = self.scrape()
                workers = more[0] if more else {}
                rates, self.calls = function_rates(self.calls, scheduler, now - self.last_step)
                seconds = call_seconds(workers)
                latency = mean_latencies(self.latencies, seconds)
                self.latencies = seconds
                functions = {
                    name: dataclasses.replace(
                        load,
                        latency_s=latency.get(name, 0.0),
                        replicas=self.function_replicas.get(name, 1),
                    )
                    for name, load in rates.items()
                }
                storage = []
                if self.cfg.autoscale.kvs_capacity_bytes:
                    storage = storage_inputs(
                        shards, self.cfg.autoscale.kvs_capacity_bytes, self.cfg.kvs.shard_base_port
                    )
                    # the executors' mean KVS request latency this period (seen from
                    # the workers: one figure for every storage node)
                    kvs_now = kvs_seconds(workers)
                    kvs_latency = mean_latencies(self.kvs_latencies, kvs_now).get("kvs", 0.0)
                    self.kvs_latencies = kvs_now
                    storage = [dataclasses.replace(x, latency_s=kvs_latency) for x in storage]
                inputs = dataclasses.replace(
                    inputs,
                    functions=functions,
                    storage=storage,
                    key_accesses=hot_keys(shards, self.cfg.autoscale.period_s),
                    key_replication=dict(self.key_replication),
                    default_replication=self.cfg.kvs.replication_global,
                )
            self.last_step = now
        except Exception as exc:
            log.warning("no status from the scheduler: %s", exc)
            return []
        summary = inputs.summary()
        summary["pending_executor_nodes"] = float(inputs.pending_executor_nodes)
        self.trace.append((now, summary))
        del self.trace[:-1000]
        for name, value in summary.items():
            metrics.AUTOSCALER_INPUT.labels(name).set(value)
        metrics.AUTOSCALER_FUNCTION_INPUT.clear()
        for name, fn in inputs.functions.items():
            metrics.AUTOSCALER_FUNCTION_INPUT.labels(name, "rate").set(fn.rate)
            metrics.AUTOSCALER_FUNCTION_INPUT.labels(name, "latency_s").set(fn.latency_s)
            metrics.AUTOSCALER_FUNCTION_INPUT.labels(name, "replicas").set(fn.replicas)
        metrics.AUTOSCALER_KEY_ACCESSES.clear()
        for key, count in inputs.key_accesses.items():
            metrics.AUTOSCALER_KEY_ACCESSES.labels(key).set(count)
        decisions = self.policy.decide(inputs, now)
        for d in decisions:
            log.info("decision: %s", d.log_line())
            metrics.AUTOSCALER_DECISIONS.labels(d.action.tier, d.action.kind).inc()
            self.history.append((now, d))
            try:
                self.apply(d)
            except Exception:
                log.exception("carrying out %s failed", d.action)
        reap = getattr(self.actuator, "reap", None)
        if reap is not None:
            for node in reap():
                self.draining.discard(node)
                log.info("node %s drained and stopped", node)
        return decisions

    def apply(self, d: Decision) -> None:
        kind, target = d.action.kind, d.action.target
        if kind == "add_executor_node":
            self.actuator.add_executor_node()
        elif kind == "remove_executor_node":
            if self.actuator.remove_executor_node(target):
                # Only an actuator that stops the node itself (and reaps it) knows it
                # is the one draining; Kubernetes picks the pod a scale-down removes:
                # marking the policy's target would hide a live node for ever.
                if getattr(self.actuator, "reap", None) is not None:
                    self.draining.add(target)
            else:
                log.info("node %s was not started by this autoscaler: kept", target)
        elif kind == "add_storage_node":
            self.actuator.add_storage_node()
        elif kind == "remove_storage_node":
            self.actuator.remove_storage_node(target)
        elif kind == "replicate_function" and self.replicate is not None:
            self.replicate(target, d.action.count)
            self.function_replicas[target] = d.action.count
        elif kind == "set_key_replication" and self.kvs is not None:
            self.kvs.set_replication(target, d.action.count)
            if d.action.count > self.cfg.kvs.replication_global:
                self.key_replication[target] = d.action.count
            else:
                self.key_replication.pop(target, None)
        else:
            log.info("%s %s: logged only", kind, target)


def scrape_local(cfg: Config) -> tuple[dict[str, str], str, dict[str, str]]:
    """The ``/metrics`` text of the local cluster's shards (by host), scheduler and
    workers (by worker)."""
    import urllib.request
    from urllib.parse import urlparse

    shards: dict[str, str] = {}
    scheduler = ""
    workers: dict[str, str] = {}
    for rec in metrics.endpoints(cfg.run_dir):
        if rec.get("role") not in ("shard", "scheduler", "worker"):
            continue
        try:
            with urllib.request.urlopen(rec["url"], timeout=1.0) as resp:
                text = resp.read().decode()
        except OSError:
            continue
        if rec["role"] == "scheduler":
            scheduler = text
        elif rec["role"] == "worker":
            workers[f"{rec.get('name')}/{rec.get('pid')}"] = text
        else:
            host = urlparse(rec["url"]).hostname or cfg.ip
            shards[host] = shards.get(host, "") + text
    return shards, scheduler, workers


def make_scrape(cfg: Config, actuator: Any) -> Callable[[], Any]:
    """Where the inputs' ``/metrics`` come from: with the Kubernetes actuator the
    namespace's pods (``cloudburst.autoscale.discovery``, through the actuator's API
    client), else the endpoints recorded in the local ``run_dir``."""
    if isinstance(actuator, KubernetesActuator):
        from cloudburst.autoscale.discovery import KubernetesScraper

        return KubernetesScraper(actuator.core, actuator.namespace, cfg)
    return lambda: scrape_local(cfg)


def make_actuator(cfg: Config) -> Any:
    a = cfg.autoscale
    if a.actuator == "kubernetes":
        return KubernetesActuator(
            a.k8s_namespace,
            a.k8s_executor_deployment,
            a.k8s_storage_statefulset,
            routing=f"{kvs_host(cfg)}:{cfg.kvs.routing_port}",
            shard_base_port=cfg.kvs.shard_base_port,
            ip=cfg.ip,
        )
    ips = [ip.strip() for ip in a.executor_ips.split(",") if ip.strip()]
    return LocalActuator(cfg, f"{cfg.run_dir}/autoscale", ips or None)


def beat(cfg: Config) -> None:
    """Touch the heartbeat file ``python -m cloudburst.health autoscaler`` checks."""
    path = Path(heartbeat_path(cfg))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cloudburst.autoscale.server")
    parser.add_argument("--config", help="YAML config file (defaults + env overrides apply)")
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    setup_logging(
        cfg, "autoscaler", "autoscaler", "%(asctime)s autoscaler %(levelname)s: %(message)s"
    )
    # its decisions and inputs (cloudburst_autoscaler_*) on /metrics
    metrics.serve(cfg, "autoscaler", "autoscaler")
    from cloudburst.client.client import CloudburstConnection
    from cloudburst.shared import security

    # With CURVE on: the cluster's pair for its KVS client (set_key_replication, like
    # the other servers'); the scheduler connection takes the client pair
    # ($CLOUDBURST_SECURITY__KEYS_DIR).
    security.server_security(cfg)
    # The scheduler may start after it (a Kubernetes rollout starts every pod at once):
    # wait for it rather than exit.
    while True:
        try:
            conn = CloudburstConnection(
                scheduler_host(cfg), cfg.ip, port=cfg.scheduler.port, direct=False, timeout=5.0
            )
            break
        except ConnectionFailed as exc:
            log.warning("waiting for the scheduler: %s", exc)
            time.sleep(2.0)
    actuator = make_actuator(cfg)
    from cloudburst.shared.kvs import make_kvs_client

    # hot keys' replication (set_key_replication) goes to the KVS routing tier
    kvs = make_kvs_client(kvs_host(cfg), cfg.kvs.routing_port, ip=cfg.ip, timeout=5.0)
    scaler = Autoscaler(
        cfg,
        actuator,
        lambda: conn._request("status", pb.StatusQuery()).status,
        kvs=kvs,
        scrape=make_scrape(cfg, actuator),
        replicate=lambda fn, n: conn._request(
            "replicate", pb.FunctionReplication(function=fn, replicas=n)
        ),
    )
    running = [True]

    def stop(*_: Any) -> None:
        running[0] = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("autoscaler: every %gs, actuator %s", cfg.autoscale.period_s, cfg.autoscale.actuator)
    try:
        while running[0]:
            scaler.step(time.monotonic())
            beat(cfg)
            end = time.monotonic() + cfg.autoscale.period_s
            while running[0] and time.monotonic() < end:
                time.sleep(0.1)
    finally:
        stop_all = getattr(actuator, "stop_all", None)
        if stop_all is not None:
            stop_all()
        conn.close()
        kvs.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
