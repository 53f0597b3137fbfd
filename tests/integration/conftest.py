"""A real local cluster for integration tests: KVS (``anna.local``), one scheduler and
one executor node with 3 workers, every port free (never the defaults), started once
per session and always stopped.

``cluster.connect()`` gives a client; ``cloud`` is one per test (closed after it).
Tests share the cluster, so each uses its own function and DAG names.

Every Python process of a cluster costs ~0.6 s CPU to start (seconds of wall time on a
loaded 2-core machine): a test that needs its own configuration shares one cluster per
module, asks for the workers it needs only, and starts a second node together with the
first (``start_cluster(..., wait=False)``, then ``wait_ready`` for both).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cloudburst.client.client import CloudburstConnection
from cloudburst.local import free_port_config, wait_ready, write_config
from cloudburst.shared.config import Config
from cloudburst.shared.processes import ProcessGroup

WORKERS = 3


@dataclass
class Cluster:
    cfg: Config
    config_path: Path
    group: ProcessGroup

    def connect(self, **kw: Any) -> CloudburstConnection:
        kw.setdefault("timeout", 10.0)
        return CloudburstConnection(self.cfg.ip, self.cfg.ip, port=self.cfg.scheduler.port, **kw)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log_tail(40)}" for p in self.group.procs.values())


def start_cluster(
    run_dir: Path,
    workers: int = WORKERS,
    scheduler: dict[str, Any] | None = None,
    executor: dict[str, Any] | None = None,
    wait: bool = True,
    **sections: Any,
) -> Cluster:
    """A private cluster in ``run_dir`` (always stop it: ``cluster.group.stop_all()``);
    ``scheduler``/``executor`` entries override the test defaults below. ``wait=False``
    returns once the processes are started (the caller waits, e.g. after starting a
    second node meanwhile, with ``wait_ready``)."""
    cfg = free_port_config(
        run_dir,
        workers=workers,
        scheduler={"heartbeat_timeout_s": 2.0, "call_timeout_s": 20.0, **(scheduler or {})},
        executor={
            "workers": workers,
            "base_port": 0,
            "heartbeat_period_s": 0.25,
            **(executor or {}),
        },
        **sections,
    )
    path = write_config(cfg, run_dir / "config.yml")
    group = ProcessGroup(log_dir=run_dir / "logs")
    cluster = Cluster(cfg, path, group)
    try:
        group.python("kvs", "anna.local", "--config", str(path))
        group.python("scheduler", "scheduler.server", "--config", str(path))
        group.python("executor", "executor.node", "--config", str(path))
        if wait:
            wait_ready(cfg, workers, timeout=60.0)
    except BaseException:
        print(cluster.logs(), file=sys.stderr)
        group.stop_all()
        raise
    return cluster


@contextmanager
def running(c: Cluster) -> Iterator[Cluster]:
    """Hand out a started cluster; stop every process at the end and check that none
    is left alive (a fixture's ``with running(start_cluster(...)) as c: yield c``)."""
    try:
        yield c
    finally:
        c.group.stop_all()
    leaked = [p.name for p in c.group.procs.values() if p.alive()]
    assert not leaked, f"cluster processes still alive: {leaked}"


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running(start_cluster(tmp_path_factory.mktemp("cluster"))) as c:
        yield c


@pytest.fixture
def cloud(cluster: Cluster) -> Iterator[CloudburstConnection]:
    conn = cluster.connect()
    try:
        yield conn
    finally:
        conn.close()
