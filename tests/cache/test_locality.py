"""Locality-aware placement fed by real cache data.

Pure part: ``scheduler.placement.choose`` over summaries produced by
``CacheState.key_sizes`` (what executors put in their heartbeats). Integration part:
two executor nodes, each with its own cache; calls whose arguments reference keys run
on the node whose cache holds them.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from cache.client import CacheClient
from cache.protocol import ipc_address
from cloudburst.shared.config import replace
from cloudburst.shared.processes import wait_until
from cloudburst.shared.reference import CloudburstReference
from lattices import LWWPairLattice
from scheduler.placement import ExecutorView, PlacementPolicy, choose
from tests.cache.test_logic import fetch, make


def _summary(store: dict, keys: list[str]) -> dict[str, int]:
    st = make()
    for k in keys:
        fetch(st, [k], store)
    return st.key_sizes()


def _views(now: float) -> dict[str, ExecutorView]:
    return {
        "a1": ExecutorView("a1", "A", last_seen=now),
        "b1": ExecutorView("b1", "B", last_seen=now),
    }


def test_policy_prefers_node_holding_most_referenced_bytes() -> None:
    store = {
        "big": LWWPairLattice(1, bytes(100_000)),
        "small1": LWWPairLattice(1, bytes(1000)),
        "small2": LWWPairLattice(1, bytes(1000)),
    }
    summaries = {"A": _summary(store, ["small1", "small2"]), "B": _summary(store, ["big"])}
    views = _views(1.0)
    chosen = choose(
        views.values(), "f", 1.0, ref_keys=["big", "small1", "small2"], cache_summaries=summaries
    )
    assert chosen is not None and chosen.node_id == "B"
    chosen = choose(views.values(), "f", 1.0, ref_keys=["small1"], cache_summaries=summaries)
    assert chosen is not None and chosen.node_id == "A"


def test_policy_skips_overloaded_node_holding_the_data() -> None:
    store = {"big": LWWPairLattice(1, bytes(100_000))}
    summaries = {"B": _summary(store, ["big"])}
    views = _views(1.0)
    views["b1"].busy = 1
    views["b1"].queue_length = 10
    chosen = choose(
        views.values(),
        "f",
        1.0,
        PlacementPolicy(overload=4),
        ref_keys=["big"],
        cache_summaries=summaries,
    )
    assert chosen is not None and chosen.node_id == "A"


def test_policy_ignores_evicted_keys() -> None:
    # A summary reflects evictions: a key pushed out of B's cache no longer attracts.
    from tests.cache.test_logic import ENTRY_OVERHEAD, codec

    value = LWWPairLattice(1, bytes(5000))
    size = len(codec.to_payload(value)[1]) + 2 + ENTRY_OVERHEAD
    from cache.logic import CacheState
    from tests.cache.test_logic import ADDR_RESP, RESP, ROUTING

    st = CacheState("B", [ROUTING], RESP, ADDR_RESP, capacity_bytes=size)
    fetch(st, ["k1"], {"k1": value})
    fetch(st, ["k2"], {"k2": value})
    summaries = {"A": {"k1": 10}, "B": st.key_sizes()}
    chosen = choose(_views(1.0).values(), "f", 1.0, ref_keys=["k1"], cache_summaries=summaries)
    assert chosen is not None and chosen.node_id == "A"


def where(_lib, *arrays):  # runs on an executor
    return os.environ.get("CB_NODE_CACHE", ""), float(sum(a.sum() for a in arrays))


def test_placement_follows_the_data_across_two_nodes(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.integration.conftest import start_cluster

    cluster = start_cluster(tmp_path / "run", workers=2)
    try:
        # The second node is its own host: 127.0.0.2 (every 127.0.0.x is a separate
        # address on Linux loopback), reaching the KVS and scheduler on 127.0.0.1.
        cfg2 = replace(
            cluster.cfg,
            ip="127.0.0.2",
            kvs={"host": cluster.cfg.ip},
            scheduler={"host": cluster.cfg.ip},
        )
        cfg2_path = tmp_path / "node2.yml"
        cfg2_path.write_text(yaml.safe_dump(dataclasses.asdict(cfg2)))
        cluster.group.python("executor2", "executor.node", "--config", str(cfg2_path))
        cloud = cluster.connect()  # direct path on: calls with references still go by locality
        try:
            wait_until(lambda: cloud.status()["executors"] >= 4, timeout=60, what="4 workers")
            nodes = sorted({e["node_id"] for e in cloud.status()["executor_list"]})
            assert len(nodes) == 2
            assert {n.split("/")[0] for n in nodes} == {"127.0.0.1", "127.0.0.2"}
            cfg = cluster.cfg
            fn = cloud.register(where, "where_locality")
            arrays = {
                f"loc/{n}/{i}": np.full(50_000, i, dtype=np.float64)
                for n in (0, 1)
                for i in range(3)
            }
            for key, arr in arrays.items():
                assert cloud.put_object(key, arr)
            kvs = f"{cfg.ip}:{cfg.kvs.routing_port}"
            for n, node in enumerate(nodes):
                address = ipc_address(cfg.cache.ipc_dir, node)
                with CacheClient(cfg=cfg, address=address, kvs_addr=kvs, local_bytes=0) as cc:
                    keys = [f"loc/{n}/{i}" for i in range(3)]
                    assert all(v is not None for v in cc.get(keys).values())
                    assert not cc.using_fallback
                    assert set(keys) <= set(cc.cached_key_sizes() or {})
            # The scheduler learns the cache contents from the workers' heartbeats
            # (every 0.25 s here); give it several periods before the first call, since
            # a call placed elsewhere would make that node's cache fetch the keys too.
            time.sleep(6 * cfg.executor.heartbeat_period_s)
            for n, node in enumerate(nodes):
                refs = [CloudburstReference(f"loc/{n}/{i}") for i in range(3)]
                want = ipc_address(cfg.cache.ipc_dir, node)
                results = [fn(*refs).get(timeout=20) for _ in range(5)]
                assert [r[0] for r in results] == [want] * 5, (node, results)
                assert results[0][1] == float(3 * 50_000)  # 0 + 1 + 2 per element
        finally:
            cloud.close()
    finally:
        cluster.group.stop_all()
    assert not [p.name for p in cluster.group.procs.values() if p.alive()]
