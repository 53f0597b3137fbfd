"""Probes for containers: ``python -m cloudburst.health ROLE [--deep] [--timeout S]``.

Exit 0 when ROLE serves on this host (``cfg.ip``, from the config file and the
environment as the role itself reads them), 1 otherwise, with one line saying why.

Without ``--deep`` (liveness, compose healthchecks) the probe is cheap: it imports
no messaging code and checks that the role's ports accept connections (routing: the
routing port; storage: routing and every shard's request port; scheduler: its port;
executor: every worker port, ``executor.base_port + i``, and the node cache's ipc
socket unless ``cache.external``; cache: the ipc socket of the cache that
``cache.server --node-id auto`` runs for an executor node with ``cache.external``
accepts a connection). With ``--deep`` (readiness) it also makes a real exchange: routing and
storage answer a membership request (storage: and list this node live), the
scheduler answers a status query, the cache answers a ping. A cheap liveness probe matters: under CPU limits a
probe that imports half the code base times out and restarts healthy pods.

autoscaler (``cloudburst.autoscale.server``, nothing to connect to but its metrics):
its heartbeat file (:func:`heartbeat_path`, touched after every evaluation) is younger than
``3 * autoscale.period_s + AUTOSCALER_GRACE_S`` (a loop stuck in a step, e.g. an API
call that never returns, fails it); ``--deep``: also the scheduler it reads
(``scheduler.host``) answers a status query.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time

from cloudburst.shared.config import Config, load_config
from cloudburst.shared.processes import port_open

ROLES = ("routing", "storage", "scheduler", "executor", "cache", "autoscaler")
#: Seconds an autoscaler's heartbeat may be late beyond three evaluation periods (a
#: step may wait on the scheduler, the KVS hand-off of a storage node: 30 s, the API).
AUTOSCALER_GRACE_S = 60.0


def heartbeat_path(cfg: Config) -> str:
    """The file the autoscaler touches after every evaluation (in ``run_dir``)."""
    return os.path.join(cfg.run_dir, "autoscale", "heartbeat")


def _heartbeat(cfg: Config) -> str | None:
    path = heartbeat_path(cfg)
    try:
        age = time.time() - os.stat(path).st_mtime
    except OSError:
        return f"no heartbeat at {path}"
    limit = 3 * cfg.autoscale.period_s + AUTOSCALER_GRACE_S
    if age > limit:
        return f"heartbeat {path} is {age:.0f}s old (limit {limit:.0f}s)"
    return None


def _ports(role: str, cfg: Config) -> list[tuple[str, int]]:
    kvs = cfg.kvs
    if role == "routing":
        return [("routing", kvs.routing_port)]
    if role == "storage":
        shards = [(f"shard {t}", kvs.shard_base_port + t) for t in range(kvs.shards)]
        return [("routing", kvs.routing_port), *shards]
    if role == "scheduler":
        return [("scheduler", cfg.scheduler.port)]
    if role in ("cache", "autoscaler"):
        return []
    base = cfg.executor.base_port
    return [(f"worker {i}", base + i) for i in range(cfg.executor.workers)] if base else []


def _keys_dir(cfg: Config) -> str | None:
    """The keys a deep probe talks with: the cluster's own (CURVE on), else None."""
    if cfg.security.curve != "true":
        return None
    return cfg.security.keys_dir or os.path.join(cfg.run_dir, "keys")


def _cache_socket(cfg: Config) -> str:
    """The path of the ipc socket of an external cache (``cache.external``)."""
    from cache.protocol import external_node_id, ipc_address

    node_id = external_node_id(cfg.ip, cfg.executor.base_port)
    return ipc_address(cfg.cache.ipc_dir, node_id)[len("ipc://") :]


def _unix_open(path: str, timeout: float) -> bool:
    """Whether a Unix socket accepts connections (a file left by a killed cache does not)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError:
        return False
    finally:
        sock.close()
    return True


def _deep(role: str, cfg: Config, timeout: float) -> str | None:
    if _keys_dir(cfg):
        from cloudburst.shared import security

        # The cluster's key pair: servers always admit it (anna.admin talks with it).
        security.server_security(cfg)
    if role in ("routing", "storage"):
        from anna.admin import membership

        table = membership(f"tcp://{cfg.ip}:{cfg.kvs.routing_port}", cfg.ip, timeout=timeout)
        if table is None:
            return f"routing on {cfg.ip}:{cfg.kvs.routing_port} does not answer"
        node_id = f"{cfg.ip}:{cfg.kvs.shard_base_port}"
        if role == "storage" and not any(
            n.node_id == node_id and not n.departed for n in table.nodes
        ):
            return f"node {node_id} is not a live member"
    elif role == "cache":
        from cache.client import CacheClient

        client = CacheClient(cfg=cfg, address=f"ipc://{_cache_socket(cfg)}", timeout=timeout)
        try:
            if not client.ping(timeout):
                return f"the cache on {_cache_socket(cfg)} does not answer"
        finally:
            client.close()
    elif role in ("scheduler", "autoscaler"):
        from cloudburst.client.client import CloudburstConnection

        # the autoscaler's input: the scheduler where it is (scheduler.host)
        host = cfg.ip if role == "scheduler" else (cfg.scheduler.host or cfg.ip)
        try:
            conn = CloudburstConnection(
                f"{host}:{cfg.scheduler.port}",
                ip=cfg.ip,
                timeout=timeout,
                keys_dir=_keys_dir(cfg),
            )
        except Exception as exc:  # noqa: BLE001 - any failure means not serving
            return f"scheduler connection failed: {exc}"
        try:
            conn.status()
        except Exception as exc:  # noqa: BLE001
            return f"scheduler on {host}:{cfg.scheduler.port} does not answer: {exc}"
        finally:
            conn.close()
    return None


def check(role: str, cfg: Config, timeout: float, deep: bool = False) -> str | None:
    """None when ``role`` serves here, else what is wrong."""
    if role not in ROLES:
        return f"unknown role {role!r} (one of {', '.join(ROLES)})"
    for what, port in _ports(role, cfg):
        if not port_open(cfg.ip, port, timeout=timeout):
            return f"{what} does not accept connections on {cfg.ip}:{port}"
    if role == "autoscaler":
        late = _heartbeat(cfg)
        if late:
            return late
    if role == "cache":
        path = _cache_socket(cfg)
        if not _unix_open(path, timeout):
            return f"the cache socket {path} does not accept connections"
    if role == "executor" and cfg.cache.enabled and not cfg.cache.external:
        from cache.protocol import socket_dir

        ipc = socket_dir(cfg.cache.ipc_dir)
        names = os.listdir(ipc) if os.path.isdir(ipc) else []
        if not any(n.startswith("cache-") and n.endswith(".sock") for n in names):
            return f"no node cache socket in {ipc}"
    return _deep(role, cfg, timeout) if deep else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cloudburst.health")
    parser.add_argument("role", choices=ROLES)
    parser.add_argument("--config", help="YAML config (default $CLOUDBURST_CONFIG)")
    parser.add_argument("--deep", action="store_true", help="also a real exchange (readiness)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds per check")
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    problem = check(args.role, cfg, args.timeout, deep=args.deep)
    if problem:
        print(f"{args.role}: not serving: {problem}")
        return 1
    print(f"{args.role}: serving on {cfg.ip}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
