"""Worker pool elasticity on a real local cluster (3 workers at the start, at most 10).

A gang of calls that wait on each other through the KVS completes (the pool grows);
more calls than the maximum: the ones that find no worker fail saying the cluster is
at its maximum; idle workers retire back to the minimum; no call is lost meanwhile.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudburst.client.client import CloudburstConnection
from cloudburst.shared.errors import CloudburstException
from tests.integration.conftest import Cluster, running, start_cluster

MAX = 10


@pytest.fixture(scope="module")
def elastic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = start_cluster(
        Path(tmp_path_factory.mktemp("elastic")),
        scheduler={"call_timeout_s": 8.0},
        executor={"max_workers": MAX, "grow_after_s": 0.3, "idle_retire_s": 3.0},
    )
    with running(c):
        yield c


@pytest.fixture
def cloud(elastic: Cluster) -> Iterator[CloudburstConnection]:
    conn = elastic.connect(timeout=20.0)
    try:
        yield conn
    finally:
        conn.close()


def gang_member(cb: Any, i: int, n: int, prefix: str, limit: float) -> int:
    """Write my key, then wait (at most ``limit`` s) until all ``n`` keys are there."""
    import time

    cb.put(f"{prefix}/{i}", i)
    keys = [f"{prefix}/{j}" for j in range(n)]
    deadline = time.time() + limit
    while time.time() < deadline:
        got = cb.get(keys)
        if all(got.get(k) is not None for k in keys):
            return sum(got[k] for k in keys)
        time.sleep(0.05)
    return -1


def workers(conn: CloudburstConnection) -> int:
    return int(conn.status().get("executors", 0))


def wait_for(pred: Any, timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        time.sleep(0.25)
    raise AssertionError(f"{what} did not happen within {timeout}s")


def test_a_gang_of_ten_completes_and_the_pool_shrinks_back(
    cloud: CloudburstConnection, elastic: Cluster
) -> None:
    cloud.register(gang_member, "gang_member")
    for _ in range(2):  # twice in a row on the same cluster
        prefix = f"gang-{uuid.uuid4().hex[:8]}"
        n = 10
        t0 = time.monotonic()
        futs = [cloud.exec_func("gang_member", [i, n, prefix, 90.0]) for i in range(n)]
        results = [f.get(timeout=120.0) for f in futs]
        took = time.monotonic() - t0
        assert results == [sum(range(n))] * n, (results, elastic.logs())
        # ~5-10 s on a quiet 2-core machine (the bound is 30 s); not asserted:
        # starting 7 Python workers at once takes 20 s+ when the machine is loaded.
        print(f"gang of {n} completed in {took:.1f}s")
    # idle_retire_s = 3: back to the 3 workers it started with (one retires at a time)
    wait_for(lambda: workers(cloud) == 3, 60.0, "shrinking back to 3 workers")
    assert (
        cloud.exec_func("gang_member", [0, 1, f"solo-{uuid.uuid4().hex}", 5.0]).get(timeout=20.0)
        == 0
    )


def hold(cb: Any, i: int, seconds: float) -> int:
    import time

    time.sleep(seconds)
    return i


def test_calls_beyond_the_maximum_fail_saying_so(cloud: CloudburstConnection) -> None:
    cloud.register(hold, "hold")
    n = MAX + 2  # two of them find no worker within call_timeout_s (8 s)
    futs = [cloud.exec_func("hold", [i, 12.0]) for i in range(n)]
    errors: list[str] = []
    results = []
    for f in futs:
        try:
            results.append(f.get(timeout=60.0))
        except CloudburstException as exc:
            errors.append(str(exc))
    assert len(errors) == 2, (errors, results)
    assert all("the cluster is at its maximum" in e for e in errors), errors
    assert len(results) == MAX


def test_no_call_is_lost_while_workers_retire(cloud: CloudburstConnection) -> None:
    """Grow the pool, then keep calling while the extra workers retire one by one."""
    cloud.register(gang_member, "gang_member")
    prefix = f"grow-{uuid.uuid4().hex[:8]}"
    n = 8
    futs = [cloud.exec_func("gang_member", [i, n, prefix, 90.0]) for i in range(n)]
    assert [f.get(timeout=120.0) for f in futs] == [sum(range(n))] * n
    assert workers(cloud) >= n
    done = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < 12.0:  # idle_retire_s = 3: retirements happen here
        batch = [
            cloud.exec_func("gang_member", [0, 1, f"r-{uuid.uuid4().hex}", 5.0]) for _ in range(3)
        ]
        assert [f.get(timeout=20.0) for f in batch] == [0, 0, 0]
        done += 3
        time.sleep(0.3)
    assert done >= 15
    assert workers(cloud) < n  # some retired meanwhile


def slow(cb: Any, x: int) -> int:
    import time

    time.sleep(0.5)
    return x


def test_a_load_step_grows_the_pool_and_it_shrinks_after(
    cloud: CloudburstConnection, elastic: Cluster
) -> None:
    """1 call/s, then 10 calls/s (x10) for 6 s, then 1 call/s: 3 workers serve 6
    calls/s of this function, so the step needs more; every call succeeds."""
    cloud.register(slow, "slow")
    wait_for(lambda: workers(cloud) == 3, 60.0, "the pool at its minimum")
    sizes: list[tuple[float, int]] = []
    stop = threading.Event()
    t0 = time.monotonic()

    def sample() -> None:
        with elastic.connect(timeout=10.0, direct=False) as conn:
            while not stop.is_set():
                sizes.append((time.monotonic() - t0, workers(conn)))
                stop.wait(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        futs = []
        for phase_s, rate in ((2.0, 1.0), (6.0, 10.0), (2.0, 1.0)):
            end = time.monotonic() + phase_s
            while time.monotonic() < end:
                futs.append(cloud.exec_func("slow", [len(futs)]))
                time.sleep(1.0 / rate)
        results = [f.get(timeout=60.0) for f in futs]
        assert results == list(range(len(futs)))  # none lost, none failed
        # bounded: the new workers start within 40 s even on a loaded machine
        wait_for(lambda: any(n > 3 for _, n in sizes), 40.0, "the pool growing")
        grown_at = min(t for t, n in sizes if n > 3)
        shrink_s = wait_for(lambda: sizes[-1][1] == 3, 60.0, "shrinking back after the step")
    finally:
        stop.set()
        sampler.join(timeout=10)
    peak = max(n for _, n in sizes)
    print(
        f"load step at 2.0s: grew to {peak} workers (first seen at {grown_at:.1f}s), back "
        f"to 3 {shrink_s:.1f}s after the calls were answered"
    )


def crash(cb: Any, x: int) -> int:
    import os

    os._exit(3)  # the interpreter dies (as a segfaulting extension would)


def busy_workers(conn: CloudburstConnection) -> int:
    from cloudburst.shared.proto import cloudburst_pb2 as pb

    st = conn._request("status", pb.StatusQuery()).status
    return sum(1 for e in st.executors if e.busy)


def test_a_handed_back_call_whose_worker_dies_fails_at_once(
    cloud: CloudburstConnection,
) -> None:
    """Every worker busy: the call waits behind one of them, goes back to the node and
    runs on a new worker, which dies. The caller watches the worker the scheduler named
    (alive, still busy): the node tells it the call's worker died, long before the
    call's timeout."""
    cloud.register(hold, "hold")
    cloud.register(crash, "crash")
    wait_for(lambda: workers(cloud) == 3, 60.0, "the pool at its minimum")
    holds = [cloud.exec_func("hold", [i, 6.0]) for i in range(3)]
    wait_for(lambda: busy_workers(cloud) == 3, 30.0, "all three workers busy")
    t0 = time.monotonic()
    f = cloud.exec_func("crash", [0])
    with pytest.raises(CloudburstException) as info:
        f.get(timeout=60.0)
    print(f"a handed-back call's worker died: the caller knew {time.monotonic() - t0:.2f}s after")
    assert "the worker running this call died" in str(info.value), info.value
    assert "waited behind a busy worker" in str(info.value)
    assert [h.get(timeout=60.0) for h in holds] == [0, 1, 2]  # the others are unharmed
