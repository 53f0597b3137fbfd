"""The cluster policy: metrics in, actions out. Pure: no I/O, no clock (``now`` is given).

Cloudburst's management policy and Anna's monitor, as one function of what the
cluster reports (:class:`Inputs`) to what to change (:class:`Decision`s):

executors
    add a node when the average worker utilization is above ``executor_high`` (or the
    oldest call waits longer than ``queue_wait_high_s``), remove the least loaded node
    when it is below ``executor_low`` (the actuator drains it first: no call lost),
    replicate a function's placement when its call rate is above
    ``hot_function_rate`` (and back when it falls below a tenth of it);
storage
    add a storage node when memory use or latency is above ``kvs_memory_high`` /
    ``kvs_latency_high_s``, remove one when memory use is below ``kvs_memory_low``
    (through the KVS depart hand-off), raise a key's replication when it is accessed
    more than ``hot_key_accesses`` times per period (and back when it cools down).

Hysteresis: a condition must hold for ``hysteresis`` consecutive evaluations before
it acts, and the add and remove thresholds are far apart; after an action on a tier
(executors or storage) that tier waits ``grace_s`` (new nodes take time to start and
to take load), counted from when the nodes it added report (``pending_*_nodes``). Every decision carries the inputs it was made on (the shell logs them
and exports them as metrics).

>>> p = ClusterPolicy(PolicyConfig(hysteresis=1))
>>> inputs = Inputs(executors=[NodeLoad("n1", utilization=0.9, workers=3)])
>>> [d.action.kind for d in p.decide(inputs, now=100.0)]
['add_executor_node']
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PolicyConfig:
    """Thresholds (``cfg.autoscale``, docs/elasticity.md)."""

    executor_high: float = 0.6
    executor_low: float = 0.1
    queue_wait_high_s: float = 1.0
    min_executor_nodes: int = 1
    max_executor_nodes: int = 4
    hot_function_rate: float = 100.0  # calls per second
    hot_function_workers: float = 2.0  # busy workers per replica (rate x latency); 0: off
    max_function_replicas: int = 8
    kvs_memory_high: float = 0.7
    kvs_memory_low: float = 0.2
    kvs_latency_high_s: float = 0.05
    min_storage_nodes: int = 1
    max_storage_nodes: int = 4
    hot_key_accesses: int = 1000  # per evaluation period
    cold_key_accesses: int = 10
    hot_key_replication: int = 3
    hysteresis: int = 2  # consecutive evaluations a condition must hold
    grace_s: float = 30.0  # after an action on a tier, that tier waits this long

    def __post_init__(self) -> None:
        if not 0 <= self.executor_low < self.executor_high:
            raise ValueError("need 0 <= executor_low < executor_high")
        if not 0 <= self.kvs_memory_low < self.kvs_memory_high:
            raise ValueError("need 0 <= kvs_memory_low < kvs_memory_high")
        if self.hysteresis < 1:
            raise ValueError("hysteresis must be >= 1")


@dataclass(frozen=True)
class NodeLoad:
    """One executor node: its workers' average utilization (busy fraction, 0..1)."""

    node_id: str
    utilization: float
    workers: int = 1
    queue_wait_s: float = 0.0  # the longest a call waited there
    draining: bool = False
    removable: bool = True  # the actuator can remove it (local: a node it started)


@dataclass(frozen=True)
class FunctionLoad:
    rate: float  # calls per second
    latency_s: float = 0.0  # mean run time of its calls this period
    replicas: int = 1  # nodes its placement spreads over (scheduler replicas)

    @property
    def workers(self) -> float:
        """Workers its calls keep busy on average (Little's law: rate x latency)."""
        return self.rate * self.latency_s


@dataclass(frozen=True)
class StorageLoad:
    node_id: str
    memory_bytes: int
    capacity_bytes: int
    latency_s: float = 0.0

    @property
    def memory_fraction(self) -> float:
        return self.memory_bytes / self.capacity_bytes if self.capacity_bytes else 0.0


