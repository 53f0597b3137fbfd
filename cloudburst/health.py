"""Probes for containers: ``python -m cloudburst.health ROLE [--timeout S]``.

Exit 0 when ROLE serves on this host (``cfg.ip``, from the config file and the
environment as the role itself reads them), 1 otherwise, with one line saying why.
Each check is a real exchange where the role has one, not just a process check:

- ``routing``: the routing at ``cfg.ip:routing_port`` answers a membership request;
- ``storage``: the same, and the table lists this node live, and every shard's
  request port accepts connections;
- ``scheduler``: the scheduler at ``cfg.ip:scheduler.port`` answers a status query;
- ``executor``: every worker port (``executor.base_port + i``) accepts connections
  and, with the cache on, the node cache's ipc socket exists.

Kubernetes probes and the compose healthchecks call it (timeouts >= 5 s).
"""

from __future__ import annotations

import argparse
import os
import sys

from cloudburst.shared.config import Config, load_config
from cloudburst.shared.processes import port_open

ROLES = ("routing", "storage", "scheduler", "executor")


def check(role: str, cfg: Config, timeout: float) -> str | None:
    """None when ``role`` serves here, else what is wrong."""
    if role in ("routing", "storage"):
        from anna.admin import membership

        table = membership(f"tcp://{cfg.ip}:{cfg.kvs.routing_port}", cfg.ip, timeout=timeout)
        if table is None:
            return f"routing on {cfg.ip}:{cfg.kvs.routing_port} does not answer"
        if role == "routing":
            return None
        node_id = f"{cfg.ip}:{cfg.kvs.shard_base_port}"
        if not any(n.node_id == node_id and not n.departed for n in table.nodes):
            return f"node {node_id} is not a live member"
        for t in range(cfg.kvs.shards):
            if not port_open(cfg.ip, cfg.kvs.shard_base_port + t, timeout=timeout):
                return f"shard {t} does not accept connections on {cfg.kvs.shard_base_port + t}"
        return None
    if role == "scheduler":
        from cloudburst.client.client import CloudburstConnection

        try:
            conn = CloudburstConnection(
                f"{cfg.ip}:{cfg.scheduler.port}", ip=cfg.ip, timeout=timeout
            )
        except Exception as exc:  # noqa: BLE001 - any failure means not serving
            return f"scheduler connection failed: {exc}"
        try:
            conn.status()
        except Exception as exc:  # noqa: BLE001
            return f"scheduler on {cfg.ip}:{cfg.scheduler.port} does not answer: {exc}"
        finally:
            conn.close()
        return None
    if role == "executor":
        base = cfg.executor.base_port
        for i in range(cfg.executor.workers):
            if base and not port_open(cfg.ip, base + i, timeout=timeout):
                return f"worker {i} does not accept connections on {cfg.ip}:{base + i}"
        if cfg.cache.enabled and not any(
            name.startswith("cache-") and name.endswith(".sock")
            for name in (os.listdir(cfg.cache.ipc_dir) if os.path.isdir(cfg.cache.ipc_dir) else [])
        ):
            return f"no node cache socket in {cfg.cache.ipc_dir}"
        return None
    return f"unknown role {role!r} (one of {', '.join(ROLES)})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cloudburst.health")
    parser.add_argument("role", choices=ROLES)
    parser.add_argument("--config", help="YAML config (default $CLOUDBURST_CONFIG)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds per check")
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    problem = check(args.role, cfg, args.timeout)
    if problem:
        print(f"{args.role}: not serving: {problem}")
        return 1
    print(f"{args.role}: serving on {cfg.ip}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
