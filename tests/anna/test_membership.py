"""Multi-node: join through a seed, clean depart, failure detection (127.0.0.x hosts).

Each test takes 10-30 s on a loaded 2-core machine (marked ``slow``).
"""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest

from anna.admin import depart
from lattices import LWWPairLattice
from tests.anna.conftest import KvsCluster, poll

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEYS = [f"m{i}" for i in range(300)]
VALUES = [LWWPairLattice(i + 1, b"v%d" % i) for i in range(len(KEYS))]


def _all_readable(cluster: KvsCluster, keys: list[str] = KEYS) -> bool:
    client = cluster.client(timeout=3.0)
    try:
        got = client.get(keys)
        want = dict(zip(KEYS, VALUES, strict=True))
        return all(got[k] == want[k] for k in keys)
    except Exception:
        return False
    finally:
        client.close()


def _nodes_in_addresses(cluster: KvsCluster) -> set[str]:
    client = cluster.client(timeout=3.0)
    try:
        addrs = client.get_addresses(KEYS)
        return {a.split("//")[1].split(":")[0] for v in addrs.values() for a in v}
    finally:
        client.close()


def test_join_then_depart_keeps_every_key(kvs_factory: Any) -> None:
    a: KvsCluster = kvs_factory(name="a", ip="127.0.0.1", shards=2)
    client = a.client()
    assert all(client.put(KEYS, VALUES).values())  # type: ignore[union-attr]
    client.close()
    b: KvsCluster = kvs_factory(name="b", ip="127.0.0.2", shards=1, seed=a.routing_address)
    # a's routing now places keys on b too, and b's routing knows a
    poll(lambda: _nodes_in_addresses(a) == {"127.0.0.1", "127.0.0.2"}, 15, "join seen by a")
    poll(lambda: _nodes_in_addresses(b) == {"127.0.0.1", "127.0.0.2"}, 15, "join seen by b")
    poll(lambda: _all_readable(a) and _all_readable(b), 20, "every key readable after join")
    # b leaves cleanly: its keys are handed back to a
    depart(b.routing_address, f"127.0.0.2:{b.cfg['kvs']['shard_base_port']}")
    poll(lambda: _nodes_in_addresses(a) == {"127.0.0.1"}, 15, "depart seen by a")
    poll(lambda: _all_readable(a), 20, "every key readable after depart")
    a.procs.kill("b", signal.SIGTERM)
    assert _all_readable(a)


def test_dead_node_is_detected_and_routed_around(kvs_factory: Any) -> None:
    a: KvsCluster = kvs_factory(name="a", ip="127.0.0.1", shards=1, replication_global=2)
    b: KvsCluster = kvs_factory(
        name="b", ip="127.0.0.3", shards=1, replication_global=2, seed=a.routing_address
    )
    poll(lambda: _nodes_in_addresses(a) == {"127.0.0.1", "127.0.0.3"}, 15, "join")
    client = a.client()
    try:
        assert all(client.put_all(KEYS, VALUES).values())  # type: ignore[union-attr]
    finally:
        client.close()
    killed = time.monotonic()
    a.procs.kill("b", signal.SIGKILL)  # the whole node: launcher, routing, shard
    poll(lambda: _nodes_in_addresses(a) == {"127.0.0.1"}, 15, "failure detection")
    detected = time.monotonic() - killed
    timeout = a.cfg["kvs"]["failure_timeout_s"]
    assert detected < timeout + 5, f"detected after {detected:.1f}s"
    assert _all_readable(a)
    del b