@dataclass(frozen=True)
class Inputs:
    executors: list[NodeLoad] = field(default_factory=list)
    functions: Mapping[str, FunctionLoad] = field(default_factory=dict)
    storage: list[StorageLoad] = field(default_factory=list)
    key_accesses: Mapping[str, int] = field(default_factory=dict)  # this period
    key_replication: Mapping[str, int] = field(default_factory=dict)  # keys raised before
    default_replication: int = 1
    pending_executor_nodes: int = 0  # added, not reporting yet (capacity on its way)
    pending_storage_nodes: int = 0

    def summary(self) -> dict[str, float]:
        """The numbers a decision is made on (logged, exported as metrics)."""
        live = [n for n in self.executors if not n.draining]
        out: dict[str, float] = {
            "executor_nodes": float(len(live)),
            "executor_utilization": _mean([n.utilization for n in live]),
            "queue_wait_s": max((n.queue_wait_s for n in live), default=0.0),
            "storage_nodes": float(len(self.storage)),
            "kvs_memory": max((s.memory_fraction for s in self.storage), default=0.0),
            "kvs_latency_s": max((s.latency_s for s in self.storage), default=0.0),
            "function_rate_max": max((f.rate for f in self.functions.values()), default=0.0),
            "function_workers_max": max((f.workers for f in self.functions.values()), default=0.0),
            "key_accesses_max": float(max(self.key_accesses.values(), default=0)),
        }
        return out


@dataclass(frozen=True)
class Action:
    kind: str  # add_executor_node | remove_executor_node | replicate_function |
    #            add_storage_node | remove_storage_node | set_key_replication
    target: str = ""  # node id, function name or key
    count: int = 0  # replicas for replicate_function / set_key_replication

    @property
    def tier(self) -> str:
        if self.kind in ("add_storage_node", "remove_storage_node", "set_key_replication"):
            return "storage"
        return "executor"


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    inputs: dict[str, float]

    def log_line(self) -> str:
        nums = " ".join(f"{k}={v:.3g}" for k, v in sorted(self.inputs.items()))
        target = f" {self.action.target}" if self.action.target else ""
        count = f" x{self.action.count}" if self.action.count else ""
        return f"{self.action.kind}{target}{count}: {self.reason} [{nums}]"


