"""An executor node: ``python -m executor.node --config <yaml> [--workers N]``.

Starts ``cfg.executor.workers`` worker processes (``executor.worker``) as children
that die with the node (``PR_SET_PDEATHSIG`` on Linux, and the node stops them on
SIGTERM/SIGINT), and restarts a worker that dies (a user function that crashed the
interpreter, a SIGKILL). A restarted worker binds a new address, so schedulers see the
old one die and the new one appear. All workers share the node id (the node's cache
and locality are per node).

With ``cfg.cache.enabled`` the node also starts (and restarts) its cache,
``python -m cache.server --node-id <node id>``, and tells its workers the cache's ipc
address through ``CB_NODE_CACHE`` (see ``executor.state``).
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from typing import Any

from cloudburst.shared.config import load_config
from cloudburst.shared.processes import SERVER_ENV
from executor.limits import EXIT_MEMORY, EXIT_TIMEOUT

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


class Node:
    """Supervises the worker processes of one executor node."""

    def __init__(self, config_path: str | None, workers: int, node_id: str) -> None:
        self.config_path = config_path
        self.count = workers
        self.node_id = node_id
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.restarts: dict[int, list[float]] = {}
        self.running = True
        self.cache: subprocess.Popen[bytes] | None = None
        self.cache_starts: list[float] = []
        self.env = {**os.environ, **SERVER_ENV}

    def start_cache(self) -> None:
        """Start the node cache (``cache.server``) and wait briefly for its socket."""
        from cache.protocol import ipc_address
        from executor.state import NODE_CACHE_ENV, kvs_routing_address

        cfg = load_config(self.config_path)
        argv = [sys.executable, "-m", "cache.server", "--node-id", self.node_id]
        argv += ["--kvs", kvs_routing_address(cfg), "--ip", cfg.ip]
        if self.config_path:
            argv += ["--config", self.config_path]
        self.cache = subprocess.Popen(
            argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        self.cache_starts.append(time.monotonic())
        address = ipc_address(cfg.cache.ipc_dir, self.node_id)
        self.env[NODE_CACHE_ENV] = address
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and not os.path.exists(address[len("ipc://") :]):
            time.sleep(0.02)

    def check_cache(self) -> None:
        """Restart a dead cache (workers use the KVS directly meanwhile)."""
        if self.cache is None or self.cache.poll() is None or not self.running:
            return
        now = time.monotonic()
        self.cache_starts = [t for t in self.cache_starts if now - t < 30.0]
        if len(self.cache_starts) >= 5:
            log.error("the node cache keeps dying; workers stay on the KVS")
            self.cache = None
            return
        log.warning("node cache exited with %s; restarting it", self.cache.returncode)
        self.start_cache()

    def spawn(self, index: int) -> None:
        argv = [
            sys.executable,
            "-m",
            "executor.worker",
            "--index",
            str(index),
            "--node-id",
            self.node_id,
        ]
        if self.config_path:
            argv += ["--config", self.config_path]
        self.procs[index] = subprocess.Popen(
            argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )

    def serve(self) -> None:
        if load_config(self.config_path).cache.enabled:
            self.start_cache()
        for i in range(self.count):
            self.spawn(i)
        log.info("executor node %s: %d workers started", self.node_id, self.count)
        while self.running:
            time.sleep(0.1)
            self.check_cache()
            for index, proc in list(self.procs.items()):
                code = proc.poll()
                if code is None or not self.running:
                    continue
                if code in (EXIT_TIMEOUT, EXIT_MEMORY):
                    # The worker replaced itself after a runaway call (executor.limits):
                    # not a crash, so not counted against the crash-loop limit.
                    log.warning(
                        "worker %d exited with %s (a runaway call); restarting it", index, code
                    )
                    self.spawn(index)
                    continue
                now = time.monotonic()
                recent = [t for t in self.restarts.get(index, []) if now - t < 30.0]
                if len(recent) >= 5:
                    log.error("worker %d keeps dying (exit %s); not restarting it", index, code)
                    del self.procs[index]
                    continue
                log.warning("worker %d exited with %s; restarting it", index, code)
                self.restarts[index] = [*recent, now]
                self.spawn(index)
            if not self.procs:
                log.error("no worker left; the node stops")
                return

    def stop(self, *_: Any) -> None:
        self.running = False

    def shutdown(self, grace: float = 3.0) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self.cache is not None and self.cache.poll() is None:
            self.cache.send_signal(signal.SIGTERM)
            try:
                self.cache.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.cache.kill()
                self.cache.wait(timeout=5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m executor.node")
    parser.add_argument("--config", help="YAML config file (defaults + env overrides apply)")
    parser.add_argument(
        "--workers", type=int, help="worker processes (default cfg.executor.workers)"
    )
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    logging.basicConfig(
        level=cfg.log_level, format="%(asctime)s executor-node %(levelname)s: %(message)s"
    )
    node = Node(args.config, args.workers or cfg.executor.workers, f"{cfg.ip}/{os.getpid()}")
    signal.signal(signal.SIGTERM, node.stop)
    signal.signal(signal.SIGINT, node.stop)
    try:
        node.serve()
    finally:
        node.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
