"""The cache as a real process against a real local KVS."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from cache.client import DIRECT_PUT_BYTES, CacheClient
from cache.shm import put_prefix, segment_prefix
from cloudburst.shared import serializer
from cloudburst.shared.processes import wait_until
from cloudburst.shared.values import from_lattice
from lattices import LWWPairLattice, SetLattice, make_timestamp
from tests.cache.conftest import PUSH_PERIOD_MS, Cluster


def lww(value: bytes) -> LWWPairLattice:
    return LWWPairLattice(make_timestamp(), value)


def test_hit_after_miss(cluster: Cluster, kvs_client) -> None:
    kvs = kvs_client()
    assert kvs.put("k", lww(b"v1"))
    cc = cluster.start_cache("n1")
    try:
        assert cc.get("k")["k"].reveal() == b"v1"
        s1 = cc.stats()
        assert s1["misses"] == 1 and s1["hits"] == 0
        first = cc.get(["k"])["k"]
        assert first.reveal() == b"v1"
        s2 = cc.stats()
        assert s2["hits"] == 1 and s2["misses"] == 1
        # The process-local copy is revalidated, not re-sent: the same object comes back.
        assert cc.get("k")["k"] is first
        assert cc.stats()["not_modified"] >= 1
        assert s2["entries"] == 1 and s2["bytes"] > 0
        assert set(cc.cached_key_sizes()) == {"k"}
        assert cc.get("missing") == {"missing": None}
        assert not cc.using_fallback
    finally:
        cc.close()


def test_update_through_other_node_visible_within_push_period(cluster: Cluster, kvs_client) -> None:
    """Node B (127.0.0.2) and the KVS directly write; node A's cached copy follows."""
    a = cluster.start_cache("a", ip="127.0.0.1")
    b = cluster.start_cache("b", ip="127.0.0.2")
    kvs = kvs_client()
    try:
        assert b.put("shared", lww(b"0"))
        assert a.get("shared")["shared"].reveal() == b"0"  # cached (and subscribed) at A
        lags = []
        for i in range(1, 16):
            writer = b if i % 2 else kvs
            value = str(i).encode()
            assert writer.put("shared", lww(value))
            acked = time.monotonic()
            while a.get("shared")["shared"].reveal() != value:
                assert time.monotonic() - acked < 2.0, "update never reached the cache"
            lags.append(time.monotonic() - acked)
        stats = a.stats()
        assert stats["misses"] == 1  # every later read was served by the cache
        assert stats["pushes"] >= 15
        # One push period plus delivery; generous slack for a shared 2-core machine.
        assert statistics.median(lags) <= PUSH_PERIOD_MS / 1000 + 0.05, lags
        assert max(lags) <= PUSH_PERIOD_MS / 1000 + 0.5, lags
    finally:
        a.close()
        b.close()


def test_eviction_at_the_bound(cluster: Cluster, kvs_client) -> None:
    kvs = kvs_client()
    capacity = 10_000
    for i in range(8):
        assert kvs.put(f"e{i}", lww(bytes(2000)))
    cc = cluster.start_cache("small", capacity_bytes=capacity)
    try:
        for i in range(8):
            assert cc.get(f"e{i}")[f"e{i}"].reveal() == bytes(2000)
        stats = cc.stats()
        assert stats["evictions"] >= 4
        assert stats["bytes"] <= capacity
        held = cc.cached_key_sizes()
        assert "e7" in held and "e0" not in held  # least recently used went first
        # An evicted key is fetched again (a miss), not served stale.
        assert cc.get("e0")["e0"].reveal() == bytes(2000)
        assert cc.stats()["misses"] == 9
    finally:
        cc.close()


def test_lattice_type_mismatch(cluster: Cluster) -> None:
    cc = cluster.start_cache("n1")
    try:
        assert cc.put("t", lww(b"x"))
        errs = cc.put_errors("t", SetLattice({b"a"}))
        assert errs == {"t": 4}  # LATTICE
        assert cc.put("t", SetLattice({b"a"})) is False
        cc.get("t")  # now cached: the mismatch is caught in the cache itself
        assert cc.put_errors("t", SetLattice({b"a"})) == {"t": 4}
        assert cc.get("t")["t"].reveal() == b"x"
        assert cc.stats()["lattice_errors"] >= 2
        # Every lattice type goes through.
        assert cc.put("set", SetLattice({b"a"}))
        assert cc.put("set", SetLattice({b"b"}))
        wait_until(
            lambda: cc.get("set")["set"].reveal() == {b"a", b"b"}, timeout=5, what="set merge"
        )
    finally:
        cc.close()


