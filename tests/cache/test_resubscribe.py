"""A cache's subscriptions survive a KVS shard restart (``cache.subscription_refresh_s``).

Own KVS (the shard is killed), own caches; every process is stopped by ``procs``.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from anna.client import AnnaTcpClient
from cloudburst.shared.processes import ProcessGroup, port_open, wait_until
from lattices import LWWPairLattice, make_timestamp
from tests.cache.conftest import Cluster, start_kvs, write_config

pytestmark = pytest.mark.integration

REFRESH_S = 0.5


def _shard_pids(launcher: int) -> list[int]:
    path = Path(f"/proc/{launcher}/task/{launcher}/children")
    kids = [int(x) for x in path.read_text().split()] if path.exists() else []
    out = []
    for pid in kids:
        try:
            if b"anna.shard" in Path(f"/proc/{pid}/cmdline").read_bytes():
                out.append(pid)
        except FileNotFoundError:
            pass
    return out


def test_cache_resubscribes_after_shard_restart(procs: ProcessGroup, tmp_path: Path) -> None:
    cfg, path = write_config(tmp_path, subscription_refresh_s=REFRESH_S)
    kvs_proc = start_kvs(procs, cfg, path)
    cluster = Cluster(cfg, path, procs, f"127.0.0.1:{cfg.kvs.routing_port}", tmp_path)
    kvs = AnnaTcpClient(cluster.kvs_addr, timeout=5.0)
    cc = cluster.start_cache("r1")
    try:
        assert kvs.put("held", LWWPairLattice(make_timestamp(), b"before"))
        assert cc.get("held")["held"].reveal() == b"before"  # held and subscribed

        (shard,) = _shard_pids(kvs_proc.pid)
        os.kill(shard, signal.SIGKILL)  # anna.local restarts it (WAL keeps the value)
        wait_until(
            lambda: (
                [p for p in _shard_pids(kvs_proc.pid) if p != shard]
                and port_open("127.0.0.1", cfg.kvs.shard_base_port + 100)
            ),
            timeout=20,
            what="restarted shard",
        )

        def written() -> bool:
            try:
                return bool(kvs.put("held", LWWPairLattice(make_timestamp(), b"after")))
            except Exception:
                return False

        wait_until(written, timeout=20, what="a write to the restarted shard")
        acked = time.monotonic()
        while cc.get("held")["held"].reveal() != b"after":
            lag = time.monotonic() - acked
            assert lag < 6 * REFRESH_S + 1, "the restarted shard never pushed to the cache"
            time.sleep(0.02)
        lag = time.monotonic() - acked
        print(f"update visible {lag * 1000:.0f} ms after the ack (refresh {REFRESH_S}s)")
        assert cc.stats()["subscription_refreshes"] >= 1
    finally:
        cc.close()
        kvs.close()
