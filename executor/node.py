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
address through ``CB_NODE_CACHE`` (see ``executor.state``). With ``cfg.cache.external``
(``--external-cache``; Kubernetes runs the cache as a second container of the pod) the
node does not start the cache: its id is ``cache.protocol.external_node_id`` (from the
config, so ``cache.server --node-id auto`` names the same socket) and its workers get
the cache's address all the same; a worker uses the KVS directly while the socket is
missing or the cache is down (``cache.client``), and the cache again once it is back.

Elasticity (``cfg.executor.elastic``, docs/elasticity.md): the node binds an ``ipc://``
pool socket (``CB_NODE_POOL``) where its workers heartbeat and hand back calls that
waited behind a busy worker (``executor.spill``); :class:`executor.pool.Pool` decides
which idle worker gets such a call, when to start workers (up to
``executor.max_workers``), when to retire an idle one (down to ``--workers``) and when
a call that found no worker fails ("the cluster is at its maximum").
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

import zmq

from cloudburst.shared import metrics, wire
from cloudburst.shared.config import Config, load_config
from cloudburst.shared.logs import setup_logging
from cloudburst.shared.processes import SERVER_ENV
from cloudburst.shared.proto import cloudburst_pb2 as pb
from cloudburst.supervisor import POLL_S, Spec, Supervised
from executor.forkstart import ForkStarter
from executor.limits import EXIT_CANCELLED, EXIT_MEMORY, EXIT_TIMEOUT
from executor.pool import Dispatch, Fail, Pool, PoolPolicy, Retire, Start, default_max_workers
from executor.spill import NODE_POOL_ENV, SPILL
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
        self.draining = False  # SIGUSR1: the node is being removed (cloudburst.autoscale)
        self.env = {**os.environ, **SERVER_ENV}
        self.sup = Supervised(
            "executor",
            Path(state_path) if state_path else None,
            extra={"role": "executor.node", "node_id": node_id},
        )
        self.cfg = load_config(config_path)
        ecfg = self.cfg.executor
        self.elastic = ecfg.elastic
        maximum = max(workers, ecfg.max_workers or default_max_workers(workers))
        self.pool = Pool(
            PoolPolicy(
                min_workers=max(1, workers),
                max_workers=maximum if self.elastic else max(1, workers),
                idle_retire_s=ecfg.idle_retire_s,
            )
        )
        self.pids: dict[str, int] = {}  # worker -> pid the pool knows
        self.retiring: dict[str, float] = {}  # worker -> when it was asked to leave
        self.ctx: zmq.Context[Any] | None = None
        self.pool_sock: zmq.Socket[Any] | None = None
        self.push: dict[str, zmq.Socket[Any]] = {}
        self.forker: ForkStarter | None = None  # workers the pool adds start as forks

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
        if cfg.cache.enabled and not cfg.cache.external:
            argv = [sys.executable, "-m", "cache.server", "--node-id", self.node_id]
            argv += ["--kvs", kvs_routing_address(cfg), "--ip", cfg.ip, *common]
            self.sup.add("cache", Spec(argv, env=self.env, after_start=self._cache_ready))
        if self.elastic:
            from cache.protocol import ipc_address, make_socket_dir

            self.ctx = zmq.Context()
            self.pool_sock = self.ctx.socket(zmq.PULL)
            self.pool_sock.setsockopt(zmq.LINGER, 0)
            address = ipc_address(cfg.cache.ipc_dir, self.node_id).replace("/cache-", "/pool-")
            make_socket_dir(cfg.cache.ipc_dir)
            self.pool_sock.bind(address)
            self.env[NODE_POOL_ENV] = address
            self.forker = ForkStarter()
            self.forker.warm_up()
        for index in range(self.count):
            self._add_worker(index)

    def _add_worker(self, index: int) -> str:
        common = ["--config", self.config_path] if self.config_path else []
        argv = [sys.executable, "-m", "executor.worker", "--index", str(index)]
        argv += ["--node-id", self.node_id, *common]
        name = f"worker{index}"
        self.sup.add(name, Spec(argv, env=self.env))
        self.pool.started(name, time.monotonic())
        return name

    def workers(self) -> list[str]:
        return [n for n in self.sup.specs if n.startswith("worker")]

    def serve(self) -> int:
        self._add_children()
        self.sup.start_all()
        log.info(
            "executor node %s: %d workers started (elastic: %s, maximum %d)",
            self.node_id,
            self.count,
            self.elastic,
            self.pool.policy.max_workers,
        )
        while self.running:
            self._replace_runaways()
            self._reap_retired()
            self.sup.poll()
            self._lost_moved()
            self._track_restarts()
            if "cache" in self.sup.failed() and self.env.pop(NODE_CACHE_ENV, None):
                log.error("the node cache keeps dying; workers started from now use the KVS")
            workers = self.workers()
            if workers and all(n in self.sup.failed() for n in workers):
                log.error("every worker keeps dying; the node stops")
                return 1
            if self.pool_sock is None:
                time.sleep(POLL_S)
                continue
            self._pool_messages(POLL_S)
            for action in self.pool.decide(time.monotonic()):
                self._act(action)
            metrics.POOL_WORKERS.labels("running").set(self.pool.size())
            metrics.POOL_WORKERS.labels("retiring").set(len(self.retiring))
        return 0

    # --- elasticity (executor.pool decides, this carries it out) -------------

    def _pool_messages(self, timeout_s: float) -> None:
        assert self.pool_sock is not None
        if not self.pool_sock.poll(int(timeout_s * 1000)):
            return
        now = time.monotonic()
        while True:
            try:
                frames = self.pool_sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                if len(frames) == 4 and frames[0] == SPILL:
                    call_id = frames[1].decode()
                    deadline = now + self.cfg.scheduler.call_timeout_s
                    self.pool.spilled(call_id, frames[2], now, deadline, frames[3].decode())
                    metrics.POOL_EVENTS.labels("handed_back").inc()
                elif len(frames) == 1:
                    st = wire.parse_scheduler_request(frames[0]).heartbeat
                    self.pool.status(
                        f"worker{st.index}",
                        st.address,
                        busy=st.busy > 0,
                        queue=st.queue_length,
                        now=now,
                        leaving=st.leaving,
                        completed=st.completed,
                    )
            except Exception:
                log.exception("dropping a malformed pool message")

    def _send(self, address: str, data: bytes) -> None:
        assert self.ctx is not None
        sock = self.push.get(address)
        if sock is None:
            if len(self.push) >= 256:
                self.push.pop(next(iter(self.push))).close(linger=0)
            sock = self.push[address] = self.ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.LINGER, 1000)
            sock.connect(address)
        try:
            sock.send(data, zmq.NOBLOCK)
        except zmq.Again:
            log.warning("dropping a message to %s: its queue is full", address)

    def _act(self, action: Dispatch | Start | Fail | Retire) -> None:
        if isinstance(action, Dispatch):
            log.info("[%s] handed to idle %s", action.call_id, action.worker)
            metrics.POOL_EVENTS.labels("dispatched").inc()
            self._send(action.address, action.data)
        elif isinstance(action, Start):
            used = {int(n[len("worker") :]) for n in self.workers()}
            for _ in range(action.count):
                index = min(set(range(len(used) + 1)) - used)
                used.add(index)
                name = self._add_worker(index)
                self._start_worker(name)
                self.pids[name] = self.sup.procs[name].pid
                metrics.POOL_EVENTS.labels("started").inc()
            log.info(
                "pool grows by %d to %d workers: %s", action.count, self.pool.size(), action.reason
            )
        elif isinstance(action, Fail):
            log.warning("[%s] refused: %s", action.call_id, action.message)
            metrics.POOL_EVENTS.labels("refused").inc()
            self._refuse(action)
        elif isinstance(action, Retire):
            proc = self.sup.procs.get(action.worker)
            log.info("retiring %s: %s", action.worker, action.reason)
            metrics.POOL_EVENTS.labels("retired").inc()
            self.retiring[action.worker] = time.monotonic()
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGUSR1)

    def _start_worker(self, name: str) -> None:
        """Fork it from the preloaded server (``executor.forkstart``) when it is up,
        else start it the ordinary way; the supervisor restarts it either way."""
        spec = self.sup.specs[name]
        proc = None
        if self.forker is not None:
            proc = self.forker.start(list(spec.argv)[3:], dict(spec.env or self.env))
        if proc is None:
            self.sup.start(name)
            return
        self.sup.procs[name] = proc  # type: ignore[assignment]
        self.sup.children[name].started(proc.pid, self.sup.clock())
        self.sup.write_state()

    def _refuse(self, action: Fail) -> None:
        self._answer_error(action.data, pb.NO_RESOURCES, action.message)

    def _answer_error(self, data: bytes, code: int, message: str) -> None:
        """Answer the caller of the call in trigger ``data`` with an error."""
        try:
            sched = wire.parse_executor_message(data).trigger.schedule
        except Exception:
            return
        if not sched.response_address:
            return
        fn = sched.dag.functions[0] if sched.dag.functions else ""
        reply = pb.ClientMessage(response_id=sched.id)
        reply.result.response_id = sched.id
        reply.result.success = False
        reply.result.error.CopyFrom(wire.error_message(code, message, fn))
        self._send(sched.response_address, reply.SerializeToString())

    def _reap_retired(self) -> None:
        """Forget retired workers that exited (before the supervisor would restart them)."""
        now = time.monotonic()
        for name, since in list(self.retiring.items()):
            proc = self.sup.procs.get(name)
            if proc is not None and proc.poll() is None:
                if now - since > self.cfg.executor.retire_drain_s + 10.0:
                    proc.kill()  # reaped on the next round
                continue
            del self.retiring[name]
            self.sup.procs.pop(name, None)
            self.sup.specs.pop(name, None)
            self.sup.children.pop(name, None)
            self.pids.pop(name, None)
            self.pool.exited(name)
            self.sup.write_state()
            log.info("%s retired; %d workers", name, self.pool.size())

    def _lost_moved(self) -> None:
        """A worker that was handed a waiting call died (it exited, or the supervisor
        restarted it already): tell the callers of the calls it had not finished now,
        not at their timeout (they watch the worker the scheduler named)."""
        if not self.pool.moved:
            return
        for name in {m.worker for m in self.pool.moved.values()}:
            proc = self.sup.procs.get(name)
            if proc is not None and proc.pid == self.pids.get(name) and proc.poll() is None:
                continue
            child = self.sup.children.get(name)
            reason = child.last_exit if child is not None and child.last_exit else "exited"
            for lost in self.pool.died(name, reason, time.monotonic()):
                log.warning("[%s] lost: %s", lost.call_id, lost.message)
                metrics.POOL_EVENTS.labels("lost").inc()
                self._answer_error(lost.data, pb.EXECUTOR_FAILED, lost.message)

    def _track_restarts(self) -> None:
        """A worker restarted by the supervisor binds a new address: the pool waits for
        its first heartbeat before offering it calls."""
        for name in self.workers():
            proc = self.sup.procs.get(name)
            if proc is None:
                continue
            if self.pids.get(name) != proc.pid:
                if name in self.pids:
                    self.pool.restarted(name, time.monotonic())
                self.pids[name] = proc.pid

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
                self.pool.died(name, f"exit {code}", time.monotonic())  # it told its callers
                self.sup.start(name)

    def stop(self, *_: Any) -> None:
        self.running = False

    def drain(self, *_: Any) -> None:
        """SIGUSR1: every worker leaves and runs what was already placed on it, then
        the node stops (no call lost when the autoscaler removes a node)."""
        self.draining = True
        self.running = False

    def _drain_workers(self) -> None:
        workers = [n for n in self.workers() if n in self.sup.procs]
        log.info("draining %d workers before stopping", len(workers))
        for name in workers:
            proc = self.sup.procs[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + self.cfg.executor.retire_drain_s + 30.0
        for name in workers:
            try:
                self.sup.procs[name].wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not finish draining in time", name)

    def shutdown(self, grace: float = 3.0) -> None:
        if self.draining:
            self._drain_workers()
        # Workers first: they may still write through the cache.
        self.sup.stop([n for n in self.sup.specs if n != "cache"], grace=grace)
        for sock in self.push.values():
            sock.close(linger=0)
        if self.pool_sock is not None:
            self.pool_sock.close(linger=0)
        if self.ctx is not None:
            self.ctx.term()


def node_id(cfg: Config) -> str:
    """This node's id: ip/pid, or with ``cache.external`` the id its cache derives too."""
    if cfg.cache.external:
        from cache.protocol import external_node_id

        return external_node_id(cfg.ip, cfg.executor.base_port)
    return f"{cfg.ip}/{os.getpid()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m executor.node")
    parser.add_argument("--config", help="YAML config file (defaults + env overrides apply)")
    parser.add_argument(
        "--workers", type=int, help="worker processes (default cfg.executor.workers)"
    )
    parser.add_argument(
        "--state-file", help="keep this JSON file current with the children's pids and restarts"
    )
    parser.add_argument(
        "--external-cache",
        action="store_true",
        help="do not start the node cache: it runs apart (cache.external; "
        "python -m cache.server --node-id auto)",
    )
    args = parser.parse_args(argv)
    if args.external_cache:
        os.environ["CLOUDBURST_CACHE__EXTERNAL"] = "true"  # the workers read it too
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
        node_id(cfg),
        args.state_file,
    )
    metrics.export_restarts(node.sup)
    metrics.serve(cfg, "executor-node", "executor-node")
    signal.signal(signal.SIGTERM, node.stop)
    signal.signal(signal.SIGINT, node.stop)
    signal.signal(signal.SIGUSR1, node.drain)
    try:
        return node.serve()
    finally:
        node.shutdown()


if __name__ == "__main__":
    sys.exit(main())
