"""Process liveness: executor nodes take their workers with them; a restarted
scheduler keeps serving what was registered (state lives in the KVS)."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest

from cloudburst.client.client import CloudburstConnection
from cloudburst.local import alive
from cloudburst.shared.processes import ProcessGroup, free_port, port_open, wait_until

pytestmark = pytest.mark.integration


def test_killing_a_node_kills_its_workers_and_the_scheduler_notices(
    cluster: Any, cloud: CloudburstConnection, procs: ProcessGroup
) -> None:
    nodes = {e["node_id"] for e in cloud.status()["executor_list"]}

    def node2_workers() -> list[dict[str, Any]]:
        return [e for e in cloud.status()["executor_list"] if e["node_id"] not in nodes]

    procs.python("node2", "executor.node", "--config", str(cluster.config_path), "--workers", "2")
    wait_until(lambda: len(node2_workers()) >= 2, 20, "node 2")
    new = node2_workers()
    assert len(new) == 2 and len({e["node_id"] for e in new}) == 1
    pids = [e["pid"] for e in new]
    os.kill(procs.procs["node2"].pid, signal.SIGKILL)  # the node only, not its group
    wait_until(lambda: not any(alive(p) for p in pids), 10, "node 2's workers to die with it")
    wait_until(
        lambda: (
            not (
                {e["address"] for e in new}
                & {e["address"] for e in cloud.status()["executor_list"]}
            )
        ),
        10,
        "the scheduler to drop node 2's workers",
    )
    f = cloud.register(lambda _, x: x + 100, "after_node_death")
    for i in range(5):
        assert f(i).get(timeout=10) == i + 100


def test_a_restarted_scheduler_keeps_functions_and_dags(cluster: Any, procs: ProcessGroup) -> None:
    port = free_port()
    argv = ("scheduler.server", "--config", str(cluster.config_path), "--port", str(port))
    procs.python("sched_a", *argv)
    wait_until(lambda: port_open(cluster.cfg.ip, port), 15, "the scheduler")
    workers = cluster.cfg.executor.workers
    with CloudburstConnection(cluster.cfg.ip, cluster.cfg.ip, port=port) as conn:
        conn.register(lambda _, x: x * 7, "restart_f")
        assert conn.register_dag("restart_dag", ["restart_f"], []) == (True, 0)
    procs.kill("sched_a")
    procs.python("sched_b", *argv)
    wait_until(lambda: port_open(cluster.cfg.ip, port), 15, "the restarted scheduler")
    with CloudburstConnection(cluster.cfg.ip, cluster.cfg.ip, port=port, direct=False) as conn:
        wait_until(lambda: conn.status()["executors"] >= workers, 20, "executors")
        assert conn.call_dag("restart_dag", {"restart_f": 3}).get(timeout=10) == 21
        assert conn.get_function("restart_f")(2).get(timeout=10) == 14
