"""Actuators: carry out the cluster policy's actions (``cloudburst.autoscale.policy``).

:class:`LocalActuator`
    starts executor nodes (``python -m executor.node``) and storage nodes
    (``python -m anna.local --seed <routing>``) on this host, on ``cfg.ip`` or on
    other loopback addresses (every 127.0.0.x is a separate host); removes what it
    started: an executor node gets SIGUSR1 (its workers leave and run what was
    already placed on them before it exits: no call lost), a storage node SIGTERM
    (``anna.local`` departs first: its keys are handed off).
:class:`KubernetesActuator`
    patches the replica count of the executor Deployment and the storage StatefulSet
    through the official ``kubernetes`` client; before a storage scale-down the pod
    that goes (the highest ordinal) departs from the KVS and its keys are handed off.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cloudburst.shared.config import Config, kvs_host, replace, scheduler_host
from cloudburst.shared.processes import SERVER_ENV
from cloudburst.supervisor import die_with_parent, terminate

log = logging.getLogger(__name__)


class ActuatorError(Exception):
    pass


class LocalActuator:
    """Executor and storage nodes as processes of this host (see the module docstring)."""

    def __init__(
        self, cfg: Config, run_dir: str | os.PathLike[str], ips: list[str] | None = None
    ) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.ips = itertools.cycle(ips or [cfg.ip])
        self.storage_ips = itertools.cycle(ips or [cfg.ip])
        self.executors: dict[str, subprocess.Popen[bytes]] = {}
        self.storage: dict[str, subprocess.Popen[bytes]] = {}
        self.draining: dict[str, subprocess.Popen[bytes]] = {}
        self._seq = itertools.count(1)

    def _config_for(self, ip: str, role: str, n: int) -> Path:
        """A config file for a node on ``ip``: it reaches the KVS and the scheduler
        where they are, keeps its files apart and binds random metrics ports."""
        cfg = self.cfg
        node_dir = self.run_dir / f"{role}-{n}"
        sections: dict[str, Any] = {
            "ip": ip,
            "kvs": {"host": kvs_host(cfg)},
            "scheduler": {"host": scheduler_host(cfg)},
            "metrics": {"base_port": 0},
        }
        if role == "storage":
            sections["kvs"]["data_dir"] = str(node_dir / "kvs")
        new = replace(cfg, **sections)
        from cloudburst.local import write_config

        node_dir.mkdir(parents=True, exist_ok=True)
        return write_config(new, node_dir / "config.yml")

    def _spawn(self, argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as out:
            return subprocess.Popen(
                argv,
                env={**os.environ, **SERVER_ENV},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent(signal.SIGKILL),
                process_group=0,
            )

    # --- executors ---------------------------------------------------------

    def add_executor_node(self) -> str:
        ip = next(self.ips)
        n = next(self._seq)
        path = self._config_for(ip, "executor", n)
        proc = self._spawn(
            [sys.executable, "-m", "executor.node", "--config", str(path)],
            self.run_dir / f"executor-{n}" / "node.log",
        )
        node_id = f"{ip}/{proc.pid}"  # executor.node's node id
        self.executors[node_id] = proc
        log.info("started executor node %s", node_id)
        return node_id

    def owns(self, node_id: str) -> bool:
        return node_id in self.executors

    def starting(self, seen: set[str]) -> int:
        """Executor nodes started here, alive, not reporting yet (not in ``seen``)."""
        return sum(1 for n, p in self.executors.items() if n not in seen and p.poll() is None)

    def remove_executor_node(self, node_id: str) -> bool:
        """Drain and stop a node this actuator started (False: not one of ours)."""
        proc = self.executors.pop(node_id, None)
        if proc is None:
            return False
        if proc.poll() is None:
            proc.send_signal(signal.SIGUSR1)  # executor.node: drain, then exit
        self.draining[node_id] = proc
        log.info("draining executor node %s", node_id)
        return True

    # --- storage -----------------------------------------------------------

    def add_storage_node(self) -> str:
        ip = next(self.storage_ips)
        n = next(self._seq)
        if ip == self.cfg.ip:
            raise ActuatorError(
                "a second storage node needs its own address (autoscale.executor_ips)"
            )
        path = self._config_for(ip, "storage", n)
        seed = f"{kvs_host(self.cfg)}:{self.cfg.kvs.routing_port}"
        proc = self._spawn(
            [sys.executable, "-m", "anna.local", "--config", str(path), "--seed", seed],
            self.run_dir / f"storage-{n}" / "kvs.log",
        )
        node_id = f"{ip}:{self.cfg.kvs.shard_base_port}"  # anna's node id
        self.storage[node_id] = proc
        log.info("started storage node %s", node_id)
        return node_id

    def remove_storage_node(self, node_id: str) -> bool:
        proc = self.storage.pop(node_id, None)
        if proc is None:
            return False
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # anna.local: depart (hand-off), then stop
        self.draining[node_id] = proc
        return True

    # --- housekeeping ------------------------------------------------------

    def reap(self) -> list[str]:
        """Nodes that finished draining (their processes exited)."""
        done = [n for n, p in self.draining.items() if p.poll() is not None]
        for n in done:
            del self.draining[n]
        return done

    def stop_all(self, timeout: float = 20.0) -> None:
        terminate(
            [*self.executors.values(), *self.storage.values(), *self.draining.values()], timeout
        )
        self.executors.clear()
        self.storage.clear()
        self.draining.clear()


class KubernetesActuator:
    """Replica counts of the executor Deployment and the storage StatefulSet.

    ``api_client`` is a ``kubernetes.client.ApiClient`` (default: the in-cluster or
    kubeconfig configuration). ``depart(pod_ip)`` hands a storage pod's keys off before
    it goes (default: ``anna.admin.depart_and_wait`` through ``routing``).
    """

    def __init__(
        self,
        namespace: str,
        executor_deployment: str,
        storage_statefulset: str,
        api_client: Any = None,
        depart: Callable[[str], None] | None = None,
        routing: str = "",
        shard_base_port: int = 6200,
        ip: str = "127.0.0.1",
    ) -> None:
        from kubernetes import client, config

        if api_client is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            api_client = client.ApiClient()
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace
        self.executor_deployment = executor_deployment
        self.storage_statefulset = storage_statefulset
        self.shard_base_port = shard_base_port
        self.routing = routing
        self.ip = ip  # this pod's address: routing's answers to the hand-off come here
        self.depart = depart or self._depart

    def _depart(self, pod_ip: str) -> None:
        from anna.admin import depart_and_wait

        node = f"{pod_ip}:{self.shard_base_port}"
        out = depart_and_wait(self.routing, node, [], ip=self.ip, timeout=30.0)
        log.info("storage node %s departed: %s", node, out.status)

    def replicas(self, kind: str) -> int:
        if kind == "executor":
            scale = self.apps.read_namespaced_deployment_scale(
                self.executor_deployment, self.namespace
            )
        else:
            scale = self.apps.read_namespaced_stateful_set_scale(
                self.storage_statefulset, self.namespace
            )
        return int(scale.spec.replicas or 0)

    def _patch(self, kind: str, replicas: int) -> None:
        body = {"spec": {"replicas": replicas}}
        if kind == "executor":
            self.apps.patch_namespaced_deployment_scale(
                self.executor_deployment, self.namespace, body
            )
        else:
            self.apps.patch_namespaced_stateful_set_scale(
                self.storage_statefulset, self.namespace, body
            )
        log.info("%s replicas -> %d", kind, replicas)

    def add_executor_node(self) -> str:
        n = self.replicas("executor") + 1
        self._patch("executor", n)
        return f"replica {n}"

    def remove_executor_node(self, node_id: str) -> bool:
        n = self.replicas("executor")
        if n <= 1:
            return False
        self._patch("executor", n - 1)
        return True

    def add_storage_node(self) -> str:
        n = self.replicas("storage") + 1
        self._patch("storage", n)
        return f"{self.storage_statefulset}-{n - 1}"

    def remove_storage_node(self, node_id: str = "") -> bool:
        """The StatefulSet removes its highest ordinal: that pod departs first."""
        n = self.replicas("storage")
        if n <= 1:
            return False
        pod = self.core.read_namespaced_pod(f"{self.storage_statefulset}-{n - 1}", self.namespace)
        self.depart(pod.status.pod_ip)
        self._patch("storage", n - 1)
        return True
