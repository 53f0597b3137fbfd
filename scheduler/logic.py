"""Scheduler state machine: executor table, DAG validation and call planning.

No sockets, no clock, no KVS: the shell (``scheduler/server.py``) passes ``now`` and the
registered functions/DAGs in, and carries out the messages this module builds.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from cloudburst.shared.proto import cloudburst_pb2 as pb
from scheduler.placement import ExecutorView, PlacementPolicy, place

log = logging.getLogger(__name__)

MAX_NAME = 512


class PlanError(Exception):
    """A request the scheduler refuses; carries the error code for the client."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def check_name(kind: str, name: str) -> None:
    if not name or len(name) > MAX_NAME or any(ord(ch) < 32 for ch in name):
        raise PlanError(pb.INVALID_ARGUMENT, f"invalid {kind} name {name!r}")


def sources(dag: pb.Dag) -> list[str]:
    """Functions with no incoming connection, in the DAG's function order."""
    sinks = {link.sink for link in dag.connections}
    return [fn for fn in dag.functions if fn not in sinks]


def validate_dag(dag: pb.Dag, registered: Collection[str]) -> None:
    """Raise :class:`PlanError` unless ``dag`` is a well-formed DAG over registered
    functions: unique function names, links between its own functions, no cycle."""
    check_name("DAG", dag.name)
    if not dag.functions:
        raise PlanError(pb.INVALID_ARGUMENT, f"DAG {dag.name!r} has no functions")
    seen: set[str] = set()
    for fn in dag.functions:
        check_name("function", fn)
        if fn in seen:
            raise PlanError(pb.INVALID_ARGUMENT, f"DAG {dag.name!r} lists {fn!r} twice")
        seen.add(fn)
    missing = [fn for fn in dag.functions if fn not in registered]
    if missing:
        raise PlanError(
            pb.FUNC_NOT_FOUND,
            f"DAG {dag.name!r} names unregistered function(s) {missing}; register them first",
        )
    edges: dict[str, list[str]] = {fn: [] for fn in dag.functions}
    pairs: set[tuple[str, str]] = set()
    for link in dag.connections:
        for end in (link.source, link.sink):
            if end not in seen:
                raise PlanError(
                    pb.INVALID_ARGUMENT,
                    f"DAG {dag.name!r}: connection {link.source!r} -> {link.sink!r} names "
                    f"{end!r}, which is not one of its functions {list(dag.functions)}",
                )
        if (link.source, link.sink) in pairs:
            raise PlanError(
                pb.INVALID_ARGUMENT,
                f"DAG {dag.name!r}: connection {link.source!r} -> {link.sink!r} given twice",
            )
        pairs.add((link.source, link.sink))
        edges[link.source].append(link.sink)
    validate_options(dag, seen)
    # Cycle check: iterative DFS with colours.
    colour: dict[str, int] = dict.fromkeys(dag.functions, 0)
    for root in dag.functions:
        if colour[root]:
            continue
        stack = [(root, iter(edges[root]))]
        colour[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                colour[node] = 2
                stack.pop()
            elif colour[child] == 1:
                raise PlanError(
                    pb.INVALID_ARGUMENT, f"DAG {dag.name!r} has a cycle through {child!r}"
                )
            elif colour[child] == 0:
                colour[child] = 1
                stack.append((child, iter(edges[child])))


def validate_options(dag: pb.Dag, functions: Collection[str]) -> None:
    """The DAG options (MULTIEXEC, GPU, batching, colocated groups) name its functions."""
    named = [
        ("MULTIEXEC", list(dag.multiexec)),
        ("gpu_functions", list(dag.gpu_functions)),
        ("batching_functions", list(dag.batching_functions)),
        ("colocated", [fn for group in dag.colocated for fn in group.functions]),
    ]
    for what, names in named:
        stray = [fn for fn in names if fn not in functions]
        if stray:
            raise PlanError(
                pb.INVALID_ARGUMENT,
                f"DAG {dag.name!r}: {what} names {stray}, which are not among its "
                f"functions {list(dag.functions)}",
            )


def _options(dag: pb.Dag) -> tuple[object, ...]:
    return (
        sorted(
            (fn, [v.SerializeToString() for v in inv.values]) for fn, inv in dag.multiexec.items()
        ),
        sorted(dag.gpu_functions),
        sorted(dag.batching_functions),
        sorted(sorted(g.functions) for g in dag.colocated),
    )


def same_dag(a: pb.Dag, b: pb.Dag) -> bool:
    """Whether two registrations describe the same DAG: the same functions, the same
    connections and options (order aside). Re-registering the same DAG is an
    idempotent success."""
    return (
        a.name == b.name
        and sorted(a.functions) == sorted(b.functions)
        and {(c.source, c.sink) for c in a.connections}
        == {(c.source, c.sink) for c in b.connections}
        and _options(a) == _options(b)
    )


def check_limits(name: str, timeout_s: float, memory_bytes: int) -> None:
    """Refuse per-call limits that cannot be meant (negative, NaN, infinite)."""
    if not (0.0 <= timeout_s < float("inf")):
        raise PlanError(
            pb.INVALID_ARGUMENT,
            f"function {name!r}: timeout must be a positive number of seconds, not {timeout_s}",
        )
    if memory_bytes and memory_bytes < 1 << 20:
        raise PlanError(
            pb.INVALID_ARGUMENT,
            f"function {name!r}: memory limit {memory_bytes} bytes is below 1 MiB",
        )


def build_dag(
    name: str, functions: Iterable[str], connections: Iterable[tuple[str, str]]
) -> pb.Dag:
    dag = pb.Dag(name=name, functions=list(functions))
    for src, dst in connections:
        dag.connections.add(source=src, sink=dst)
    return dag


def reference_keys(arguments: Mapping[str, pb.Arguments]) -> dict[str, list[str]]:
    """Per function, the KVS keys its arguments reference (for locality)."""
    out: dict[str, list[str]] = {}
    for fn, args in arguments.items():
        keys = [a.reference.key for a in args.values if a.WhichOneof("kind") == "reference"]
        if keys:
            out[fn] = keys
    return out


@dataclass(frozen=True)
class Send:
    """An action: push ``data`` (a serialized ExecutorMessage) to an executor."""

    address: str
    data: bytes


@dataclass
class SchedulerState:
    """Executors known from heartbeats and the planning of calls."""

    policy: PlacementPolicy = field(default_factory=PlacementPolicy)
    executors: dict[str, ExecutorView] = field(default_factory=dict)
    cache_summaries: dict[str, dict[str, int]] = field(default_factory=dict)
    #: executors dropped (replaced in their slot, or disconnected) until ``expire``
    #: reports them
    dropped: list[str] = field(default_factory=list)
    #: batching function -> the executor its calls go to (see placement.place)
    batch_homes: dict[str, str] = field(default_factory=dict)
    #: hot function -> the nodes its calls spread over (FunctionReplication)
    replicas: dict[str, int] = field(default_factory=dict)

    # --- liveness ----------------------------------------------------------

    def on_heartbeat(self, status: pb.ExecutorStatus, now: float) -> bool:
        """Record a heartbeat; True if this executor is new (or came back)."""
        if not status.address:
            raise PlanError(pb.INVALID_ARGUMENT, "heartbeat without an address")
        view = self.executors.get(status.address)
        new = view is None or not view.alive(now, self.policy) or view.pid != status.pid
        if view is None or view.pid != status.pid:
            view = ExecutorView(status.address, status.node_id)
            self.executors[status.address] = view
        view.node_id = status.node_id
        view.functions = frozenset(status.functions)
        view.busy = status.busy
        view.queue_length = status.queue_length
        view.last_seen = now
        view.pid = status.pid
        view.inbox_address = status.inbox_address
        view.control_address = status.control_address
        view.leaving = status.leaving
        view.current_call = status.current_call
        view.current_call_s = status.current_call_s
        view.gpu = status.gpu
        view.busy_s, view.uptime_s = status.busy_s, status.uptime_s
        if status.indexed:
            view.slot = status.index
            if new:
                self._replaced(view)
        if status.has_cache_summary:
            self.cache_summaries[status.node_id] = dict(status.cached_key_sizes)
        if new and not status.leaving:
            log.info(
                "executor %s (node %s, pid %d) is up", status.address, status.node_id, status.pid
            )
        return new

    def _replaced(self, view: ExecutorView) -> None:
        """A new worker in a node's slot: the one it replaces is dead (restarted by its
        node after a crash, a kill or a runaway call), without waiting for its
        heartbeats to stop."""
        for address, other in list(self.executors.items()):
            if (
                other is not view
                and other.node_id == view.node_id
                and other.slot == view.slot
                and other.pid != view.pid
            ):
                del self.executors[address]
                self.dropped.append(address)
                log.warning(
                    "executor %s (node %s, pid %d) was replaced by %s (pid %d): marked dead",
                    address,
                    other.node_id,
                    other.pid,
                    view.address,
                    view.pid,
                )

    def disconnected(self, address: str) -> bool:
        """The connection to an executor broke (its process died, or the network
        failed): mark it dead now. A live one is back with its next heartbeat."""
        view = self.executors.pop(address, None)
        if view is None:
            return False
        self.dropped.append(address)
        log.warning(
            "executor %s (node %s, pid %d): connection lost, marked dead",
            address,
            view.node_id,
            view.pid,
        )
        return True

    def expire(self, now: float) -> list[str]:
        """Forget executors whose heartbeats stopped; returns their addresses (and
        those of executors dropped since the last call)."""
        gone = [a for a, v in self.executors.items() if not v.alive(now, self.policy)]
        dropped, self.dropped = self.dropped, []
        for address in gone:
            view = self.executors.pop(address)
            log.warning(
                "executor %s (node %s, pid %d) %s: marked dead",
                address,
                view.node_id,
                view.pid,
                "left" if view.leaving else "missed heartbeats",
            )
        live_nodes = {v.node_id for v in self.executors.values()}
        for node in list(self.cache_summaries):
            if node not in live_nodes:
                del self.cache_summaries[node]
        return gone + dropped

    def set_replicas(self, function: str, replicas: int) -> None:
        """Spread ``function``'s calls over ``replicas`` nodes (1: the default)."""
        if not function:
            raise PlanError(pb.INVALID_ARGUMENT, "replicate: no function named")
        if replicas > 1:
            self.replicas[function] = replicas
        else:
            self.replicas.pop(function, None)

    def alive(self, now: float) -> list[ExecutorView]:
        return [v for v in self.executors.values() if v.alive(now, self.policy)]

    def is_alive(self, address: str, now: float) -> bool:
        view = self.executors.get(address)
        return view is not None and view.alive(now, self.policy)

    # --- planning ----------------------------------------------------------

    def plan(
        self,
        dag: pb.Dag,
        arguments: Mapping[str, pb.Arguments],
        now: float,
        *,
        request_id: str,
        response_address: str,
        output_key: str = "",
        consistency: int = pb.NORMAL,
        client_id: str = "",
        client_clock: pb.Clock | None = None,
        exclude: Collection[str] = (),
        versions: Mapping[str, int] | None = None,
        expiring_output: bool = False,
        sent_at: float = 0.0,
        continuation: pb.DagCall | None = None,
    ) -> tuple[pb.DagSchedule, list[Send]]:
        """Place a call of ``dag``: the schedule and the triggers for its sources."""
        unknown = [fn for fn in arguments if fn not in dag.functions]
        if unknown:
            raise PlanError(
                pb.INVALID_ARGUMENT,
                f"arguments given for {unknown}, which are not functions of DAG "
                f"{dag.name!r} ({list(dag.functions)})",
            )
        if dag.gpu_functions and not any(
            v.gpu and v.alive(now, self.policy) and v.address not in exclude
            for v in self.executors.values()
        ):
            raise PlanError(
                pb.NO_RESOURCES,
                f"DAG {dag.name!r}: {list(dag.gpu_functions)} must run on a GPU, and no "
                "live executor advertises one (start an executor node with "
                "executor.gpu: true in its config)",
            )
        locations = place(
            self.executors,
            dag.functions,
            now,
            self.policy,
            exclude=exclude,
            # Locality needs the keys only when some node reported a cache summary.
            ref_keys=reference_keys(arguments) if self.cache_summaries else None,
            cache_summaries=self.cache_summaries,
            gpu=set(dag.gpu_functions),
            colocated=[set(g.functions) for g in dag.colocated],
            batching=set(dag.batching_functions),
            homes=self.batch_homes,
            replicas=self.replicas,
        )
        if locations is None:
            raise PlanError(
                pb.NO_RESOURCES,
                "no live executor to run the call"
                + (f" (excluding failed {sorted(exclude)})" if exclude else ""),
            )
        # Built in place inside the trigger: one copy of the DAG and arguments per call.
        msg = pb.ExecutorMessage()
        schedule = msg.trigger.schedule
        schedule.id = request_id
        schedule.dag.CopyFrom(dag)
        schedule.locations.update(locations)
        if response_address:
            schedule.response_address = response_address
        if sent_at:
            schedule.sent_at = sent_at
        if output_key:
            schedule.output_key = output_key
            if expiring_output:
                schedule.expiring_output = True
        if consistency:
            schedule.consistency = consistency  # type: ignore[assignment]
        if client_id:
            schedule.client_id = client_id
        if client_clock is not None and client_clock.entries:
            schedule.client_clock.CopyFrom(client_clock)
        for fn, args in arguments.items():
            schedule.arguments[fn].CopyFrom(args)
        if continuation is not None:
            schedule.continuation.CopyFrom(continuation)
        if versions:
            for fn in dag.functions:
                if fn in versions:
                    schedule.versions[fn] = versions[fn]
        return schedule, triggers_for_sources(msg)


def continued_arguments(dag: pb.Dag, call: pb.DagCall) -> dict[str, pb.Arguments]:
    """The arguments of a continuation call: its own, then the previous call's result
    (``call.continued_with``) appended to those of each source function of ``dag``."""
    out = {fn: args for fn, args in call.function_args.items()}
    if not call.continued:
        return out
    for fn in sources(dag):
        args = pb.Arguments()
        if fn in out:
            args.CopyFrom(out[fn])
        args.values.extend(call.continued_with.values)
        out[fn] = args
    return out


def triggers_for_sources(msg: pb.ExecutorMessage) -> list[Send]:
    """The messages that start a planned call (``msg.trigger.schedule`` filled in):
    one trigger per source function."""
    schedule = msg.trigger.schedule
    out = []
    for fn in sources(schedule.dag):
        msg.trigger.target_function = fn
        out.append(Send(schedule.locations[fn], msg.SerializeToString()))
    return out
