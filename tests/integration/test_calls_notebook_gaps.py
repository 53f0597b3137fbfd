"""Issue 14, against a private local cluster (2 workers, shared by this module):
``future.cancel()`` drops a queued call and stops a running one on the server,
``map`` keeps a bounded number of calls in flight, and what a call writes to file
descriptors 1/2 (C code, subprocesses) comes back with its result."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from cloudburst.client import as_completed, wait
from cloudburst.shared import errors
from tests.integration.conftest import Cluster, start_cluster

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = start_cluster(tmp_path_factory.mktemp("nbgaps"), workers=2)
    try:
        yield c
    finally:
        c.group.stop_all()


def mark(cb: Any, key: str, secs: float) -> str:
    """Sleep, then write ``key``: the key tells whether the call ran to its end."""
    import time

    time.sleep(secs)
    cb.put(key, "ran")
    return key


def _state(fut: Any) -> str:
    """Where the call is, from the timeout message of a short get()."""
    try:
        fut.get(timeout=0.2)
    except errors.CloudburstTimeoutError as exc:
        return str(exc)
    return "done"


def _wait_for(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _pids(cloud: Any) -> set[int]:
    return {e["pid"] for e in cloud.status()["executor_list"]}


def test_cancel_stops_a_running_call(cl: Cluster) -> None:
    with cl.connect() as cloud:
        f = cloud.register(mark, "gap_mark_run")
        _wait_for(lambda: len(_pids(cloud)) == 2, 60, "2 workers")
        before = _pids(cloud)
        fut = f("gap/running", 6.0)
        _wait_for(lambda: "running on executor" in _state(fut), 30, "the call to run")
        t0 = time.monotonic()
        assert fut.cancel() and fut.cancelled()
        with pytest.raises(errors.CallCancelled):
            fut.get(timeout=1)
        # Its worker was stopped and replaced (a new pid in its slot) ...
        _wait_for(
            lambda: len(p := _pids(cloud)) == 2 and p != before, 30, "the worker to be replaced"
        )
        # ... so the call never reached its end (it would have written the key at 6 s).
        time.sleep(max(0.0, 6.0 + 2.0 - (time.monotonic() - t0)))
        assert cloud.get_object("gap/running") is None
        # The cluster keeps serving.
        assert f("gap/after", 0.0).get(timeout=30) == "gap/after"
        assert cloud.get_object("gap/after") == "ran"


def test_cancel_drops_a_queued_call(cl: Cluster) -> None:
    with cl.connect() as cloud:
        f = cloud.register(mark, "gap_mark_queued")
        _wait_for(lambda: len(_pids(cloud)) == 2, 60, "2 workers")
        before = _pids(cloud)
        # Both workers busy for 4 s; the third call waits behind one of them.
        blockers = [f(f"gap/block{i}", 4.0) for i in range(2)]
        _wait_for(lambda: all("running on executor" in _state(b) for b in blockers), 30, "blockers")
        queued = f("gap/queued", 0.0)
        assert "queued on executor" in _state(queued)
        assert queued.cancel()
        done, not_done = wait(blockers, timeout=60)
        assert not not_done and sorted(b.get(0) for b in blockers) == ["gap/block0", "gap/block1"]
        time.sleep(2.0)  # the queued trigger was read and dropped meanwhile
        assert cloud.get_object("gap/queued") is None
        assert _pids(cloud) == before  # dropping a queued call stops no worker
        assert f("gap/again", 0.0).get(timeout=30) == "gap/again"


def test_map_keeps_a_bounded_number_of_calls_in_flight(cl: Cluster) -> None:
    with cl.connect() as cloud:
        sq = cloud.register(lambda _, x: x * x, "gap_sq")
        n, bound = 10_000, 200
        t0 = time.monotonic()
        futs = sq.map(range(n), max_in_flight=bound)
        started = [f for f in futs if f.id]
        # (calls that finished while map() awaited acknowledgements made room for more)
        assert bound <= len(started) < n and "not started" in repr(futs[-1])
        assert "not started yet" in _state(futs[-1])
        feeder = futs[-1]._deferred
        assert feeder.in_flight <= bound
        seen = 0
        for _ in as_completed(futs, timeout=600):
            seen += 1
        took = time.monotonic() - t0
        assert seen == n and feeder.most_in_flight <= bound and feeder.in_flight == 0
        assert [f.get(0) for f in futs[:: n // 50]] == [x * x for x in range(0, n, n // 50)]
        assert futs[-1].get(0) == (n - 1) ** 2
        print(f"map of {n} calls, {bound} in flight: {took:.1f}s")

        # A cancelled future of a map, not started yet, is never sent.
        mk = cloud.register(mark, "gap_mark_map")
        three = mk.map(["gap/m0", "gap/m1", "gap/m2"], [1.5, 1.5, 0.0], max_in_flight=2)
        assert not three[2].id and three[2].cancel()
        done, not_done = wait(three[:2], timeout=60)
        assert not not_done and three[1].get(0) == "gap/m1"
        time.sleep(1.0)
        assert not three[2].id and cloud.get_object("gap/m2") is None
        with pytest.raises(ValueError):
            sq.map([1], max_in_flight=0)
        from cloudburst.client.client import MAP_MAX_IN_FLIGHT, CloudburstFunction

        assert CloudburstFunction.map.__kwdefaults__ == {"max_in_flight": MAP_MAX_IN_FLIGHT}


def c_level_output(_: Any, n: int) -> int:
    import ctypes
    import os
    import subprocess

    os.write(1, b"os.write to fd 1\n")
    os.write(2, b"os.write to fd 2\n")
    ctypes.CDLL(None).printf(b"printf from C %d\n", n)
    subprocess.run(["echo", "from a subprocess"], check=True)
    print("from print")
    return n


def test_fd_level_output_comes_back(cl: Cluster) -> None:
    with cl.connect() as cloud:
        f = cloud.register(c_level_output, "gap_c_output")
        fut = f(7)
        assert fut.get(timeout=30) == 7
        out = fut.logs()
        for part in (
            "os.write to fd 1",
            "os.write to fd 2",
            "printf from C 7",
            "from a subprocess",
            "from print",
        ):
            assert part in out, out
        # bounded through the file descriptors too, the cut marked
        flood = cloud.register(lambda _, n: __import__("os").write(1, b"y" * n), "gap_fd_flood")(
            300_000
        )
        assert flood.get(timeout=30) == 300_000
        assert "earlier characters of output dropped" in flood.logs()
        assert len(flood.logs()) < 70_000
        # the next call's output is its own
        again = f(8)
        assert again.get(timeout=30) == 8 and "printf from C 8" in again.logs()
        assert "printf from C 7" not in again.logs() and "yyyy" not in again.logs()


def test_timeout_message_says_lost(cl: Cluster) -> None:
    """A call whose executor stopped heartbeating (SIGSTOP: hung) is reported lost."""
    import os
    import signal

    with cl.connect() as cloud:
        f = cloud.register(mark, "gap_mark_lost")
        fut = f("gap/lost", 3.0)
        _wait_for(lambda: "running on executor" in _state(fut), 30, "the call to run")
        (address,) = fut.executors
        pid = next(e["pid"] for e in cloud.status()["executor_list"] if e["address"] == address)
        os.kill(pid, signal.SIGSTOP)
        try:
            _wait_for(lambda: "lost: executor(s)" in _state(fut), 30, "the lost message")
            assert address in _state(fut) and "stopped heartbeating" in _state(fut)
        finally:
            os.kill(pid, signal.SIGCONT)
        # Resumed, it finishes the call (get() never gave up: it had a timeout).
        assert fut.get(timeout=60) == "gap/lost"
