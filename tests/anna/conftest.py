"""Fixtures for the KVS tests: configs on free ports and a local KVS cluster.

``kvs_cluster`` starts ``python -m anna.local`` (routing + shards) on free ports and
waits until a real GET round trip works; the ``procs`` fixture always stops it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from anna.client import AnnaTcpClient
from cloudburst.shared.processes import ProcessGroup, free_port, port_free, wait_until


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: a KVS test that takes more than ~10 s")


def alloc_kvs_ports(shards: int, ip: str = "127.0.0.1") -> dict[str, int]:
    """Free ports for routing, shard requests (+100 cache) and gossip."""
    for _ in range(500):
        base = free_port(ip)
        gossip = free_port(ip)
        routing = free_port(ip)
        if base + 100 + shards >= 65535 or gossip + shards >= 65535:
            continue
        ports = [base + t for t in range(shards)] + [base + 100 + t for t in range(shards)]
        ports += [gossip + t for t in range(shards)]
        if len(set(ports) | {routing}) != len(ports) + 1:
            continue
        if all(port_free(ip, p) for p in ports) and port_free(ip, routing):
            return {"routing_port": routing, "shard_base_port": base, "gossip_base_port": gossip}
    raise RuntimeError("no free ports")


@dataclass
class KvsCluster:
    """A running local KVS node (routing + shards) started by a test."""

    procs: ProcessGroup
    config_path: Path
    cfg: dict[str, Any]
    name: str

    @property
    def ip(self) -> str:
        return str(self.cfg["ip"])

    @property
    def routing_port(self) -> int:
        return int(self.cfg["kvs"]["routing_port"])

    @property
    def routing_address(self) -> str:
        return f"tcp://{self.ip}:{self.routing_port}"

    def shard_address(self, t: int) -> str:
        return f"tcp://{self.ip}:{self.cfg['kvs']['shard_base_port'] + t}"

    def client(self, **kw: Any) -> AnnaTcpClient:
        kw.setdefault("timeout", 10.0)
        return AnnaTcpClient(self.ip, local=True, routing_port=self.routing_port, **kw)


def write_config(
    tmp_path: Path, name: str, ip: str = "127.0.0.1", **kvs: Any
) -> tuple[Path, dict[str, Any]]:
    shards = int(kvs.get("shards", 1))
    cfg: dict[str, Any] = {
        "ip": ip,
        "kvs": {
            **alloc_kvs_ports(shards, ip),
            "data_dir": str(tmp_path / f"data-{name}"),
            "gossip_period_s": 0.1,
            "heartbeat_period_s": 0.2,
            "failure_timeout_s": 2.0,
            **kvs,
        },
        "cache": {"push_period_ms": 20},
    }
    path = tmp_path / f"{name}.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path, cfg


def wait_ready(cluster: KvsCluster, timeout: float = 30.0) -> None:
    """Until every shard answers a GET through routing."""
    client = cluster.client(timeout=2.0)
    try:
        shards = int(cluster.cfg["kvs"].get("shards", 1))
        keys = [f"__ready{i}" for i in range(16 * shards)]

        def ok() -> bool:
            cluster.procs.check_alive()
            try:
                client.get(keys)
                return True
            except Exception:
                return False

        wait_until(ok, timeout, f"KVS {cluster.name} at {cluster.routing_address}", interval=0.1)
    finally:
        client.close()


@pytest.fixture
def kvs_factory(procs: ProcessGroup, tmp_path: Path) -> Callable[..., KvsCluster]:
    """Start a local KVS node: ``kvs_factory(name='a', ip='127.0.0.1', shards=2, ...)``."""

    def start(
        name: str = "kvs",
        ip: str = "127.0.0.1",
        seed: str | None = None,
        wait: bool = True,
        **kvs: Any,
    ) -> KvsCluster:
        # Free ports can be taken by someone else between choosing and binding them
        # (parallel test runs): if the node dies while starting, retry on fresh ports.
        for attempt in range(3):
            path, cfg = write_config(tmp_path, name, ip, **kvs)
            argv = [sys.executable, "-m", "anna.local", "--config", str(path)]
            if seed:
                argv += ["--seed", seed]
            proc = procs.start(name, argv)
            cluster = KvsCluster(procs, path, cfg, name)
            if not wait:
                return cluster
            try:
                wait_ready(cluster)
                return cluster
            except RuntimeError:
                if proc.alive() or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    return start


@pytest.fixture
def kvs(kvs_factory: Callable[..., KvsCluster]) -> Iterator[KvsCluster]:
    """One local KVS node with 2 shards."""
    yield kvs_factory(shards=2)


def poll(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll until ``check()`` returns a truthy value; return it."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@pytest.fixture(scope="module")
def module_kvs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KvsCluster]:
    """One 2-shard KVS node shared by a module's tests (a module that uses it defines
    ``kvs`` as it; its tests use their own keys): one start-up instead of one per test."""
    tmp = tmp_path_factory.mktemp("kvs")
    group = ProcessGroup(log_dir=tmp / "logs")
    try:
        for attempt in range(3):  # free ports can be taken meanwhile: retry on others
            path, cfg = write_config(tmp, "kvs", shards=2)
            proc = group.start("kvs", [sys.executable, "-m", "anna.local", "--config", str(path)])
            cluster = KvsCluster(group, path, cfg, "kvs")
            try:
                wait_ready(cluster)
                break
            except RuntimeError:
                if proc.alive() or attempt == 2:
                    raise
        yield cluster
    finally:
        group.stop_all()
    leaked = [p.name for p in group.procs.values() if p.alive()]
    assert not leaked, f"processes still alive after the module: {leaked}"
