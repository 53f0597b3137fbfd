"""Placement policy: which executor runs a function. Pure logic (no sockets, no clock).

The scheduler keeps one :class:`ExecutorView` per executor worker, fed by heartbeats,
and asks :func:`choose` for each function of a call. Ranking, best first:

1. alive and not excluded (dead or leaving executors are never chosen);
2. not overloaded (load below ``PlacementPolicy.overload``) before overloaded;
3. locality: the most bytes of the call's referenced keys in the executor's node
   cache (per-node summaries ``node_id -> {key: bytes}``, fed by the cache);
4. the lowest load (reported queue + busy + assignments made in the last
   ``recent_window`` seconds, so a burst of calls spreads before the next heartbeat);
5. executors that already hold the function (no cold load);
6. the lowest worker index on its node (packing: with light load the workers a node
   added for a burst fall idle and retire, docs/elasticity.md);
7. the least recently assigned (round robin among equals, e.g. across nodes).

A replicated function (``replicas`` > 1: the autoscaler found it hot,
``FunctionReplication``) spreads over that many nodes: the locality of its keys counts
no more than on the ``replicas``-th best node, so the best nodes tie on locality and
the load decides among them (instead of every call going to the one node that caches
its data until its workers are overloaded).

DAG options (``register_dag``) narrow the candidates first: a GPU function goes only
to executors that advertise a GPU; a function of a ``colocated`` group goes to the
node of the group's functions placed before it (on a worker of its own there if one
is free, else sharing one), and anywhere when that node has no candidate (the group's
first function prefers a node with a free worker for each); a batching
function goes to its *home* (the executor its calls went to before, while it is a
candidate), so pending calls meet on one worker and run as a batch.

>>> views = {"a": ExecutorView("a", "n1", last_seen=0.0)}
>>> choose(views.values(), "f", now=0.1).address
'a'
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PlacementPolicy:
    """Tunables of :func:`choose`."""

    heartbeat_timeout: float = 3.0
    overload: int = 4
    recent_window: float = 0.05


@dataclass
class ExecutorView:
    """What the scheduler knows about one executor worker."""

    address: str
    node_id: str
    functions: frozenset[str] = frozenset()
    busy: int = 0
    queue_length: int = 0
    last_seen: float = 0.0
    pid: int = 0
    inbox_address: str = ""
    control_address: str = ""  # where cancels go (ExecutorStatus.control_address)
    leaving: bool = False
    current_call: str = ""  # the call running there at its last heartbeat
    current_call_s: float = 0.0  # for how long it had been running
    slot: int | None = None  # index of the worker on its node (None: not reported)
    gpu: bool = False  # its node has a GPU (executor.gpu)
    busy_s: float = 0.0  # seconds it spent running calls, and its age, at its last
    uptime_s: float = 0.0  # heartbeat (ExecutorStatus.busy_s / uptime_s)
    last_assigned: float = float("-inf")
    recent: deque[float] = field(default_factory=deque)

    def alive(self, now: float, policy: PlacementPolicy) -> bool:
        return not self.leaving and now - self.last_seen <= policy.heartbeat_timeout

    def load(self, now: float, policy: PlacementPolicy) -> int:
        horizon = now - policy.recent_window
        while self.recent and self.recent[0] < horizon:
            self.recent.popleft()
        return self.busy + self.queue_length + len(self.recent)

    def assign(self, function: str, now: float) -> None:
        """Record that a call was placed here (counts as load for a short window)."""
        self.recent.append(now)
        self.last_assigned = now


def locality_bytes(
    node_id: str,
    ref_keys: Collection[str],
    cache_summaries: Mapping[str, Mapping[str, int]],
) -> int:
    """Bytes of ``ref_keys`` the node's cache holds, per its last summary."""
    if not ref_keys:
        return 0
    summary = cache_summaries.get(node_id)
    if not summary:
        return 0
    return sum(summary.get(key, 0) for key in ref_keys)


