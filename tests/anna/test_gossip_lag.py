"""Gossip lag is exported by every shard (issue 15): a write on one replica and its
gossip's arrival at the other show in ``anna_gossip_lag_seconds``, and the age of
the last gossip received from each peer in ``anna_gossip_last_received_age_seconds``.
Scraped from a real local KVS (2 shards, 2 replicas per key)."""

from __future__ import annotations

import re
import sys
import urllib.request
from pathlib import Path

import yaml

from anna.proto import anna_pb2 as pb
from anna.shard.logic import ShardState
from cloudburst.shared.metrics import endpoints
from cloudburst.shared.processes import ProcessGroup, wait_until
from lattices.lww import LWWPairLattice
from tests.anna.conftest import KvsCluster, wait_ready, write_config


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return str(resp.read().decode())


def _value(text: str, pattern: str) -> float:
    m = re.search(pattern + r"\s+([0-9.e+-]+)", text)
    return float(m.group(1)) if m else 0.0


def test_gossip_lag_is_exported(procs: ProcessGroup, tmp_path: Path) -> None:
    path, cfg = write_config(tmp_path, "lag", shards=2, replication_local=2, gossip_period_s=0.2)
    cfg["run_dir"] = str(tmp_path / "run")  # absolute: a local-mode cluster serves metrics
    cfg["metrics"] = {"base_port": 0}
    path.write_text(yaml.safe_dump(cfg))
    procs.start("lag", [sys.executable, "-m", "anna.local", "--config", str(path)])
    cluster = KvsCluster(procs, path, cfg, "lag")
    wait_ready(cluster)
    client = cluster.client()
    try:
        for i in range(20):
            assert client.put(f"lag/{i}", LWWPairLattice(i + 1, b"v"))
    finally:
        client.close()

    def shards() -> list[dict[str, str]]:
        return [e for e in endpoints(cfg["run_dir"]) if e["role"] == "shard"]

    wait_until(lambda: len(shards()) == 2, 30, "both shards' metrics records")

    def lagged() -> bool:
        texts = [_scrape(e["url"]) for e in shards()]
        counts = [_value(t, r'anna_gossip_lag_seconds_count\{shard="\d"\}') for t in texts]
        ages = [t for t in texts if "anna_gossip_last_received_age_seconds{peer=" in t]
        return sum(counts) >= 1 and len(ages) >= 1

    wait_until(lagged, 30, "gossip lag samples")
    text = "".join(_scrape(e["url"]) for e in shards())
    assert "anna_gossip_lag_seconds_bucket" in text
    total = sum(float(v) for v in re.findall(r"anna_gossip_lag_seconds_sum\{[^}]*\}\s+(\S+)", text))
    count = sum(
        float(v) for v in re.findall(r"anna_gossip_lag_seconds_count\{[^}]*\}\s+(\S+)", text)
    )
    assert count >= 1 and 0 <= total / count < 30  # seconds per round, write -> arrival
    age = re.search(
        r'anna_gossip_last_received_age_seconds\{peer="tcp://[^"]+",shard="\d"\}\s+(\S+)', text
    )
    assert age and 0 <= float(age.group(1)) < 60


def test_gossip_carries_the_oldest_write_time() -> None:
    """Pure: a round's gossip carries the wall clock of its oldest write, and the
    receiver records the delay and the sender."""
    clock = [1_000_000]
    a = ShardState("n", 0, pb.Membership(), wall_ms=lambda: clock[0])
    b = ShardState("n", 1, pb.Membership(), wall_ms=lambda: clock[0])
    a._mark_dirty("k1")
    clock[0] += 300
    a._mark_dirty("k2")  # not the oldest
    assert a.dirty_since_ms == 1_000_000
    clock[0] += 200
    msg = pb.Gossip(sender="tcp://a", written_ms=a.dirty_since_ms)
    b.handle_gossip(msg)
    assert b.gossip_lags == [0.5] and b.gossip_heard == {"tcp://a": 1_000_500}
