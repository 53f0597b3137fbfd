"""Several schedulers side by side: state in the KVS, executors heartbeat to all."""

from __future__ import annotations

from typing import Any

import pytest

from cloudburst.client.client import CloudburstConnection
from cloudburst.shared import errors
from cloudburst.shared.processes import ProcessGroup, free_port, port_open, wait_until
from cloudburst.shared.proto.cloudburst_pb2 import DAG_ALREADY_EXISTS

pytestmark = pytest.mark.integration


def test_two_schedulers_share_functions_dags_and_executors(
    cluster: Any, cloud: CloudburstConnection, procs: ProcessGroup
) -> None:
    port = free_port()
    procs.python(
        "scheduler2", "scheduler.server", "--config", str(cluster.config_path), "--port", str(port)
    )
    wait_until(lambda: port_open(cluster.cfg.ip, port), 15, "the second scheduler")
    other = CloudburstConnection(cluster.cfg.ip, cluster.cfg.ip, port=port, direct=False)
    try:
        workers = cluster.cfg.executor.workers
        wait_until(lambda: other.status()["executors"] >= workers, 20, "executors on scheduler 2")
        cloud.register(lambda _, x: x - 1, "two_decr")
        assert other.get_function("two_decr")(10).get(timeout=10) == 9
        assert "two_decr" in other.list("two_")
        assert other.register_dag("two_dag", ["two_decr"], []) == (True, 0)
        assert cloud.register_dag("two_dag", ["two_decr"], []) == (True, 0)  # the same DAG
        cloud.register(lambda _, x: x, "two_id")
        other_dag = cloud.register_dag("two_dag", ["two_decr", "two_id"], [("two_decr", "two_id")])
        assert other_dag == (False, DAG_ALREADY_EXISTS)
        assert cloud.call_dag("two_dag", {"two_decr": 5}).get(timeout=10) == 4
        assert other.call_dag("two_dag", {"two_decr": 6}).get(timeout=10) == 5
        assert cloud.delete_dag("two_dag") == (True, 0)

        def deleted_everywhere() -> bool:
            try:
                other.call_dag("two_dag", {"two_decr": 1}).get(timeout=10)
            except errors.DagNotFound:
                return True
            return False

        wait_until(deleted_everywhere, 10, "the deletion to reach scheduler 2", interval=0.2)
    finally:
        other.close()
