"""An executor node: ``python -m executor.node --config <yaml> [--workers N]``.

Starts ``cfg.executor.workers`` worker processes (``executor.worker``) as children
that die with the node (``PR_SET_PDEATHSIG`` on Linux, and the node stops them on
SIGTERM/SIGINT), and restarts a worker that dies (a user function that crashed the
interpreter, a SIGKILL) with the back-off and crash-loop policy of
:mod:`cloudburst.supervision` (``--state-file`` keeps the children's pids and restarts
in a JSON file for ``cloudburst local status``). A restarted worker binds a new address, so schedulers see the
old one die and the new one appear. All workers share the node id (the node's cache
and locality are per node).

With ``cfg.cache.enabled`` the node also starts (and restarts) its cache,
``python -m cache.server --node-id <node id>``, and tells its workers the cache's ipc
address through ``CB_NODE_CACHE`` (see ``executor.state``).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cloudburst.shared import metrics
from cloudburst.shared.config import load_config
from cloudburst.shared.logs import setup_logging
from cloudburst.shared.processes import SERVER_ENV
from cloudburst.supervisor import POLL_S, Spec, Supervised
from executor.limits import EXIT_CANCELLED, EXIT_MEMORY, EXIT_TIMEOUT
from executor.state import NODE_CACHE_ENV, kvs_routing_address

log = logging.getLogger(__name__)


class Node:
    """Supervises the cache and the worker processes of one executor node."""

    def __init__(
        self,
        config_path: str | None,
        workers: int,
        node_id: str,
        state_path: str | None = None,
    ) -> None:
        self.config_path = config_path
        self.count = workers
        self.node_id = node_id
        self.running = True
        self.env = {**os.environ, **SERVER_ENV}
        self.sup = Supervised(
            "executor",
            Path(state_path) if state_path else None,
            extra={"role": "executor.node", "node_id": node_id},
        )

    def _cache_ready(self, proc: subprocess.Popen[bytes]) -> None:
        """Wait briefly for the cache's socket (workers use the KVS directly meanwhile)."""
        path = self.env[NODE_CACHE_ENV][len("ipc://") :]
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and proc.poll() is None and not os.path.exists(path):
            time.sleep(0.02)

    def _add_children(self) -> None:
        cfg = load_config(self.config_path)
        common = ["--config", self.config_path] if self.config_path else []
        if cfg.cache.enabled:
            from cache.protocol import ipc_address

            self.env[NODE_CACHE_ENV] = ipc_address(cfg.cache.ipc_dir, self.node_id)
            argv = [sys.executable, "-m", "cache.server", "--node-id", self.node_id]
            argv += ["--kvs", kvs_routing_address(cfg), "--ip", cfg.ip, *common]
            self.sup.add("cache", Spec(argv, env=self.env, after_start=self._cache_ready))
        for index in range(self.count):
            argv = [sys.executable, "-m", "executor.worker", "--index", str(index)]
            argv += ["--node-id", self.node_id, *common]
            self.sup.add(f"worker{index}", Spec(argv, env=self.env))

    def serve(self) -> int:
        self._add_children()
        self.sup.start_all()
        log.info("executor node %s: %d workers started", self.node_id, self.count)
        workers = [n for n in self.sup.specs if n.startswith("worker")]
        while self.running:
            self._replace_runaways()
            self.sup.poll()
            if "cache" in self.sup.failed() and self.env.pop(NODE_CACHE_ENV, None):
                log.error("the node cache keeps dying; workers started from now use the KVS")
            if all(n in self.sup.failed() for n in workers):
                log.error("every worker keeps dying; the node stops")
                return 1
            time.sleep(POLL_S)
        return 0

    def _replace_runaways(self) -> None:
        """A worker that exited after a runaway call (``executor.limits``) asked to be
        replaced: start a new one now, without back-off and without counting the exit
        towards the crash-loop limit (it is not a crash)."""
        for name, proc in list(self.sup.procs.items()):
            code = proc.poll()
            if code in (EXIT_TIMEOUT, EXIT_MEMORY, EXIT_CANCELLED) and not self.sup.stopping:
                log.warning(
                    "%s (pid %d) exited %d after a runaway or cancelled call; replacing it",
                    name,
                    proc.pid,
                    code,
                )
                del self.sup.procs[name]
                self.sup.start(name)

    def stop(self, *_: Any) -> None:
        self.running = False

    def shutdown(self, grace: float = 3.0) -> None:
        # Workers first: they may still write through the cache.
        self.sup.stop([n for n in self.sup.specs if n != "cache"], grace=grace)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m executor.node")
    parser.add_argument("--config", help="YAML config file (defaults + env overrides apply)")
    parser.add_argument(
        "--workers", type=int, help="worker processes (default cfg.executor.workers)"
    )
    parser.add_argument(
        "--state-file", help="keep this JSON file current with the children's pids and restarts"
    )
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    setup_logging(
        cfg,
        "executor-node",
        "executor-node",
        "%(asctime)s executor-node %(levelname)s: %(message)s",
    )
    node = Node(
        args.config,
        args.workers or cfg.executor.workers,
        f"{cfg.ip}/{os.getpid()}",
        args.state_file,
    )
    metrics.export_restarts(node.sup)
    metrics.serve(cfg, "executor-node", "executor-node")
    signal.signal(signal.SIGTERM, node.stop)
    signal.signal(signal.SIGINT, node.stop)
    try:
        return node.serve()
    finally:
        node.shutdown()


if __name__ == "__main__":
    sys.exit(main())
