"""The executor node's cache: started with the node, used by its workers, restarted
when it dies, with the workers falling back to the KVS meanwhile."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np

from cache.client import CacheClient
from cache.protocol import ipc_address
from cloudburst.shared.processes import wait_until
from cloudburst.shared.reference import CloudburstReference


def total(_lib, *arrays):  # runs on an executor
    return float(sum(a.sum() for a in arrays))


def test_node_cache_is_used_and_restarted(tmp_path: Path) -> None:
    from tests.integration.conftest import start_cluster

    cluster = start_cluster(tmp_path / "run", workers=1)
    try:
        cloud = cluster.connect()
        try:
            cfg = cluster.cfg
            (node,) = {e["node_id"] for e in cloud.status()["executor_list"]}
            address = ipc_address(cfg.cache.ipc_dir, node)
            kvs = f"{cfg.ip}:{cfg.kvs.routing_port}"
            fn = cloud.register(total, "total_node_cache")
            for i in range(3):
                assert cloud.put_object(f"nc/{i}", np.full(1000, i, dtype=np.float64))
            refs = [CloudburstReference(f"nc/{i}") for i in range(3)]
            with CacheClient(cfg=cfg, address=address, kvs_addr=kvs, local_bytes=0) as cc:
                assert fn(*refs).get(timeout=20) == 3000.0
                first = cc.stats()
                assert first is not None and first["misses"] >= 3
                assert fn(*refs).get(timeout=20) == 3000.0
                assert cc.stats()["hits"] >= first["hits"] + 3  # the worker read via the cache
                pid = cc.info()["pid"]
                os.kill(pid, signal.SIGKILL)
                # Calls keep working while the cache is down or restarting (fallback).
                assert fn(*refs).get(timeout=20) == 3000.0

                def restarted() -> bool:
                    info = cc.info(timeout=0.5)
                    return info is not None and info["pid"] != pid

                wait_until(restarted, timeout=20, what="the node to restart its cache")

                def used_again() -> bool:
                    # The worker reconnects on its own (within ~0.5 s); until then its
                    # reads go to the KVS, so keep calling.
                    assert fn(*refs).get(timeout=20) == 3000.0
                    return (cc.stats(timeout=0.5) or {}).get("entries", 0) >= 3

                wait_until(used_again, timeout=20, what="the worker to use the restarted cache")
        finally:
            cloud.close()
    finally:
        cluster.group.stop_all()
    assert not [p.name for p in cluster.group.procs.values() if p.alive()]
