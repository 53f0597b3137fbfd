"""Fixtures for the cache tests: a real local KVS and real cache processes.

Every port is free and passed through a config file; every process is started through
the ``procs`` fixture, so it is always stopped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from cache.client import CacheClient
from cloudburst.shared.config import Config, load_config
from cloudburst.shared.processes import (
    ManagedProcess,
    ProcessGroup,
    free_port,
    free_port_block,
    port_open,
    wait_until,
)

PUSH_PERIOD_MS = 50


@dataclasses.dataclass
class Cluster:
    """A running KVS plus helpers to start caches against it."""

    cfg: Config
    cfg_path: Path
    procs: ProcessGroup
    kvs_addr: str
    tmp: Path

    def start_cache(
        self, node_id: str, ip: str = "127.0.0.1", capacity_bytes: int | None = None
    ) -> CacheClient:
        """Start ``python -m cache.server`` for ``node_id``; a connected client."""
        cfg_path = self.cfg_path
        if capacity_bytes is not None:
            cfg_path = self.tmp / f"cache-{node_id}.yml"
            data = dataclasses.asdict(self.cfg)
            data["cache"]["capacity_bytes"] = capacity_bytes
            cfg_path.write_text(yaml.safe_dump(data))
        self.procs.python(
            f"cache-{node_id}",
            "cache.server",
            "--config",
            str(cfg_path),
            "--node-id",
            node_id,
            "--kvs",
            self.kvs_addr,
            "--ip",
            ip,
        )
        client = CacheClient(node_id, self.cfg, kvs_addr=self.kvs_addr, timeout=10.0)
        wait_until(lambda: client.ping(timeout=0.5), timeout=20, what=f"cache {node_id}")
        return client


def write_config(tmp: Path, **cache: object) -> tuple[Config, Path]:
    base = free_port_block(4)
    shard_base = free_port_block(1)
    while not all(
        p not in range(base, base + 4) for p in (shard_base, shard_base + 50, shard_base + 100)
    ):
        shard_base = free_port_block(1)
    data = {
        "ip": "127.0.0.1",
        "log_level": "INFO",
        "run_dir": str(tmp / "run"),
        "kvs": {
            "routing_port": base,
            "shard_base_port": shard_base,
            "gossip_base_port": shard_base + 50,
            "shards": 1,
            "data_dir": str(tmp / "kvs"),
            "wal_fsync": "never",
            "request_timeout_s": 3.0,
        },
        "cache": {"ipc_dir": str(tmp / "ipc"), "push_period_ms": PUSH_PERIOD_MS, **cache},
    }
    path = tmp / "config.yml"
    path.write_text(yaml.safe_dump(data))
    return load_config(path, env={}), path


def start_kvs(group: ProcessGroup, cfg: Config, path: Path) -> ManagedProcess:
    """``anna.local`` with ``path``'s config in ``group``, once its ports answer."""
    proc = group.python("kvs", "anna.local", "--config", str(path))
    wait_until(
        lambda: (
            port_open("127.0.0.1", cfg.kvs.routing_port)
            and port_open("127.0.0.1", cfg.kvs.shard_base_port)
        ),
        timeout=30,
        what="local KVS",
    )
    return proc


@pytest.fixture(scope="module")
def _kvs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Config, Path, str]]:
    """One KVS per test module (tests use distinct keys); always stopped."""
    tmp = tmp_path_factory.mktemp("cache-kvs")
    cfg, path = write_config(tmp)
    with ProcessGroup(log_dir=tmp / "logs") as group:
        start_kvs(group, cfg, path)
        yield cfg, path, f"127.0.0.1:{cfg.kvs.routing_port}"
    assert not [p.name for p in group.procs.values() if p.alive()]


@pytest.fixture
def cluster(_kvs: tuple[Config, Path, str], procs: ProcessGroup, tmp_path: Path) -> Cluster:
    """The module's KVS plus this test's process group (its caches stop with the test)."""
    cfg, path, kvs_addr = _kvs
    return Cluster(cfg, path, procs, kvs_addr, tmp_path)


@pytest.fixture
def kvs_client(cluster: Cluster) -> Iterator[Callable[..., object]]:
    from anna.client import AnnaTcpClient

    clients: list[AnnaTcpClient] = []

    def make() -> AnnaTcpClient:
        c = AnnaTcpClient(cluster.kvs_addr, timeout=5.0)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()


__all__ = ["Cluster", "free_port"]