def choose(
    executors: Iterable[ExecutorView],
    function: str,
    now: float,
    policy: PlacementPolicy = PlacementPolicy(),
    *,
    exclude: Collection[str] = (),
    ref_keys: Collection[str] = (),
    cache_summaries: Mapping[str, Mapping[str, int]] | None = None,
    replicas: int = 1,
) -> ExecutorView | None:
    """The best executor for ``function`` (see the module docstring), or ``None`` when
    no executor is alive. Does not record the assignment (see :meth:`ExecutorView.assign`)."""
    summaries = cache_summaries or {}
    best: ExecutorView | None = None
    best_key: tuple[int, int, int, int, int, float] | None = None
    cap: int | None = None
    if replicas > 1 and ref_keys and summaries:
        executors = list(executors)
        per_node = {
            ex.node_id: locality_bytes(ex.node_id, ref_keys, summaries)
            for ex in executors
            if ex.address not in exclude and ex.alive(now, policy)
        }
        ranked = sorted(per_node.values(), reverse=True)
        cap = ranked[replicas - 1] if len(ranked) >= replicas else 0
    for ex in executors:
        if ex.address in exclude or not ex.alive(now, policy):
            continue
        load = ex.load(now, policy)
        overloaded = load >= policy.overload
        local = 0 if overloaded else locality_bytes(ex.node_id, ref_keys, summaries)
        if cap is not None:
            local = min(local, cap)
        key = (
            int(overloaded),
            -local,
            load,
            0 if function in ex.functions else 1,
            ex.slot or 0,
            ex.last_assigned,
        )
        if best_key is None or key < best_key:
            best, best_key = ex, key
    return best


def place(
    executors: Mapping[str, ExecutorView],
    functions: Iterable[str],
    now: float,
    policy: PlacementPolicy = PlacementPolicy(),
    *,
    exclude: Collection[str] = (),
    ref_keys: Mapping[str, Collection[str]] | None = None,
    cache_summaries: Mapping[str, Mapping[str, int]] | None = None,
    gpu: Collection[str] = (),
    colocated: Sequence[Collection[str]] = (),
    batching: Collection[str] = (),
    homes: MutableMapping[str, str] | None = None,
    replicas: Mapping[str, int] | None = None,
) -> dict[str, str] | None:
    """Place every function of a call: ``function -> executor address``, recording each
    assignment so the functions of one DAG spread; ``None`` if some function has no
    candidate (no executor alive, or no GPU executor for a GPU function).

    ``gpu``, ``colocated`` and ``batching`` are the DAG's options (module docstring);
    ``homes`` (``function -> address``) remembers where batching functions went and is
    updated here. ``replicas``: function -> nodes a hot function spreads over."""
    refs = ref_keys or {}
    spread = replicas or {}
    out: dict[str, str] = {}
    group_of = {fn: group for group in colocated for fn in group}
    for fn in functions:
        pool: list[ExecutorView] = list(executors.values())
        if fn in gpu:
            pool = [ex for ex in pool if ex.gpu]
        home = homes.get(fn) if homes is not None and fn in batching else None
        homed = [ex for ex in pool if ex.address == home and ex.address not in exclude]
        if homed and homed[0].alive(now, policy):
            ex: ExecutorView | None = homed[0]
        else:
            # Each function of a DAG on its own worker while there are enough: a worker
            # runs one function at a time, and streaming stages (DDTs) must run side by
            # side. Colocated: the group's node first (own worker, then a shared one).
            tries: list[tuple[list[ExecutorView], Collection[str]]] = []
            group = group_of.get(fn, ())
            nodes = {executors[out[g]].node_id for g in group if g in out}
            if nodes:
                near = [e for e in pool if e.node_id in nodes]
                tries += [(near, {*exclude, *out.values()}), (near, exclude)]
            elif len(group) > 1:  # the group's first: a node with a free worker for each
                free: dict[str, int] = {}
                for e in pool:
                    if e.alive(now, policy) and e.address not in exclude:
                        if e.address not in out.values():
                            free[e.node_id] = free.get(e.node_id, 0) + 1
                roomy = [e for e in pool if free.get(e.node_id, 0) >= len(group)]
                tries.append((roomy, {*exclude, *out.values()}))
            tries += [(pool, {*exclude, *out.values()}), (pool, exclude)]
            ex = None
            for candidates, excluded in tries:
                ex = choose(
                    candidates,
                    fn,
                    now,
                    policy,
                    exclude=excluded,
                    ref_keys=refs.get(fn, ()),
                    cache_summaries=cache_summaries,
                    replicas=spread.get(fn, 1),
                )
                if ex is not None:
                    break
        if ex is None:
            return None
        ex.assign(fn, now)
        out[fn] = ex.address
        if homes is not None and fn in batching:
            homes[fn] = ex.address
    return out