def test_put_direct_is_durable_at_return_and_the_cache_follows(
    cluster: Cluster, kvs_client
) -> None:
    """``put_direct`` (an executor's ``output_key`` write): at the KVS when it returns;
    the cache learns the value after the call (``release_pins``) or before this
    client's next request, so its held copy is never read stale afterwards."""
    kvs = kvs_client()
    cc = cluster.start_cache("pd")
    try:
        assert cc.put("od", lww(b"old"))
        assert cc.get("od")["od"].reveal() == b"old"  # held (and subscribed) here
        for i in range(6):
            value = f"new{i}".encode()
            assert cc.put_direct("od", lww(value))
            assert kvs.get("od")["od"].reveal() == value  # acknowledged by the KVS
            if i % 2:
                cc.release_pins()  # the call ended: the note goes now
            assert cc.get("od")["od"].reveal() == value  # ... or before this request
        stats = cc.stats()
        assert stats["notes"] == 6 and stats["kvs_puts"] == 1 and stats["misses"] == 1
        assert cc.put_direct("od", SetLattice({b"a"})) is False  # the KVS's LATTICE
        assert cc.get("od")["od"].reveal() == b"new5"
        # A key never seen here: located, subscribed, then held (pushed by the shard).
        assert cc.put_direct("fresh", lww(b"f"))
        cc.release_pins()
        wait_until(lambda: "fresh" in (cc.cached_key_sizes() or {}), 10, "fresh held")
        assert cc.get("fresh")["fresh"].reveal() == b"f"
        # A large payload goes through the cache (a note would copy it once more).
        assert cc.put_direct("big", lww(bytes(DIRECT_PUT_BYTES)))
        assert cc.stats()["kvs_puts"] == 2
        assert kvs.get("big")["big"].reveal() == bytes(DIRECT_PUT_BYTES)
    finally:
        cc.close()


def test_dead_cache_falls_back_to_kvs(
    cluster: Cluster, kvs_client, caplog: pytest.LogCaptureFixture
) -> None:
    kvs = kvs_client()
    assert kvs.put("f", lww(b"1"))
    cc = cluster.start_cache("dying")
    try:
        assert cc.get("f")["f"].reveal() == b"1"
        cluster.procs.kill("cache-dying", signal.SIGKILL)
        assert kvs.put("f", lww(b"2"))
        with caplog.at_level(logging.WARNING, logger="cache.client"):
            t0 = time.monotonic()
            assert cc.get("f")["f"].reveal() == b"2"
            assert cc.put("f", lww(b"3"))
            assert time.monotonic() - t0 < 3.0  # no hang
        assert cc.using_fallback and cc.fallback_calls >= 2
        assert any("unreachable" in r.getMessage() for r in caplog.records)
        assert kvs.get("f")["f"].reveal() == b"3"
        # A restarted cache is used again.
        restarted = cluster.start_cache("dying")
        restarted.close()
        wait_until(lambda: cc.ping(), timeout=10, what="reconnect")
        assert cc.get("f")["f"].reveal() == b"3"
        assert not cc.using_fallback
    finally:
        cc.close()


def test_never_started_cache_falls_back(cluster: Cluster, kvs_client) -> None:
    kvs = kvs_client()
    assert kvs.put("g", lww(b"x"))
    cc = CacheClient("nobody", cluster.cfg, kvs_addr=cluster.kvs_addr, timeout=5)
    try:
        t0 = time.monotonic()
        assert cc.get("g")["g"].reveal() == b"x"
        assert cc.get("g")["g"].reveal() == b"x"
        assert time.monotonic() - t0 < 3.0
        assert cc.using_fallback
        assert cc.cached_key_sizes() is None
    finally:
        cc.close()


def test_metrics_endpoint(cluster: Cluster, kvs_client) -> None:
    import urllib.request

    from cloudburst.shared.processes import free_port, port_open

    port = free_port()
    cluster.procs.python(
        "cache-metrics",
        "cache.server",
        "--config",
        str(cluster.cfg_path),
        "--node-id",
        "metrics",
        "--kvs",
        cluster.kvs_addr,
        "--metrics-port",
        str(port),
    )
    wait_until(lambda: port_open("127.0.0.1", port), timeout=20, what="metrics port")
    cc = CacheClient("metrics", cluster.cfg, kvs_addr=cluster.kvs_addr, timeout=10)
    try:
        assert kvs_client().put("m", lww(b"x"))
        cc.get("m")
        cc.get("m")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        assert 'cloudburst_cache_hits_total{node="metrics"} 1.0' in text
        assert 'cloudburst_cache_misses_total{node="metrics"} 1.0' in text
        assert "cloudburst_cache_bytes{" in text
    finally:
        cc.close()


