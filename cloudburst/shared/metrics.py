"""Prometheus metrics of every server process (see docs/operations.md).

Each process calls :func:`serve` once: it starts ``prometheus_client``'s HTTP server
on its port (``metrics.base_port`` + the role's offset; ``base_port: 0`` or a taken
port: a random free one) and records ``{name, role, pid, port, url}`` in
``<run_dir>/metrics/<name>-<pid>.json``, which ``cloudburst status`` and the tests
read (:func:`endpoints`). The families every role shares are defined here, so an
instrumented spot is one line (``CALLS.labels(...).inc()``). Counters a process
already keeps in a dict (the KVS shards' and routing's ``stats``) are exported at
scrape time by :func:`export_stats`: nothing is added to their hot path.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from bisect import bisect_left
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar, cast

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import REGISTRY, Collector
from prometheus_client.utils import floatToGoString

from cloudburst.shared.config import Config

log = logging.getLogger(__name__)

#: Port offsets from ``metrics.base_port`` (``index`` is the shard or worker index).
OFFSETS = {
    "routing": 0,
    "scheduler": 1,
    "executor-node": 2,
    "cache": 3,
    "supervisor": 4,
    "kvs": 5,  # anna.local, the KVS's supervisor
    "autoscaler": 6,  # cloudburst.autoscale.server
    "shard": 10,
    "worker": 50,
}
INDEXED = {"shard", "worker"}

_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_FAST = (5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.05, 0.25)

# -- families shared by the roles ------------------------------------------------------

CALLS = Counter("cloudburst_calls", "calls handled, by function or DAG", ["role", "kind", "name"])
CALL_ERRORS = Counter(
    "cloudburst_call_errors", "calls that failed, by function or DAG", ["role", "kind", "name"]
)
CALL_SECONDS = Histogram(
    "cloudburst_call_seconds",
    "call latency: scheduler = time to place, executor = time to run",
    ["role", "kind", "name"],
    buckets=_LATENCY,
)
QUEUE_LENGTH = Gauge("cloudburst_queue_length", "messages waiting", ["role", "queue"])
QUEUE_WAIT = Histogram(
    "cloudburst_queue_wait_seconds", "time a call waited before it ran", ["role"], buckets=_LATENCY
)
WORKER_BUSY = Counter(
    "cloudburst_worker_busy_seconds", "seconds a worker spent running user code", ["worker"]
)
POOL_WORKERS = Gauge("cloudburst_pool_workers", "worker processes of an executor node", ["state"])
POOL_EVENTS = Counter(
    "cloudburst_pool_events",
    "pool elasticity: calls handed back/dispatched/refused, workers started/retired",
    ["event"],
)
AUTOSCALER_DECISIONS = Counter(
    "cloudburst_autoscaler_decisions",
    "cluster policy decisions (docs/elasticity.md)",
    ["tier", "action"],
)
AUTOSCALER_INPUT = Gauge(
    "cloudburst_autoscaler_input", "the cluster policy's last inputs", ["name"]
)
AUTOSCALER_FUNCTION_INPUT = Gauge(
    "cloudburst_autoscaler_function_input",
    "the cluster policy's last inputs per function (rate, latency_s, replicas)",
    ["function", "input"],
)
AUTOSCALER_KEY_ACCESSES = Gauge(
    "cloudburst_autoscaler_key_accesses",
    "the cluster policy's last per-key access counts (per period; the hottest keys)",
    ["key"],
)


class FastHistogram(Collector):
    """A histogram for hot paths: an observation is a bisect and two increments
    (~0.3 us against ~2 us for ``prometheus_client.Histogram``, which takes a lock);
    observers in several threads may, rarely, lose an increment (no lock);
    the scrape thread reads a copy. ``count_name`` also exports the count as a counter."""

    def __init__(
        self,
        name: str,
        doc: str,
        buckets: tuple[float, ...],
        label: str = "",
        count_name: str = "",
    ) -> None:
        self.name, self.doc, self.bounds = name, doc, list(buckets)
        self.label, self.count_name = label, count_name
        self.series: dict[str, tuple[list[int], list[float]]] = {}
        REGISTRY.register(self)

    def child(self, value: str = "") -> Callable[[float], None]:
        """``observe(seconds)`` of the series ``label=value``."""
        counts, total = self.series.setdefault(value, ([0] * (len(self.bounds) + 1), [0.0]))
        bounds = self.bounds

        def observe(v: float) -> None:
            counts[bisect_left(bounds, v)] += 1
            total[0] += v

        return observe

    def collect(self) -> Any:
        labels = [self.label] if self.label else []
        hist = HistogramMetricFamily(self.name, self.doc, labels=labels)
        count = CounterMetricFamily(self.count_name or self.name, self.doc, labels=labels)
        for value, (counts, total) in list(self.series.items()):
            cum, acc = [], 0
            for bound, c in zip([*self.bounds, float("inf")], list(counts), strict=True):
                acc += c
                cum.append((floatToGoString(bound), acc))
            lv = [value] if self.label else []
            hist.add_metric(lv, cum, total[0])
            count.add_metric(lv, acc)
        yield hist
        if self.count_name:
            yield count


KVS_SECONDS = FastHistogram(
    "cloudburst_kvs_request_seconds",
    "KVS requests made by this process and their latency",
    _LATENCY,
    label="type",
    count_name="cloudburst_kvs_requests",
)
WAL_WRITE_OBSERVE = FastHistogram("anna_wal_write_seconds", "WAL append latency", _FAST).child()
WAL_FSYNC_OBSERVE = FastHistogram("anna_wal_fsync_seconds", "WAL fsync latency", _FAST).child()


def port_for(cfg: Config, role: str, index: int = 0) -> int:
    """The configured metrics port of ``role`` (0: a random one)."""
    base = cfg.metrics.base_port
    if not base:
        return 0
    return base + OFFSETS.get(role, 6) + (index if role in INDEXED else 0)


def metrics_dir(run_dir: str | os.PathLike[str]) -> Path:
    return Path(run_dir) / "metrics"


def serve(cfg: Config, role: str, name: str, index: int = 0) -> int | None:
    """Start this process's ``/metrics`` server and record it; returns the port (None:
    metrics are off or no port could be bound; the process runs on either way)."""
    from prometheus_client import start_http_server

    local = Path(cfg.run_dir).is_absolute()
    if not cfg.metrics.enabled or (cfg.metrics.local_only and not local):
        return None
    wanted = port_for(cfg, role, index)
    try:
        server, _ = start_http_server(wanted, addr=cfg.ip)
    except OSError as exc:
        if not wanted:
            log.warning("%s: no metrics port: %s", name, exc)
            return None
        log.warning("%s: metrics port %d is taken (%s); using a random one", name, wanted, exc)
        try:
            server, _ = start_http_server(0, addr=cfg.ip)
        except OSError as exc2:
            log.warning("%s: no metrics port: %s", name, exc2)
            return None
    port = int(server.server_port)
    record = {
        "name": name,
        "role": role,
        "pid": os.getpid(),
        "port": port,
        "url": f"http://{cfg.ip}:{port}/metrics",
        "started": time.time(),
    }
    if not local:
        # Not a local-mode cluster (those resolve run_dir): nothing to record into.
        log.info("%s: metrics on %s", name, record["url"])
        return port
    try:
        out = metrics_dir(cfg.run_dir)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / f".{name}-{os.getpid()}.tmp"
        tmp.write_text(json.dumps(record))
        tmp.replace(out / f"{name}-{os.getpid()}.json")
    except OSError as exc:
        log.warning("%s: cannot record the metrics port in %s: %s", name, cfg.run_dir, exc)
    log.info("%s: metrics on %s", name, record["url"])
    return port


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def endpoints(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The recorded ``/metrics`` endpoints of the live processes of a run directory
    (records of exited processes are removed)."""
    out = []
    d = metrics_dir(run_dir)
    if not d.is_dir():
        return []
    for path in sorted(d.glob("*.json")):
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(rec, dict) or not isinstance(rec.get("pid"), int):
            continue
        if not _alive(rec["pid"]):
            path.unlink(missing_ok=True)
            continue
        out.append(rec)
    return sorted(out, key=lambda r: (r["role"], r["name"]))


