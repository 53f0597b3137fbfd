"""SIGTERM on ``anna.local`` departs cleanly: its keys are handed to the other node.

Replication factor 1, so a key of the stopped node is readable afterwards only if it
was handed off. Takes ~10-20 s on a loaded 2-core machine (marked ``slow``).
"""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest

from lattices import LWWPairLattice
from tests.anna.conftest import KvsCluster, poll

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEYS = [f"h{i}" for i in range(300)]
VALUES = [LWWPairLattice(i + 1, b"v%d" % i) for i in range(len(KEYS))]


def _hosts(cluster: KvsCluster) -> dict[str, str]:
    """key -> host of its (single) replica, as ``cluster``'s routing places it."""
    client = cluster.client(timeout=3.0)
    try:
        addrs = client.get_addresses(KEYS)
        return {k: v[0].split("//")[1].split(":")[0] for k, v in addrs.items() if v}
    except Exception:
        return {}
    finally:
        client.close()


def test_sigterm_hands_keys_off_to_the_other_node(kvs_factory: Any) -> None:
    a: KvsCluster = kvs_factory(name="a", ip="127.0.0.1", shards=1)
    b: KvsCluster = kvs_factory(
        name="b", ip="127.0.0.2", shards=1, seed=a.routing_address, depart_timeout_s=10.0
    )
    poll(lambda: set(_hosts(a).values()) == {"127.0.0.1", "127.0.0.2"}, 15, "join seen by a")
    poll(lambda: set(_hosts(b).values()) == {"127.0.0.1", "127.0.0.2"}, 15, "join seen by b")
    client = a.client()
    try:
        acked = client.put(KEYS, VALUES)
        assert all(acked.values())  # type: ignore[union-attr]
        on_b = [k for k, h in _hosts(a).items() if h == "127.0.0.2"]
        assert len(on_b) > 50, f"only {len(on_b)} keys placed on b"

        t0 = time.monotonic()
        # The launcher's whole process group, like a service manager or Ctrl-C would.
        a.procs.kill("b", signal.SIGTERM)  # waits (<= 10 s) for the launcher to exit
        stopped = time.monotonic() - t0
        assert not a.procs.procs["b"].alive()
        assert stopped < 10.0 + 5.0, f"stop took {stopped:.1f}s"
        print(f"b stopped {stopped:.2f}s after SIGTERM; {len(on_b)} of its keys")

        log = a.procs.procs["b"].log_tail(200)
        assert "departed" in log, log
        # Every acknowledged key, b's included, is served by a (no replica left on b).
        poll(lambda: set(_hosts(a).values()) == {"127.0.0.1"}, 10, "a routes everything to a")
        want = dict(zip(KEYS, VALUES, strict=True))

        # A fresh client: the first one cached b's (now closed) address for b's keys.
        client.close()
        client = a.client(timeout=3.0)

        def all_there() -> bool:
            try:
                got = client.get(KEYS)
            except Exception:
                return False
            return all(got[k] == want[k] for k in KEYS)

        try:
            poll(all_there, 10, "every acknowledged key readable from a")
        except AssertionError:
            got = client.get(KEYS)
            missing = [k for k in KEYS if got[k] != want[k]]
            raise AssertionError(
                f"{len(missing)} keys lost ({len(set(missing) & set(on_b))} of b's)\n{log}"
            ) from None
    finally:
        client.close()


def test_sigterm_on_a_single_node_just_stops(kvs_factory: Any) -> None:
    a: KvsCluster = kvs_factory(name="solo", ip="127.0.0.1", shards=1)
    t0 = time.monotonic()
    a.procs.kill("solo", signal.SIGTERM)
    stopped = time.monotonic() - t0
    assert not a.procs.procs["solo"].alive()
    assert stopped < 5.0, f"stop took {stopped:.1f}s"
    assert "no other live node" in a.procs.procs["solo"].log_tail(50)
