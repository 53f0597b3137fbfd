"""Large values never starve liveness (issue 10, point 8).

100 MB and 500 MB values are put and read back through the only storage shard while
another process keeps GETting a small key: no call times out, the node never leaves
the membership, and the small GETs stay fast (p99 printed; the assert is generous, the
machine running the tests is shared). Values over ``kvs.max_value_bytes`` are a clear
error at the client and at the shard.
"""

from __future__ import annotations

import gc
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from anna.errors import AnnaError
from lattices import LWWPairLattice, make_timestamp
from tests.anna.conftest import KvsCluster, poll
from tests.cache.test_resubscribe import _shard_pids

pytestmark = pytest.mark.integration

MB = 1 << 20
P99_LIMIT_S = 0.2  # the goal is 50 ms (met on a quiet machine); see the printed figures


def _vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.mark.timeout(400)
def test_large_values_do_not_starve_small_requests_or_membership(
    kvs_factory: Any, tmp_path: Path
) -> None:
    # heartbeats every 0.2 s, declared dead after 2 s without one (conftest's config)
    kvs: KvsCluster = kvs_factory(name="big", shards=1)
    client = kvs.client(timeout=10.0)
    out = tmp_path / "lat.json"
    stop = tmp_path / "stop"
    try:
        assert client.put("small", LWWPairLattice(make_timestamp(), b"s" * 100))
        before = client.get_addresses(["big", "small"], refresh=True)
        kvs.procs.start(
            "reader",
            [
                sys.executable,
                "-m",
                "tests.anna.small_reader",
                str(kvs.routing_port),
                "small",
                str(out),
                str(stop),
            ],
        )
        time.sleep(1.0)  # the reader's baseline
        timings = []
        for size in (100 * MB, 500 * MB):
            value = LWWPairLattice(make_timestamp(), b"z" * size)
            t0 = time.monotonic()
            assert client.put("big", value) is True  # the default 10 s grows with size
            t1 = time.monotonic()
            got = client.get("big")["big"]
            t2 = time.monotonic()
            assert got is not None and got.timestamp == value.timestamp
            v = got.reveal()
            assert len(v) == size and v[:1] == b"z" and v[-1:] == b"z"
            timings.append((size // MB, t1 - t0, t2 - t1))
            del value, got, v
            gc.collect()
        stop.touch()
        poll(out.exists, 30, "the reader's figures")
        shard_hwm = [_vm_hwm_mb(p) for p in _shard_pids(kvs.procs.procs["big"].pid)]
        figures = json.loads(out.read_text())
        lat = sorted(figures["lat"])
        assert figures["n_errors"] == 0, figures["errors"]
        assert len(lat) > 100
        p50, p99, worst = lat[len(lat) // 2], lat[int(len(lat) * 0.99)], lat[-1]
        slow = sum(x > 0.05 for x in lat)
        print(
            f"\nlarge values (MB, put s, get s): {timings}\n"
            f"small GETs meanwhile: n={len(lat)} p50={p50 * 1e3:.2f} ms "
            f"p99={p99 * 1e3:.2f} ms max={worst * 1e3:.1f} ms, {slow} over 50 ms\n"
            f"peak RSS: test process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB, "
            f"shard {shard_hwm} MB"
        )
        # membership never dropped the node: same replicas, no failure detected
        assert client.get_addresses(["big", "small"], refresh=True) == before
        log = (tmp_path / "logs" / "big.log").read_text()
        assert "no heartbeat from" not in log, "the shard dropped out of the membership"
        assert p99 < P99_LIMIT_S, f"small GET p99 {p99 * 1e3:.1f} ms"
    finally:
        stop.touch()
        client.close()


def test_values_over_the_limit_are_a_clear_error(kvs_factory: Any) -> None:
    kvs: KvsCluster = kvs_factory(name="limit", shards=1, max_value_bytes=1 * MB)
    client = kvs.client(timeout=10.0)
    try:
        big = LWWPairLattice(make_timestamp(), b"x" * (2 * MB))
        # the shard refuses it (this client does not know the limit)...
        assert client.put("over", big) is False
        assert client.put(["over"], [big]) == {"over": False}
        assert client.get("over")["over"] is None
        # ...and a client that knows the limit does not send it
        client.max_value_bytes = 1 * MB
        with pytest.raises(AnnaError, match="more than the KVS's limit"):
            client.put("over", big)
        with pytest.raises(AnnaError, match="kvs.max_value_bytes"):
            client.put(["ok", "over"], [LWWPairLattice(make_timestamp(), b"1"), big])
        assert client.put("ok", LWWPairLattice(make_timestamp(), b"y" * (MB - 64)))
        assert client.get("ok")["ok"].reveal() == b"y" * (MB - 64)  # type: ignore[union-attr]
    finally:
        client.close()


def test_requests_behind_a_large_put_of_the_same_key_see_it(kvs_factory: Any) -> None:
    """A large PUT is decoded and logged off the shard's loop; requests for the same
    key that arrive behind it (a pipeline) wait for it, others do not."""
    kvs: KvsCluster = kvs_factory(name="order", shards=1)
    client = kvs.client(timeout=10.0)
    try:
        assert client.put("other", LWWPairLattice(make_timestamp(), b"o"))
        for round_ in range(3):
            a = LWWPairLattice(make_timestamp(), bytes([65 + round_]) * (8 * MB))
            b = LWWPairLattice(make_timestamp(), bytes([97 + round_]) * (6 * MB))
            with client.pipeline() as p:
                p.put("big", a).get("big").get("other").put("big", b).get("big")
                put_a, got_a, other, put_b, got_b = p.execute(timeout=60.0)
            assert put_a is True and put_b is True
            assert got_a == a and got_b == b and other.reveal() == b"o"
        assert client.delete("big") is True
        assert client.get("big")["big"] is None
    finally:
        client.close()