class StatsCollector(Collector):
    """Exports ``{name: number}`` dicts read at scrape time as ``<prefix>_<name>``."""

    def __init__(
        self,
        prefix: str,
        labels: Mapping[str, str],
        read: Callable[[], Mapping[str, float]],
        gauges: frozenset[str] = frozenset(),
    ) -> None:
        self.prefix = prefix
        self.labels = dict(labels)
        self.read = read
        self.gauges = gauges

    def collect(self) -> Any:
        try:
            stats = dict(self.read())
        except Exception:  # a dict changing size under us: skip this scrape
            return
        keys, values = list(self.labels), list(self.labels.values())
        for name, value in sorted(stats.items()):
            metric = f"{self.prefix}_{name}"
            fam: Any
            if name in self.gauges:
                fam = GaugeMetricFamily(metric, f"{self.prefix} {name}", labels=keys)
            else:
                fam = CounterMetricFamily(metric, f"{self.prefix} {name}", labels=keys)
            fam.add_metric(values, float(value))
            yield fam


def export_stats(
    prefix: str,
    labels: Mapping[str, str],
    read: Callable[[], Mapping[str, float]],
    gauges: frozenset[str] = frozenset(),
) -> None:
    """Export the counters ``read()`` returns at every scrape (see :class:`StatsCollector`)."""
    REGISTRY.register(StatsCollector(prefix, labels, read, gauges))


