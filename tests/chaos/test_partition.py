"""Network faults: a second storage node and a second executor node live in a network
namespace of their own; the test cuts their link for 5 s and restores it.

While the link is down, calls keep being served by the node on this side (a call that
was on the far node is retried once the scheduler declares it dead), no acknowledged
write is lost, and after the heal both replicas of every key written hold the same
value. Skipped, with the reason, only where namespaces cannot be created (not root, no
iproute2).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from anna.client import AnnaTcpClient
from anna.errors import AnnaTimeoutError
from cloudburst.shared.config import replace
from cloudburst.shared.processes import wait_until
from tests.chaos.netns import NetnsHost, netns_unavailable
from tests.integration.conftest import Cluster, start_cluster

pytestmark = [pytest.mark.integration]

CUT_S = 5.0


@dataclass
class Log:
    """What a workload thread saw: (start, seconds, outcome) per operation."""

    ops: list[tuple[float, float, str]] = field(default_factory=list)
    acked: dict[str, int] = field(default_factory=dict)

    def failures(self) -> list[tuple[float, float, str]]:
        return [op for op in self.ops if op[2] != "ok"]


def served_by(_lib: Any, x: int) -> tuple[str, int]:  # runs on an executor
    return os.environ.get("CB_NODE_CACHE", ""), x * 2


@pytest.fixture
def far_host() -> Iterator[NetnsHost]:
    why = netns_unavailable()
    if why:
        pytest.skip(f"network namespaces unavailable: {why}")
    host = NetnsHost.create()
    try:
        yield host
    finally:
        host.destroy()


def _start_far_node(cluster: Cluster, host: NetnsHost, run: Path) -> None:
    cfg_b = replace(
        cluster.cfg,
        ip=host.ip,
        kvs={"host": host.host_ip, "data_dir": str(run / "kvs-far")},
        scheduler={"host": host.host_ip},
        cache={"ipc_dir": str(run / "ipc-far")},
    )
    path = run / "far.yml"
    path.write_text(yaml.safe_dump(dataclasses.asdict(cfg_b)))
    seed = f"tcp://{host.host_ip}:{cluster.cfg.kvs.routing_port}"
    py = sys.executable
    argv = host.argv(py, "-m", "anna.local", "--config", str(path), "--seed", seed)
    cluster.group.start("far-kvs", argv)
    argv = host.argv(py, "-m", "executor.node", "--config", str(path), "--workers", "2")
    cluster.group.start("far-executor", argv)


def _replica_hosts(kvs: AnnaTcpClient, key: str) -> set[str]:
    try:
        addrs = kvs.get_addresses([key], refresh=True).get(key, [])
    except AnnaTimeoutError:  # routing still starting on a loaded machine: ask again
        return set()
    return {a.split("//")[1].split(":")[0] for a in addrs}


def _replica_values(cluster: Cluster, far: NetnsHost, keys: list[str]) -> list[dict[str, Any]]:
    """The value each storage node holds for ``keys``, read from that node alone."""
    out = []
    for ip in (cluster.cfg.ip, far.ip):
        kvs = AnnaTcpClient(
            cluster.cfg.ip, ip=cluster.cfg.ip, routing_port=cluster.cfg.kvs.routing_port
        )
        try:
            shard = f"tcp://{ip}:{cluster.cfg.kvs.shard_base_port}"
            kvs._cache.update({k: [shard] for k in keys})  # read this replica only
            got = kvs.get(keys, timeout=10)
            out.append(dict(got))
        finally:
            kvs.close()
    return out


def test_cut_link_calls_keep_flowing_and_replicas_converge(
    far_host: NetnsHost, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    # Not loopback: an open cluster must say so (docs/security.md); the far node's
    # config is derived from this one.
    cluster = start_cluster(
        run, ip=far_host.host_ip, kvs={"replication_global": 2}, security={"curve": "false"}
    )
    try:
        _start_far_node(cluster, far_host, run)
        cloud = cluster.connect(timeout=10.0)
        kvs = AnnaTcpClient(
            cluster.cfg.ip, ip=cluster.cfg.ip, routing_port=cluster.cfg.kvs.routing_port
        )
        try:
            wait_until(lambda: cloud.status()["executors"] >= 5, 60, "5 workers on 2 nodes")
            both = {cluster.cfg.ip, far_host.ip}
            wait_until(lambda: _replica_hosts(kvs, "probe") == both, 60, "KVS on 2 nodes")
            fn = cloud.register(served_by, "served_by_partition")
            nodes: set[str] = set()
            for _ in range(10):  # calls in flight together are spread over the workers
                futures = [fn(i) for i in range(10)]
                nodes |= {f.get(timeout=20)[0] for f in futures}
            assert len(nodes) == 2, f"calls reached only {nodes}"
        finally:
            kvs.close()
            cloud.close()

        calls, writes = Log(), Log()
        stop = threading.Event()

        def call_loop() -> None:
            conn = cluster.connect(timeout=10.0)
            try:
                i = 0
                while not stop.is_set():
                    t0 = time.monotonic()
                    try:
                        got = fn_on(conn)(i).get(timeout=30)
                        ok = "ok" if got[1] == 2 * i else f"wrong {got}"
                    except Exception as exc:
                        ok = f"{type(exc).__name__}: {exc}"
                    calls.ops.append((t0, time.monotonic() - t0, ok))
                    i += 1
            finally:
                conn.close()

        def write_loop() -> None:
            conn = cluster.connect(timeout=10.0)
            try:
                i = 0
                while not stop.is_set():
                    t0 = time.monotonic()
                    key = f"part/{i}"
                    try:
                        ok = "ok" if conn.put_object(key, i) else "refused"
                    except Exception as exc:
                        ok = f"{type(exc).__name__}: {exc}"
                    if ok == "ok":
                        writes.acked[key] = i
                    writes.ops.append((t0, time.monotonic() - t0, ok))
                    i += 1
                    time.sleep(0.01)
            finally:
                conn.close()

        def fn_on(conn: Any) -> Any:
            return conn.get_function("served_by_partition")

        threads = [threading.Thread(target=call_loop), threading.Thread(target=write_loop)]
        for t in threads:
            t.start()
        try:
            time.sleep(2.0)
            cut_at = time.monotonic()
            far_host.cut()
            time.sleep(CUT_S)
            far_host.heal()
            healed_at = time.monotonic()
            time.sleep(10.0)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)
        assert not any(t.is_alive() for t in threads), "a workload thread hung"

        during = [op for op in calls.ops if cut_at <= op[0] and op[0] + op[1] <= healed_at]
        slowest = max(op[1] for op in calls.ops)
        print(
            f"calls: {len(calls.ops)} ({len(during)} completed inside the cut), "
            f"failed {len(calls.failures())}, slowest {slowest:.2f}s; writes: "
            f"{len(writes.ops)}, acknowledged {len(writes.acked)}, failed "
            f"{len(writes.failures())}"
        )
        for op in writes.failures()[:3]:
            print(f"  a failed write at +{op[0] - cut_at:.2f}s took {op[1]:.2f}s: {op[2]}")
        assert not calls.failures(), calls.failures()[:5]
        assert len(during) >= 5, "calls stopped while the far node was cut off"
        assert writes.acked, "no write was acknowledged"

        keys = sorted(writes.acked)
        want = {k: writes.acked[k] for k in keys}
        cloud = cluster.connect(timeout=10.0)
        try:
            got = {k: cloud.get_object(k) for k in keys}
        finally:
            cloud.close()
        lost = [k for k in keys if got[k] != want[k]]
        assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {lost[:5]}"

        def converged() -> bool:
            near, far = _replica_values(cluster, far_host, keys)
            return near == far and all(v is not None for v in near.values())

        t0 = time.monotonic()
        wait_until(converged, 60, "both replicas to hold every acknowledged write", 1.0)
        print(f"replicas converged {time.monotonic() - t0:.1f}s after the check started")
    finally:
        cluster.group.stop_all()
    assert not [p.name for p in cluster.group.procs.values() if p.alive()]
