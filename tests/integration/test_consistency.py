"""Consistency modes across a DAG (docs/consistency.md), on two executor nodes.

DAG ``f -> g``, both read key ``k``; ``f`` runs on node 1 (127.0.0.1), ``g`` on node 2
(127.0.0.2): each has a reference argument to an "anchor" key held only in its node's
cache, so the scheduler places it there by locality. The client overwrites ``k`` after
``f`` read it and before ``g`` reads it (``f`` waits for a file the test creates).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from cache.client import CacheClient
from cache.protocol import ipc_address
from cloudburst.client.client import MULTI, NORMAL, SINGLE, CloudburstConnection
from cloudburst.local import wait_ready
from cloudburst.shared.config import replace
from cloudburst.shared.errors import InvalidArgument
from cloudburst.shared.processes import wait_until
from cloudburst.shared.reference import CloudburstReference
from cloudburst.shared.values import from_lattice
from lattices import MultiKeyCausalLattice
from tests.integration.conftest import Cluster, start_cluster

TRIALS = 200


def _node() -> str:
    return os.environ.get("CB_NODE_CACHE", "")


def reader_f(lib: Any, _anchor: Any, key: str, flag_dir: str) -> tuple[Any, str]:
    seen = lib.get(key)
    Path(flag_dir, "read").touch()
    deadline = time.monotonic() + 10
    while not Path(flag_dir, "go").exists():  # the client overwrites key meanwhile
        if time.monotonic() > deadline:
            raise TimeoutError("the test never said go")
        time.sleep(0.0005)
    return seen, _node()


@dataclasses.dataclass
class TwoNodes:
    cluster: Cluster
    cloud: CloudburstConnection
    nodes: list[str]
    caches: list[CacheClient]  # one per node, to watch what it holds


def _fast_until(check: Any, timeout: float, what: str) -> None:
    wait_until(check, timeout, what, interval=0.0005)


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoNodes]:
    tmp = tmp_path_factory.mktemp("consistency")
    # Short push period: the test waits for the KVS's pushes to reach both caches.
    # Both nodes start at once (each Python start-up takes seconds on a loaded machine).
    cluster = start_cluster(tmp / "run", workers=1, cache={"push_period_ms": 5}, wait=False)
    cloud = None
    caches: list[CacheClient] = []
    try:
        cfg2 = replace(
            cluster.cfg,
            ip="127.0.0.2",
            kvs={"host": cluster.cfg.ip},
            scheduler={"host": cluster.cfg.ip},
        )
        path = tmp / "node2.yml"
        path.write_text(yaml.safe_dump(dataclasses.asdict(cfg2)))
        cluster.group.python("executor2", "executor.node", "--config", str(path))
        wait_ready(cluster.cfg, 2, timeout=90.0)
        cloud = cluster.connect(timeout=20.0)
        wait_until(lambda: cloud.status()["executors"] >= 2, timeout=60, what="2 workers")
        nodes = sorted({e["node_id"] for e in cloud.status()["executor_list"]})
        assert len(nodes) == 2
        cfg = cluster.cfg
        kvs = f"{cfg.ip}:{cfg.kvs.routing_port}"
        for n, node in enumerate(nodes):  # each node's cache holds its anchor
            key = f"anchor/{n}"
            assert cloud.put_object(key, np.full(20_000, n, dtype=np.float64))
            address = ipc_address(cfg.cache.ipc_dir, node)
            cc = CacheClient(cfg=cfg, address=address, kvs_addr=kvs, local_bytes=0)
            caches.append(cc)
            assert cc.get([key])[key] is not None
        time.sleep(6 * cfg.executor.heartbeat_period_s)  # summaries reach the scheduler
        yield TwoNodes(cluster, cloud, nodes, caches)
    finally:
        for cc in caches:
            cc.close()
        if cloud is not None:
            cloud.close()
        cluster.group.stop_all()
    assert not [p.name for p in cluster.group.procs.values() if p.alive()]


def _pinned_bytes(env: TwoNodes) -> list[int]:
    out = []
    for cc in env.caches:
        stats = cc.stats()
        assert stats is not None
        out.append(int(stats["pinned_bytes"]))
    return out


def _wait_cache(env: TwoNodes, key: str, want: str) -> None:
    """Both node caches hold ``want`` (pushed by the KVS): a NORMAL read sees it."""
    for cc, node in zip(env.caches, env.nodes, strict=True):
        _fast_until(
            lambda cc=cc: from_lattice(cc.get([key])[key]) == want,
            timeout=10,
            what=f"{key}={want} in {node}'s cache",
        )


def _anomaly_dag(env: TwoNodes, mode: int) -> tuple[str, str]:
    name = f"anomaly{mode}"
    key = f"consistency/k{mode}"

    def g(lib: Any, _anchor: Any, f_saw: Any, f_node: str) -> tuple[Any, Any, str, str]:
        return f_saw, lib.get(key), f_node, _node()  # (f's result tuple is spread)

    env.cloud.register(reader_f, f"{name}_f")
    env.cloud.register(g, f"{name}_g")
    assert env.cloud.register_dag(name, [f"{name}_f", f"{name}_g"], [(f"{name}_f", f"{name}_g")])[0]
    return name, key


def _anomaly_trials(env: TwoNodes, mode: int, trials: int, tmp: Path) -> list[tuple[Any, ...]]:
    name, key = _anomaly_dag(env, mode)
    out = []
    for i in range(trials):
        # The same key every trial: both node caches hold it and get the KVS's pushes.
        assert env.cloud.put_object(key, f"old{i}")
        _wait_cache(env, key, f"old{i}")
        flags = tmp / f"{mode}-{i}"
        flags.mkdir()
        args = {
            f"{name}_f": [CloudburstReference("anchor/0"), key, str(flags)],
            f"{name}_g": [CloudburstReference("anchor/1")],
        }
        kw: dict[str, Any] = {"consistency": mode}
        if mode == MULTI:
            kw.update(output_key=f"consistency/out/{i}", client_id="tester")
        fut = env.cloud.call_dag(name, args, **kw)
        read = flags / "read"
        # (a call that failed instead raises here)
        _fast_until(
            lambda read=read, fut=fut: read.exists() or (fut.done() and fut.get() is None),
            20,
            "f read k",
        )
        assert env.cloud.put_object(key, f"new{i}")  # f read k; g has not yet
        _wait_cache(env, key, f"new{i}")
        (flags / "go").touch()
        out.append((i, *fut.get(timeout=20)))
    return out


def test_normal_shows_the_anomaly(two_nodes: TwoNodes, tmp_path: Path) -> None:
    rows = _anomaly_trials(two_nodes, NORMAL, 10, tmp_path)
    for i, f_saw, g_saw, f_node, g_node in rows:
        assert f_node != g_node, "f and g should run on different nodes"
        assert (f_saw, g_saw) == (f"old{i}", f"new{i}")


@pytest.mark.parametrize("mode", [SINGLE, MULTI])
def test_repeatable_read_across_nodes(two_nodes: TwoNodes, tmp_path: Path, mode: int) -> None:
    rows = _anomaly_trials(two_nodes, mode, TRIALS, tmp_path)
    bad = [r for r in rows if r[1] != r[2] or r[1] != f"old{r[0]}"]
    assert not bad, bad[:5]
    cross = sum(1 for r in rows if r[3] != r[4])
    assert cross >= TRIALS * 0.9, f"only {cross} of {TRIALS} trials ran on two nodes"
    _fast_until(lambda: _pinned_bytes(two_nodes) == [0, 0], timeout=10, what="pins released")
    if mode == MULTI:
        out = two_nodes.cloud.get_object(f"consistency/out/{TRIALS - 1}")
        assert isinstance(out, MultiKeyCausalLattice)
        # Every call of the client follows its previous one (through the scheduler).
        assert out.vector_clock.get("tester") == TRIALS
        assert f"consistency/k{MULTI}" not in out.dependencies  # LWW reads: no clock


def test_pins_released_after_1000_calls_with_failures(two_nodes: TwoNodes) -> None:
    cloud = two_nodes.cloud
    key = "consistency/leak"
    assert cloud.put_object(key, 0)

    def first(lib: Any, _anchor: Any, i: int) -> int:
        lib.get(key)
        if i % 5 == 0:
            raise ValueError(f"call {i} fails after pinning")
        lib.put(f"{key}/w", i)  # a write of the call is pinned too
        return i

    def second(lib: Any, _anchor: Any, i: int) -> tuple[int, Any, Any]:
        return i, lib.get(key), lib.get(f"{key}/w")

    cloud.register(first, "leak_f")
    cloud.register(second, "leak_g")
    assert cloud.register_dag("leak", ["leak_f", "leak_g"], [("leak_f", "leak_g")])[0]
    failed = done = 0
    for start in range(0, 1000, 50):
        futs = [
            cloud.call_dag(
                "leak",
                {
                    "leak_f": [CloudburstReference("anchor/0"), i],
                    "leak_g": [CloudburstReference("anchor/1")],
                },
                consistency=SINGLE,
            )
            for i in range(start, start + 50)
        ]
        for i, fut in zip(range(start, start + 50), futs, strict=True):
            if i % 5 == 0:
                with pytest.raises(Exception, match="fails after pinning"):
                    fut.get(timeout=30)
                failed += 1
            else:
                assert fut.get(timeout=30) == (i, 0, i)  # g reads f's write
                done += 1
    assert (failed, done) == (200, 800)
    _fast_until(lambda: _pinned_bytes(two_nodes) == [0, 0], timeout=10, what="pins released")
    stats = [cc.stats() or {} for cc in two_nodes.caches]
    assert sum(s.get("pins", 0) for s in stats) >= 1000  # pins were taken
    assert sum(s.get("pin_fetches", 0) for s in stats) >= 800  # across the nodes


def test_multi_needs_output_key_and_client_id(two_nodes: TwoNodes) -> None:
    with pytest.raises(InvalidArgument, match="output_key and client_id"):
        two_nodes.cloud.call_dag("anything", {}, consistency=MULTI)
    with pytest.raises(InvalidArgument, match="output_key and client_id"):
        two_nodes.cloud.call_dag("anything", {}, consistency=MULTI, output_key="o")


def _causal(n: int, deps: dict[str, Any] | None = None) -> MultiKeyCausalLattice:
    from cloudburst.shared import serializer

    return MultiKeyCausalLattice({"w": n}, deps or {}, {serializer.to_bytes(n)})


def causal_f(lib: Any, _anchor: Any, key: str) -> tuple[int, str]:
    b = lib.get(key)
    return b.dependencies["causal/a"].get("w"), _node()


@pytest.mark.parametrize("mode", [SINGLE, MULTI])
def test_causal_read_waits_for_the_version_a_dependency_needs(
    two_nodes: TwoNodes, tmp_path: Path, mode: int
) -> None:
    """``f`` (node 1) reads ``b``, which depends on ``a`` at version 2; ``g`` (node 2)
    reads ``a`` while the KVS still holds version 1 (the write of version 2 lags, as a
    replica would). MULTI: ``g`` waits for version 2; SINGLE: ``g`` reads version 1."""
    cloud = two_nodes.cloud
    name = f"causal{mode}"
    flag = tmp_path / "g-reads"

    def causal_g(lib: Any, _anchor: Any, dep: int, f_node: str) -> tuple[int, int, str, str]:
        Path(str(flag)).touch()
        a = lib.get("causal/a")
        return dep, a.vector_clock.get("w"), f_node, _node()

    cloud.register(causal_f, f"{name}_f")
    cloud.register(causal_g, f"{name}_g")
    assert cloud.register_dag(name, [f"{name}_f", f"{name}_g"], [(f"{name}_f", f"{name}_g")])[0]
    for trial in range(3):
        n = 10 * (mode * 10 + trial)  # versions grow across trials and modes
        assert cloud.put_object("causal/a", _causal(n + 1))
        assert cloud.put_object("causal/b", _causal(n + 2, {"causal/a": {"w": n + 2}}))
        for cc in two_nodes.caches:  # both caches hold them (as in a quiet system)
            for key, want in (("causal/a", n + 1), ("causal/b", n + 2)):
                _fast_until(
                    lambda cc=cc, key=key, want=want: (
                        (got := cc.get([key])[key]) is not None
                        and got.vector_clock.get("w") == want
                    ),
                    10,
                    f"{key} at {want} in the caches",
                )
        flag.unlink(missing_ok=True)
        kw: dict[str, Any] = {"consistency": mode}
        if mode == MULTI:
            kw.update(output_key=f"causal/out/{trial}", client_id="tester")
        fut = cloud.call_dag(
            name,
            {
                f"{name}_f": [CloudburstReference("anchor/0"), "causal/b"],
                f"{name}_g": [CloudburstReference("anchor/1")],
            },
            **kw,
        )
        _fast_until(
            lambda fut=fut: flag.exists() or (fut.done() and fut.get() is None), 20, "g starts"
        )
        time.sleep(0.5)  # g reads now: the version b depends on is not written yet
        assert cloud.put_object("causal/a", _causal(n + 2))
        dep, g_saw, f_node, g_node = fut.get(timeout=20)
        assert f_node != g_node
        assert dep == n + 2
        assert g_saw == (n + 2 if mode == MULTI else n + 1)
    _fast_until(lambda: _pinned_bytes(two_nodes) == [0, 0], timeout=10, what="pins released")


def test_single_chain_in_place_on_the_direct_path(two_nodes: TwoNodes, tmp_path: Path) -> None:
    """No reference arguments: calls take the client's direct-trigger path and ``g``
    runs in place after ``f`` (one worker, the node cache pins)."""
    cloud = two_nodes.cloud
    key = "consistency/direct"

    def f(lib: Any, flag_dir: str) -> Any:
        seen = lib.get(key)
        Path(flag_dir, "read").touch()
        deadline = time.monotonic() + 10
        while not Path(flag_dir, "go").exists():
            if time.monotonic() > deadline:
                raise TimeoutError("the test never said go")
            time.sleep(0.0005)
        return seen

    def g(lib: Any, f_saw: Any) -> tuple[Any, Any]:
        return f_saw, lib.get(key)

    cloud.register(f, "direct_f")
    cloud.register(g, "direct_g")
    assert cloud.register_dag("direct", ["direct_f", "direct_g"], [("direct_f", "direct_g")])[0]
    for i in range(30):
        assert cloud.put_object(key, f"old{i}")
        _wait_cache(two_nodes, key, f"old{i}")
        flags = tmp_path / str(i)
        flags.mkdir()
        fut = cloud.call_dag("direct", {"direct_f": [str(flags)]}, consistency=SINGLE)
        _fast_until(
            lambda r=flags / "read", fut=fut: r.exists() or (fut.done() and fut.get() is None),
            20,
            "f read k",
        )
        assert cloud.put_object(key, f"new{i}")
        _wait_cache(two_nodes, key, f"new{i}")
        (flags / "go").touch()
        assert fut.get(timeout=20) == (f"old{i}", f"old{i}")
    assert "dag:direct" in cloud._placements  # the fast path was taken
    _fast_until(lambda: _pinned_bytes(two_nodes) == [0, 0], timeout=10, what="pins released")


def test_pins_of_a_dead_executor_are_released(two_nodes: TwoNodes, tmp_path: Path) -> None:
    """``f`` pins ``k`` on node 1, then its worker is killed: node 1's cache drops the
    dead worker's pins (it checks the pids of its clients every second). Last in the
    module: the killed worker is replaced meanwhile."""
    import signal

    name, key = _anomaly_dag(two_nodes, SINGLE)
    cloud = two_nodes.cloud
    assert cloud.put_object(key, "before-kill")
    flags = tmp_path / "kill"
    flags.mkdir()
    fut = cloud.call_dag(
        name,
        {
            f"{name}_f": [CloudburstReference("anchor/0"), key, str(flags)],
            f"{name}_g": [CloudburstReference("anchor/1")],
        },
        consistency=SINGLE,
    )
    _fast_until((flags / "read").exists, 20, "f read k")
    # f runs where placement put it (mostly node 1, by its anchor's data): the node
    # whose cache holds f's pin is the one whose worker is killed.
    pinned = _pinned_bytes(two_nodes)
    assert sum(1 for b in pinned if b > 0) == 1, pinned
    idx = 0 if pinned[0] > 0 else 1
    node = two_nodes.nodes[idx]
    busy = [e for e in cloud.status()["executor_list"] if e["node_id"] == node and e.get("pid")]
    assert len(busy) == 1
    os.kill(busy[0]["pid"], signal.SIGKILL)
    _fast_until(lambda: _pinned_bytes(two_nodes)[idx] == 0, 10, "the dead worker's pins dropped")
    (flags / "go").touch()  # a retry of the call (if any) may finish now
    try:
        fut.get(timeout=30)
    except Exception:
        pass  # the call failed with its executor: what matters here are the pins
    _fast_until(lambda: _pinned_bytes(two_nodes) == [0, 0], 10, "pins released")