class RestartsCollector(Collector):
    """``cloudburst_process_restarts_total{supervisor, process}`` and
    ``cloudburst_process_up`` of the children of a supervisor (``Supervised``)."""

    def __init__(self, sup: Any) -> None:
        self.sup = sup

    def collect(self) -> Any:
        restarts = CounterMetricFamily(
            "cloudburst_process_restarts",
            "restarts of a supervised process",
            labels=["supervisor", "process"],
        )
        up = GaugeMetricFamily(
            "cloudburst_process_up",
            "1 while a supervised process runs",
            labels=["supervisor", "process"],
        )
        for name, child in list(self.sup.children.items()):
            restarts.add_metric([self.sup.name, name], float(child.restarts))
            proc = self.sup.procs.get(name)
            up.add_metric([self.sup.name, name], 1.0 if proc and proc.poll() is None else 0.0)
        yield restarts
        yield up


GOSSIP_LAG = Histogram(
    "anna_gossip_lag_seconds",
    "write on one replica -> its gossip's arrival at another (the oldest write of a round)",
    ["shard"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


def observe_gossip_lags(shard: int, lags: list[float]) -> None:
    child = GOSSIP_LAG.labels(str(shard))
    for lag in lags:
        child.observe(lag)


class GossipAgeCollector(Collector):
    """``anna_gossip_last_received_age_seconds{shard, peer}``: seconds since the last
    gossip message from each peer replica (read at scrape time)."""

    def __init__(self, shard: str, read: Callable[[], Mapping[str, int]]) -> None:
        self.shard = shard
        self.read = read

    def collect(self) -> Any:
        family = GaugeMetricFamily(
            "anna_gossip_last_received_age_seconds",
            "seconds since the last gossip received from a peer replica",
            labels=["shard", "peer"],
        )
        now_ms = time.time_ns() // 1_000_000
        for peer, at_ms in sorted(self.read().items()):
            family.add_metric([self.shard, peer], max(0.0, (now_ms - at_ms) / 1000.0))
        yield family


def export_gossip_ages(shard: str, read: Callable[[], Mapping[str, int]]) -> None:
    REGISTRY.register(GossipAgeCollector(shard, read))


class HotKeysCollector(Collector):
    """``anna_key_accesses{shard, key}``: client GETs and PUTs of the shard's most
    accessed keys in its last access window (``anna_key_access_window_seconds``); the
    autoscaler's hot-key input."""

    def __init__(self, shard: str, read: Callable[[], Mapping[str, int]], window: float) -> None:
        self.shard = shard
        self.read = read
        self.window = window

    def collect(self) -> Any:
        family = GaugeMetricFamily(
            "anna_key_accesses",
            "accesses of the shard's most accessed keys in the last access window",
            labels=["shard", "key"],
        )
        for key, count in sorted(self.read().items()):
            family.add_metric([self.shard, key], float(count))
        yield family
        window = GaugeMetricFamily(
            "anna_key_access_window_seconds", "length of a shard's access window", labels=["shard"]
        )
        window.add_metric([self.shard], self.window)
        yield window


def export_hot_keys(shard: str, read: Callable[[], Mapping[str, int]], window: float) -> None:
    REGISTRY.register(HotKeysCollector(shard, read, window))


def export_restarts(sup: Any) -> None:
    REGISTRY.register(RestartsCollector(sup))


def executed(worker: str, dag: str, function: str, seconds: float) -> None:
    """An executor ran ``function`` (of ``dag``) for ``seconds``."""
    CALLS.labels("executor", "function", function).inc()
    CALL_SECONDS.labels("executor", "function", function).observe(seconds)
    WORKER_BUSY.labels(worker).inc(seconds)
    if dag and dag != function:
        CALLS.labels("executor", "dag", dag).inc()


def scheduled(kind: str, name: str, ok: bool, seconds: float) -> None:
    """The scheduler placed (``ok``) or refused a call of function/DAG ``name``."""
    CALLS.labels("scheduler", kind, name).inc()
    CALL_SECONDS.labels("scheduler", kind, name).observe(seconds)
    if not ok:
        CALL_ERRORS.labels("scheduler", kind, name).inc()


_F = TypeVar("_F", bound=Callable[..., Any])


def timed_kvs(kind: str) -> Callable[[_F], _F]:
    """Decorate a KVS client method: ``cloudburst_kvs_requests_total{type}`` and
    ``cloudburst_kvs_request_seconds{type}`` (errors count too)."""
    observe = KVS_SECONDS.child(kind)
    clock = time.perf_counter

    def wrap(fn: _F) -> _F:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            t0 = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                observe(clock() - t0)

        return cast(_F, inner)

    return wrap
