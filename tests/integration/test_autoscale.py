"""The autoscaler on a real local cluster: a load step adds an executor node on a
second loopback address (127.0.0.2); when the load falls, that node is drained and
removed while calls keep coming, and none is lost."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudburst.autoscale.actuators import LocalActuator
from cloudburst.autoscale.server import Autoscaler
from cloudburst.shared.config import replace
from cloudburst.shared.proto import cloudburst_pb2 as pb
from tests.integration.conftest import Cluster, start_cluster


@pytest.fixture(scope="module")
def fixed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    # A fixed pool per node (no worker elasticity): capacity comes from nodes here.
    c = start_cluster(
        Path(tmp_path_factory.mktemp("autoscale")), workers=2, executor={"elastic": False}
    )
    try:
        yield c
    finally:
        c.group.stop_all()


def slow(cb: Any, x: int) -> int:
    import time

    time.sleep(0.2)
    return x


def test_a_node_is_added_under_load_and_drained_without_losing_calls(
    fixed: Cluster, tmp_path: Path
) -> None:
    cfg = replace(
        fixed.cfg,
        # Utilization is the share of each interval the workers were busy (their busy
        # time): the light phase reads ~0.05. (One CI run read 0.25 for 80 s: a point
        # sample of the busy flags, which a periodic load aliases, and an unbounded
        # heavy phase that queued hundreds of calls behind one worker, busy long after.)
        autoscale={"hysteresis": 1, "grace_s": 3.0, "executor_high": 0.6, "executor_low": 0.1},
    )
    actuator = LocalActuator(cfg, tmp_path, ["127.0.0.2"])
    conn = fixed.connect(timeout=20.0)
    control = fixed.connect(timeout=10.0, direct=False)
    scaler = Autoscaler(cfg, actuator, lambda: control._request("status", pb.StatusQuery()).status)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            scaler.step(time.monotonic())
            stop.wait(0.5)

    thread = threading.Thread(target=loop, daemon=True)
    try:
        conn.register(slow, "as_slow")
        thread.start()
        futs = []
        added_at = removed_at = None
        heavy = True  # until the added node is up, then light for good
        t0 = time.monotonic()
        while time.monotonic() - t0 < 90.0:
            kinds = [d.action.kind for _, d in scaler.history]
            if heavy and "add_executor_node" in kinds and _nodes(conn, "127.0.0.2"):
                heavy = False
            if added_at is None and "add_executor_node" in kinds:
                added_at = time.monotonic() - t0
            if removed_at is None and "remove_executor_node" in kinds:
                removed_at = time.monotonic() - t0
            if removed_at is not None and not scaler.draining and not actuator.draining:
                break
            # heavy: ~10 calls in flight (never more: a backlog queued behind the
            # workers would keep them busy long after the load fell); light: ~0.2
            # busy workers of 4
            if not heavy or sum(1 for f in futs[-20:] if not f.done()) < 10:
                futs.append(conn.exec_func("as_slow", [len(futs)]))
            time.sleep(0.02 if heavy else 1.0)
        assert added_at is not None, scaler.history
        assert kinds.count("add_executor_node") == 1, kinds  # (grace from its arrival)
        trace = [
            (
                round(t - t0, 1),
                s["executor_nodes"],
                s["pending_executor_nodes"],
                round(s["executor_utilization"], 2),
                s["queue_wait_s"],
            )
            for t, s in scaler.trace
        ]
        print("decisions:", [d.log_line() for _, d in scaler.history])
        print("trace (t, nodes, pending, utilization, wait):", trace)
        assert removed_at is not None, "the added node was not removed when the load fell"
        assert not scaler.draining, "the node did not finish draining"
        results = [f.get(timeout=60.0) for f in futs]
        assert results == list(range(len(futs)))  # no call lost while the node drained
        deadline = time.monotonic() + 15.0  # a heartbeat timeout at most
        while _nodes(conn, "127.0.0.2") and time.monotonic() < deadline:
            time.sleep(0.25)
        assert not _nodes(conn, "127.0.0.2")
        print(f"{len(futs)} calls; node added at {added_at:.1f}s, removed at {removed_at:.1f}s")
    finally:
        stop.set()
        thread.join(timeout=10)
        actuator.stop_all()
        conn.close()
        control.close()


def _nodes(conn: Any, ip: str) -> set[str]:
    return {e["node_id"] for e in conn.status()["executor_list"] if e["node_id"].startswith(ip)}


def test_a_hot_function_is_replicated_by_the_scheduler(fixed: Cluster, tmp_path: Path) -> None:
    """``replicate_function`` reaches the scheduler: it reports the function's replicas
    in its status (and places with them: tests/scheduler/test_replicas.py), calls still
    run, and the function goes back to one replica when it cools down."""
    # (max_executor_nodes 1: this test adds no node)
    cfg = replace(
        fixed.cfg,
        autoscale={"hysteresis": 1, "hot_function_rate": 5.0, "max_executor_nodes": 1},
    )
    conn = fixed.connect(timeout=20.0)
    control = fixed.connect(timeout=10.0, direct=False)
    counts = {"n": 0.0}

    def scrape() -> tuple[dict[str, str], str]:
        line = 'cloudburst_calls_total{kind="function",name="as_hot",role="scheduler"} %g\n'
        return {}, "# TYPE cloudburst_calls_total counter\n" + line % counts["n"]

    scaler = Autoscaler(
        cfg,
        LocalActuator(cfg, tmp_path, []),
        lambda: control._request("status", pb.StatusQuery()).status,
        scrape=scrape,
        replicate=lambda fn, n: control._request(
            "replicate", pb.FunctionReplication(function=fn, replicas=n)
        ),
    )
    try:
        conn.register(slow, "as_hot")
        scaler.step(0.0)
        counts["n"] = 100.0  # 100 calls in 10 s: 10/s > 5/s
        kinds = [d.action.kind for d in scaler.step(10.0)]
        assert "replicate_function" in kinds
        status = control._request("status", pb.StatusQuery()).status
        assert dict(status.function_replicas) == {"as_hot": 2}
        assert conn.exec_func("as_hot", [7]).get(timeout=60.0) == 7
        counts["n"] = 100.0  # no calls: 0/s, cold
        back = [(d.action.kind, d.action.count) for d in scaler.step(20.0)]
        assert ("replicate_function", 1) in back
        assert not control._request("status", pb.StatusQuery()).status.function_replicas
    finally:
        conn.close()
        control.close()
