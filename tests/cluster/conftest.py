"""The multi-container cluster of deploy/compose/ for the tests of this directory,
started once per session through the docker SDK (deploy/compose/sdk_compose.py) and
always removed (containers, network, volumes), pass or fail.

Run by scripts/test-cluster.sh (marker ``cluster``; the default run deselects it).
The image is ``$CB_CLUSTER_IMAGE`` (default ``cloudburst:dev``, built by
scripts/build-image.sh). The network is a free 172.28.x.0/24; the published ports are
free loopback ports. The host client reaches the containers by address and is
reached back on the network's gateway.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from anna.admin import membership
from cloudburst.client.client import CloudburstConnection
from cloudburst.shared.processes import free_port
from cloudburst.shared.security import KEYS_ENV, generate_keys

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "sdk_compose", ROOT / "deploy" / "compose" / "sdk_compose.py"
)
assert _spec and _spec.loader
sdk_compose = importlib.util.module_from_spec(_spec)
sys.modules["sdk_compose"] = sdk_compose
_spec.loader.exec_module(sdk_compose)

HEALTHY_TIMEOUT_S = 240.0
CONTAINER_UID = 10001  # the image's user (Dockerfile)


def _free_net(client: docker.DockerClient) -> str:
    used = []
    for net in client.networks.list():
        for conf in (net.attrs.get("IPAM") or {}).get("Config") or []:
            if "Subnet" in conf:
                used.append(ipaddress.ip_network(conf["Subnet"], strict=False))
    for third in range(5, 250):
        cand = ipaddress.ip_network(f"172.28.{third}.0/24")
        if not any(cand.overlaps(u) for u in used):
            return f"172.28.{third}"
    raise RuntimeError("no free 172.28.x.0/24 for the test network")


@dataclass
class ComposeCluster:
    project: Any  # sdk_compose.Project
    net: str
    routing_publish: int
    scheduler_publish: int
    started: float
    first_answer_s: float | None = None

    def addr(self, service: str) -> str:
        svc = self.project.spec["services"][service]
        return str(next(iter(svc["networks"].values()))["ipv4_address"])

    def connect(self, **kw: Any) -> CloudburstConnection:
        kw.setdefault("timeout", 30.0)
        kw.setdefault("connect_timeout", 10.0)
        return CloudburstConnection(
            self.addr("scheduler"), kvs_address=f"{self.addr('routing')}:6450", **kw
        )

    def container(self, service: str) -> Any:
        return self.project.client.containers.get(self.project.container_name(service))

    def logs(self, tail: int = 30) -> str:
        out = []
        for name, status, health in self.project.ps():
            c = self.project.client.containers.get(name)
            text = c.logs(tail=tail).decode(errors="replace")
            out.append(f"--- {name} ({status}, {health})\n{text}")
        return "\n".join(out)


def _wait_members(cluster: ComposeCluster, timeout: float) -> None:
    """Until routing lists both storage nodes live and the scheduler has workers of
    both executor nodes (the docker health checks only see open ports)."""
    deadline = time.monotonic() + timeout
    conn = None
    while True:
        try:
            conn = conn or cluster.connect(timeout=5.0)
            table = membership(f"tcp://{cluster.addr('routing')}:6450", conn.ip, timeout=3.0)
            live = [n for n in (table.nodes if table else []) if not n.departed]
            nodes = {e["node_id"].split("/")[0] for e in conn.status()["executor_list"]}
            if len(live) == 2 and len(nodes) == 2:
                conn.close()
                return
            got = f"{len(live)} storage nodes, executor nodes {sorted(nodes)}"
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            got = repr(exc)
        if time.monotonic() > deadline:
            if conn:
                conn.close()
            raise TimeoutError(f"cluster not complete after {timeout:.0f} s: {got}")
        time.sleep(1.0)


@pytest.fixture(scope="session")
def compose() -> Iterator[ComposeCluster]:
    client = docker.from_env(timeout=120)
    net = _free_net(client)
    routing_pub, sched_pub = free_port(), free_port()
    # CURVE on every port (deploy/compose/cloudburst.yml): a fresh cluster key pair and
    # client key pair, readable by the containers' user (10001) only; this host's
    # clients (CloudburstConnection, anna.admin) find them through the environment.
    keys = generate_keys(Path(tempfile.mkdtemp(prefix="cbkeys")) / "keys")
    for path in [keys, *keys.rglob("*")]:
        os.chown(path, CONTAINER_UID, CONTAINER_UID)
    os.environ[KEYS_ENV] = str(keys)
    env = {
        "CLOUDBURST_KEYS_DIR": str(keys),
        "CLOUDBURST_IMAGE": os.environ.get("CB_CLUSTER_IMAGE", "cloudburst:dev"),
        "CLOUDBURST_NET": net,
        "CLOUDBURST_ROUTING_PUBLISH": f"127.0.0.1:{routing_pub}",
        "CLOUDBURST_SCHEDULER_PUBLISH": f"127.0.0.1:{sched_pub}",
    }
    name = os.environ.get("CB_CLUSTER_PROJECT", f"cbtest{os.getpid()}")
    project = sdk_compose.Project(name, sdk_compose.load(env=env), client=client)
    project.down()  # leftovers of an interrupted run of the same project
    cluster = ComposeCluster(project, net, routing_pub, sched_pub, time.monotonic())
    try:
        project.up()
        try:
            up = time.monotonic() - cluster.started
            project.wait_healthy(HEALTHY_TIMEOUT_S)
            healthy = time.monotonic() - cluster.started
            _wait_members(cluster, HEALTHY_TIMEOUT_S)
            members = time.monotonic() - cluster.started
            print(
                f"cluster: containers started {up:.1f} s, healthy {healthy:.1f} s, "
                f"storage and executor nodes all members {members:.1f} s"
            )
        except (TimeoutError, AssertionError):
            print(cluster.logs(), file=sys.stderr)
            raise
        yield cluster
    finally:
        if os.environ.get("CB_CLUSTER_KEEP") != "1":
            removed = project.down()
            print(f"removed {len(removed)} objects of {name}", file=sys.stderr)
            shutil.rmtree(keys.parent, ignore_errors=True)


@pytest.fixture
def cloud(compose: ComposeCluster) -> Iterator[CloudburstConnection]:
    conn = compose.connect()
    try:
        yield conn
    finally:
        conn.close()
