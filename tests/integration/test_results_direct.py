"""exec_func results go straight back to the client; the KVS holds them only when
needed (a pending future passed to another call, or ``obj_id`` read)."""

from __future__ import annotations

import time

import numpy as np

from cloudburst.client.client import CloudburstConnection


def test_plain_call_result_is_not_stored(cloud: CloudburstConnection) -> None:
    sq = cloud.register(lambda _, x: x * x, "rd_square")
    fut = sq(7)
    assert fut.get(timeout=15) == 49
    assert fut._key.startswith("results/")
    assert cloud.get_object(fut._key) is None  # nobody asked: no KVS write
    # Asking for the id afterwards stores it (the value is here already).
    key = fut.obj_id
    assert cloud.get_object(key) == 49


def test_pending_future_passed_along_is_stored_on_arrival(cloud: CloudburstConnection) -> None:
    slow = cloud.register(lambda _, x: (time.sleep(0.3), x)[1], "rd_slow")
    total = cloud.register(lambda _, a: float(np.sum(a)), "rd_total")
    first = slow(np.arange(10.0))
    second = total(first)  # first is pending: its result must reach the KVS
    assert second.get(timeout=20) == 45.0
    assert np.array_equal(cloud.get_object(first._key), np.arange(10.0))
    # A chain of pending futures, and a done future passed by value.
    sq = cloud.register(lambda _, x: x * x, "rd_square2")
    assert sq(sq(slow(2))).get(timeout=20) == 16
    done = sq(3)
    assert done.get(timeout=15) == 9
    assert sq(done).get(timeout=15) == 81
    assert cloud.get_object(done._key) is None  # passed by value: not stored


def test_results_stored_on_demand_expire(cloud: CloudburstConnection) -> None:
    from cloudburst.shared.processes import wait_until

    cloud.result_ttl_s = 0.5
    sq = cloud.register(lambda _, x: x * x, "rd_square3")
    fut = sq(5)
    assert fut.get(timeout=15) == 25
    key = fut.obj_id
    assert cloud.get_object(key) == 25
    wait_until(lambda: cloud.get_object(key) is None, 20, "the stored result to expire")
