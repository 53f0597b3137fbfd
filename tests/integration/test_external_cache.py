"""An executor node whose cache runs apart (``cache.external``: the Kubernetes pod's
second container), with real processes on loopback: the node does not start a cache,
``cache.server --node-id auto`` serves the socket the node's workers were given, and
calls keep working (through the KVS) while that cache is down and use it again once a
new one is up."""

from __future__ import annotations

import dataclasses
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cache.client import CacheClient
from cache.protocol import external_node_id, ipc_address
from cloudburst import health
from cloudburst.client.client import CloudburstConnection
from cloudburst.local import free_port_config, wait_ready, write_config
from cloudburst.shared.config import Config
from cloudburst.shared.processes import ProcessGroup, wait_until

CALL_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def external(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Config, Path, ProcessGroup]]:
    run_dir = tmp_path_factory.mktemp("extcache")
    cfg = free_port_config(
        run_dir,
        workers=1,
        scheduler={"heartbeat_timeout_s": 2.0, "call_timeout_s": 30.0},
        executor={"workers": 1, "base_port": 0, "heartbeat_period_s": 0.25},
    )
    path = write_config(cfg, run_dir / "config.yml")
    group = ProcessGroup(log_dir=run_dir / "logs")
    try:
        group.python("kvs", "anna.local", "--config", str(path))
        group.python("scheduler", "scheduler.server", "--config", str(path))
        group.python("executor", "executor.node", "--config", str(path), "--external-cache")
        wait_ready(cfg, 1, timeout=60.0)
        yield cfg, path, group
    except BaseException:
        print("\n".join(f"--- {p.name}\n{p.log_tail(40)}" for p in group.procs.values()))
        raise
    finally:
        group.stop_all()
    assert not [p.name for p in group.procs.values() if p.alive()]


def _cache_stats(cfg: Config) -> dict[str, Any] | None:
    address = ipc_address(cfg.cache.ipc_dir, external_node_id(cfg.ip, cfg.executor.base_port))
    client = CacheClient(cfg=cfg, address=address, timeout=2.0)
    try:
        return client.stats(timeout=2.0)
    finally:
        client.close()


def _start_cache(cfg: Config, path: Path, group: ProcessGroup) -> None:
    group.python("cache", "cache.server", "--config", str(path), "--node-id", "auto")
    wait_until(lambda: health.check("cache", cfg, timeout=2.0, deep=True) is None, 60.0, "cache up")


def test_workers_use_a_cache_started_apart_and_survive_its_restarts(
    external: tuple[Config, Path, ProcessGroup],
) -> None:
    cfg, path, group = external
    conn = CloudburstConnection(cfg.ip, cfg.ip, port=cfg.scheduler.port, timeout=CALL_TIMEOUT)
    try:
        assert conn.put_object("ext-k", {"v": 1})
        read = conn.register(lambda lib, key: lib.get(key), "ext_read")

        # No cache yet: the node did not start one, and the worker reads from the KVS.
        assert "cache" not in group.procs
        assert health.check("cache", cfg, timeout=1.0) is not None
        # The node's probe with cache.external (as in its pod) does not need the cache.
        node_cfg = dataclasses.replace(cfg, cache=dataclasses.replace(cfg.cache, external=True))
        assert health.check("executor", node_cfg, timeout=2.0) is None
        assert health.check("executor", cfg, timeout=2.0) is not None
        assert read("ext-k").get(timeout=CALL_TIMEOUT) == {"v": 1}

        for round_ in range(2):  # the first cache, then one started after a SIGKILL
            _start_cache(cfg, path, group)

            def hit() -> bool:
                assert read("ext-k").get(timeout=CALL_TIMEOUT) == {"v": 1}
                stats = _cache_stats(cfg)
                return stats is not None and stats["hits"] >= 1

            wait_until(hit, 90.0, f"a hit in the external cache (round {round_})", interval=0.5)

            group.kill("cache", signal.SIGKILL)
            assert health.check("cache", cfg, timeout=1.0) is not None
            # Calls keep working while the cache is down (the KVS fallback).
            assert conn.put_object("ext-k2", round_)
            got = conn.register(lambda lib, key: lib.get(key), "ext_read2")("ext-k2")
            assert got.get(timeout=CALL_TIMEOUT) == round_
            assert read("ext-k").get(timeout=CALL_TIMEOUT) == {"v": 1}
            # The node did not bring a cache of its own back.
            assert health.check("cache", cfg, timeout=1.0) is not None
    except BaseException:
        print("\n".join(f"--- {p.name}\n{p.log_tail(40)}" for p in group.procs.values()))
        raise
    finally:
        conn.close()