# ---- cb.put through an adopted segment; put_object's pieces (cache/shm.py) -------------------
# (here rather than in test_shm_adopt.py: they share this module's KVS)


DIE_BEFORE_ADOPTION = """
import os, sys
from cache.shm import put_prefix, write_segment
write_segment(sys.argv[1], put_prefix(sys.argv[2]) + f"{os.getpid()}-1", 1 << 20, [])
os._exit(0)
"""


def test_put_value_through_adopted_segment(cluster: Cluster, shm_dir: Path, kvs_client) -> None:  # noqa: ANN001
    data = dataclasses.asdict(cluster.cfg)
    data["cache"]["shm_dir"] = str(shm_dir)
    path = cluster.tmp / "adopt.yml"
    path.write_text(yaml.safe_dump(data))
    cluster.cfg_path = path
    client = cluster.start_cache("adopt")
    client.cfg = dataclasses.replace(
        client.cfg, cache=dataclasses.replace(client.cfg.cache, shm_dir=str(shm_dir))
    )
    arr = np.arange(300_000, dtype=np.float64)
    assert client.put_value("adopt-big", arr) is True
    # In the KVS (an acknowledged put is durable there) ...
    kvs = kvs_client()
    assert np.array_equal(from_lattice(kvs.get("adopt-big")["adopt-big"]), arr)
    # ... and served from the adopted segment (the worker's file was renamed).
    (name,) = os.listdir(shm_dir)
    assert name.startswith(segment_prefix(client.address))
    got = from_lattice(client.get(["adopt-big"])["adopt-big"])
    assert np.array_equal(got, arr) and not got.flags.writeable
    stats = client.stats()
    assert stats["shm_adopted"] == 1 and stats["shm_bytes"] >= arr.nbytes
    # Small values and sets take the ordinary put.
    assert client.put_value("adopt-small", np.arange(3.0)) is True
    assert client.put_value("adopt-set", {1, 2}) is True
    assert client.stats()["shm_adopted"] == 1
    assert from_lattice(kvs.get("adopt-set")["adopt-set"]) == {1, 2}
    # A segment the cache cannot take (another directory): refused, the worker's file
    # removed, the value sent over the socket instead (and no segment tried for a while).
    other = shm_dir.parent / (shm_dir.name + "-other")
    other.mkdir()
    try:
        lost = CacheClient(cfg=client.cfg, address=client.address, kvs_addr=cluster.kvs_addr)
        lost.cfg = dataclasses.replace(
            lost.cfg, cache=dataclasses.replace(lost.cfg.cache, shm_dir=str(other))
        )
        assert lost.put_value("adopt-refused", arr) is True
        assert os.listdir(other) == [] and lost._adopt_after > time.monotonic()
        assert np.array_equal(from_lattice(kvs.get("adopt-refused")["adopt-refused"]), arr)
        assert client.stats()["shm_adopt_refused"] == 1
        lost.close()
    finally:
        for f in other.iterdir():
            f.unlink()
        other.rmdir()
    # A worker that dies between writing its file and the adoption leaves nothing.
    subprocess.run(
        [sys.executable, "-c", DIE_BEFORE_ADOPTION, str(shm_dir), client.address],
        check=True,
        timeout=60,
        cwd=str(Path(__file__).resolve().parents[2]),
    )
    wait_until(
        lambda: not [n for n in os.listdir(shm_dir) if n.startswith(put_prefix(client.address))],
        timeout=20,
        what="the dead worker's segment removed",
    )
    del got
    client.release_pins()
    client.close()
    cluster.procs.kill("cache-adopt", signal.SIGTERM)
    wait_until(lambda: not os.listdir(shm_dir), timeout=20, what="segments gone at stop")


def test_put_lww_pieces_stores_the_joined_value(kvs_client) -> None:  # noqa: ANN001
    kvs = kvs_client()
    arr = np.arange(100_000.0)
    pieces = serializer.large_value_pieces(arr)
    assert kvs.put_lww_pieces("pieces/a", 12345, pieces) is True  # general path first
    assert kvs.put_lww_pieces("pieces/a", 12346, pieces) is True  # address cached
    got = kvs.get("pieces/a")["pieces/a"]
    assert got.timestamp == 12346 and np.array_equal(from_lattice(got), arr)