class ClusterPolicy:
    """Keeps the streaks and grace periods between evaluations (call :meth:`decide`
    once per period)."""

    def __init__(self, cfg: PolicyConfig) -> None:
        self.cfg = cfg
        self.streaks: dict[str, int] = {}
        self.last_action: dict[str, float] = {}

    def _holds(self, condition: str, value: bool) -> bool:
        """True once ``condition`` held ``hysteresis`` evaluations in a row."""
        if not value:
            self.streaks.pop(condition, None)
            return False
        self.streaks[condition] = self.streaks.get(condition, 0) + 1
        return self.streaks[condition] >= self.cfg.hysteresis

    def _in_grace(self, tier: str, now: float) -> bool:
        return now - self.last_action.get(tier, float("-inf")) < self.cfg.grace_s

    def decide(self, inputs: Inputs, now: float) -> list[Decision]:
        c = self.cfg
        nums = inputs.summary()
        out: list[Decision] = []

        def act(action: Action, reason: str, extra: Mapping[str, float] | None = None) -> None:
            out.append(Decision(action, reason, {**nums, **(extra or {})}))

        # Capacity still on its way (a node added, not reporting yet): the grace period
        # runs from when it arrives, and what was measured before it does not count
        # towards the next decision (a node that takes longer to start than grace_s
        # would otherwise be followed by another add the moment it shows up).
        for tier, pending in (
            ("executor", inputs.pending_executor_nodes),
            ("storage", inputs.pending_storage_nodes),
        ):
            if pending:
                self.last_action[tier] = max(self.last_action.get(tier, now), now)
                self.streaks.pop(f"{tier}_high", None)
                self.streaks.pop(f"{tier}_low", None)

        # --- executors ---------------------------------------------------------
        live = [n for n in inputs.executors if not n.draining]
        util = nums["executor_utilization"]
        wait = nums["queue_wait_s"]
        grow = self._holds(
            "executor_high", bool(live) and (util > c.executor_high or wait > c.queue_wait_high_s)
        )
        shrink = self._holds("executor_low", bool(live) and util < c.executor_low and wait == 0.0)
        if not self._in_grace("executor", now):
            pending = inputs.pending_executor_nodes
            if grow and not pending and len(live) < c.max_executor_nodes:
                why = (
                    f"utilization {util:.2f} > {c.executor_high}"
                    if util > c.executor_high
                    else (f"calls waited {wait:.2f}s > {c.queue_wait_high_s}s")
                )
                act(Action("add_executor_node"), why)
            elif (
                shrink
                and not pending
                and len(live) > c.min_executor_nodes
                and (removable := [n for n in live if n.removable])
            ):
                victim = min(removable, key=lambda n: (n.utilization, n.queue_wait_s, n.node_id))
                act(
                    Action("remove_executor_node", victim.node_id),
                    f"utilization {util:.2f} < {c.executor_low}; least loaded node",
                )
        for name, fn in sorted(inputs.functions.items()):
            fnums = {
                "function_rate": fn.rate,
                "function_latency_s": fn.latency_s,
                "function_replicas": float(fn.replicas),
            }
            busy_hot = bool(c.hot_function_workers) and (
                fn.workers > c.hot_function_workers * fn.replicas
            )
            hot = self._holds(f"hot_function:{name}", fn.rate > c.hot_function_rate or busy_hot)
            cold = self._holds(
                f"cold_function:{name}",
                fn.rate < c.hot_function_rate / 10
                and (not c.hot_function_workers or fn.workers < c.hot_function_workers / 2),
            )
            if hot and fn.replicas < c.max_function_replicas:
                want = min(c.max_function_replicas, fn.replicas * 2)
                why = (
                    f"{fn.rate:.0f} calls/s > {c.hot_function_rate:g}"
                    if fn.rate > c.hot_function_rate
                    else (
                        f"{fn.workers:.1f} busy workers ({fn.rate:.1f} calls/s x "
                        f"{fn.latency_s * 1e3:.0f} ms) > {c.hot_function_workers:g} x "
                        f"{fn.replicas} replica(s)"
                    )
                )
                act(Action("replicate_function", name, want), why, fnums)
                self.streaks.pop(f"hot_function:{name}", None)
            elif cold and fn.replicas > 1:
                act(
                    Action("replicate_function", name, 1),
                    f"{fn.rate:.1f} calls/s < {c.hot_function_rate / 10:g} and "
                    f"{fn.workers:.2f} busy workers < {c.hot_function_workers / 2:g}",
                    fnums,
                )

        # --- storage -----------------------------------------------------------
        mem, lat = nums["kvs_memory"], nums["kvs_latency_s"]
        nodes = len(inputs.storage)
        s_grow = self._holds(
            "storage_high",
            bool(nodes) and (mem > c.kvs_memory_high or lat > c.kvs_latency_high_s),
        )
        s_shrink = self._holds(
            "storage_low", bool(nodes) and mem < c.kvs_memory_low and lat <= c.kvs_latency_high_s
        )
        if not self._in_grace("storage", now):
            if s_grow and not inputs.pending_storage_nodes and nodes < c.max_storage_nodes:
                why = (
                    f"memory {mem:.2f} > {c.kvs_memory_high}"
                    if mem > c.kvs_memory_high
                    else (f"latency {lat * 1e3:.1f} ms > {c.kvs_latency_high_s * 1e3:g} ms")
                )
                act(Action("add_storage_node"), why)
            elif s_shrink and nodes > c.min_storage_nodes:
                leaving = min(inputs.storage, key=lambda s: (s.memory_bytes, s.node_id))
                act(
                    Action("remove_storage_node", leaving.node_id),
                    f"memory {mem:.2f} < {c.kvs_memory_low}; depart hand-off first",
                )
        for key, count in sorted(inputs.key_accesses.items()):
            current = inputs.key_replication.get(key, inputs.default_replication)
            if count > c.hot_key_accesses and current < c.hot_key_replication:
                act(
                    Action("set_key_replication", key, c.hot_key_replication),
                    f"{count} accesses > {c.hot_key_accesses}",
                    {"key_accesses": float(count), "key_replication": float(current)},
                )
        for key, current in sorted(inputs.key_replication.items()):
            count = inputs.key_accesses.get(key, 0)
            if current > inputs.default_replication and count < c.cold_key_accesses:
                act(
                    Action("set_key_replication", key, inputs.default_replication),
                    f"{count} accesses < {c.cold_key_accesses}: back to the default",
                    {"key_accesses": float(count), "key_replication": float(current)},
                )

        for d in out:
            if d.action.kind in (
                "add_executor_node",
                "remove_executor_node",
                "add_storage_node",
                "remove_storage_node",
            ):
                self.last_action[d.action.tier] = now
                self.streaks.pop(
                    "executor_high" if d.action.tier == "executor" else "storage_high", None
                )
                self.streaks.pop(
                    "executor_low" if d.action.tier == "executor" else "storage_low", None
                )
        return out


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def config_from(section: Any) -> PolicyConfig:
    """A :class:`PolicyConfig` from ``cfg.autoscale`` (same field names)."""
    names = PolicyConfig.__dataclass_fields__
    return PolicyConfig(**{n: getattr(section, n) for n in names if hasattr(section, n)})
