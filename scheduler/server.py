"""The scheduler process: ``python -m scheduler.server --config <yaml> [--port P]``.

Listens (PULL) on ``tcp://cfg.ip:cfg.scheduler.port`` (default 5000) for
``SchedulerRequest`` envelopes from clients (registrations, calls, status queries)
and heartbeats from executor workers, and answers each request with a
``ClientMessage`` pushed to the request's ``response_address``. Functions and DAGs
live in the KVS (``scheduler/registry.py``), so several schedulers can run side by
side; each announces itself under ``cloudburst/schedulers`` and executors heartbeat
to every scheduler they find there.
"""

from __future__ import annotations

import argparse
import logging
import queue
import signal
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from cloudburst.shared import logs, metrics, security, version, wire
from cloudburst.shared.config import Config, kvs_host, load_config, replace
from cloudburst.shared.errors import WireError
from cloudburst.shared.kvs import make_kvs_client
from cloudburst.shared.logs import setup_logging
from cloudburst.shared.proto import cloudburst_pb2 as pb
from scheduler.logic import (
    PlanError,
    SchedulerState,
    check_limits,
    check_name,
    continued_arguments,
    same_dag,
    validate_dag,
)
from scheduler.placement import PlacementPolicy
from scheduler.registry import Registry, Snapshot, StoreError, read_snapshot

log = logging.getLogger(__name__)

#: exec_func stores a call's result under ``results/<id>`` (the client picks the id):
#: such keys expire (``executor.result_ttl_s``); other output keys are the user's.
RESULTS_PREFIX = "results/"
#: placements remembered for cancels (see ``SchedulerServer.placed``)
PLACED_KEPT = 10_000


class _Deferred(Exception):
    """The request waits (see ``SchedulerServer.waiting``): no answer yet."""


@dataclass
class _Waiting:
    deadline: float
    req: pb.SchedulerRequest
    start: Callable[[pb.ClientMessage], None]


class _LazyKvs:
    """Creates the KVS client on first use (the KVS may start after us)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.client: Any = None

    def _get_client(self) -> Any:
        if self.client is None:
            self.client = make_kvs_client(
                kvs_host(self.cfg),
                self.cfg.kvs.routing_port,
                ip=self.cfg.ip,
                timeout=min(self.cfg.kvs.request_timeout_s, 2.0),
            )
        return self.client

    def get(self, keys: list[str]) -> Any:
        return self._get_client().get(keys)

    def put(self, key: str, lattice: Any) -> Any:
        return self._get_client().put(key, lattice)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


class SchedulerServer:
    """The shell: one PULL socket, a poll loop, PUSH sockets to clients/executors."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.sec = security.server_security(cfg)
        self.pull = security.server_socket(self.ctx, zmq.PULL, self.sec)
        self.pull.setsockopt(zmq.LINGER, 0)
        self.pull.bind(f"tcp://{cfg.ip}:{cfg.scheduler.port}")
        self.address = f"tcp://{cfg.ip}:{cfg.scheduler.port}"
        self.kvs = _LazyKvs(cfg)
        self.registry = Registry(self.kvs)
        self.state = SchedulerState(
            PlacementPolicy(heartbeat_timeout=cfg.scheduler.heartbeat_timeout_s)
        )
        self.push: dict[str, zmq.Socket[Any]] = {}
        # A monitor on the socket to each executor: the kernel closes a dead process's
        # connections, so a killed worker is known dead at once, not after its
        # heartbeats time out (which stays the rule for hosts that go silent).
        self.monitors: dict[str, zmq.Socket[Any]] = {}
        self.monitored: dict[zmq.Socket[Any], str] = {}
        self.poller = zmq.Poller()
        self.poller.register(self.pull, zmq.POLLIN)
        #: calls waiting for a live executor (oldest first)
        self.waiting: list[_Waiting] = []
        #: where the last calls were placed (call id -> executor addresses), so a
        #: cancel reaches them even if the client has not seen the acknowledgement
        self.placed: OrderedDict[str, list[str]] = OrderedDict()
        self.running = True
        # KVS housekeeping (DAG/function refresh, announcing this scheduler) runs in a
        # thread with its own KVS client, so the request loop never waits on it.
        self.updates: queue.SimpleQueue[Snapshot] = queue.SimpleQueue()
        self._refresher = threading.Thread(target=self._refresh_loop, name="refresh", daemon=True)

    def send(self, address: str, data: bytes, answer: bool = False) -> None:
        """``answer``: to a client's reply address (CURVE server toward it)."""
        try:
            self._socket(address, answer).send(data, zmq.NOBLOCK)
        except zmq.Again:
            log.warning("dropping a message to %s: its queue is full", address)

    def _socket(self, address: str, answer: bool = False) -> zmq.Socket[Any]:
        key = security.push_key(address, answer, self.sec)
        sock = self.push.get(key)
        if sock is None:
            if len(self.push) > 4096:  # many short-lived clients: forget the oldest
                self._close(next(iter(self.push)))
            sock = security.push_socket(self.ctx, self.sec, answer)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 10000)
            sock.connect(address)
            self.push[key] = sock
        return sock

    def _watch(self, address: str) -> None:
        """Connect to an executor now and watch the connection (see ``monitors``)."""
        sock = self._socket(address)
        if address in self.monitors:
            return
        mon = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self.monitors[address] = mon
        self.monitored[mon] = address
        self.poller.register(mon, zmq.POLLIN)

    def _close(self, address: str) -> None:
        sock = self.push.pop(address, None)
        mon = self.monitors.pop(address, None)
        if mon is not None:
            self.poller.unregister(mon)
            del self.monitored[mon]
            if sock is not None:
                sock.disable_monitor()
            mon.close(linger=0)
        if sock is not None:
            sock.close(linger=0)

    def _on_monitor(self, mon: zmq.Socket[Any]) -> None:
        while True:
            try:
                event = recv_monitor_message(mon, zmq.NOBLOCK)
            except zmq.Again:
                return
            if event["event"] == zmq.EVENT_DISCONNECTED:
                address = self.monitored.get(mon, "")
                self.state.disconnected(address)

    def serve(self) -> None:
        log.info(
            "scheduler listening on %s (KVS routing at %s:%d)",
            self.address,
            kvs_host(self.cfg),
            self.cfg.kvs.routing_port,
        )
        self._refresher.start()
        next_expire = 0.0
        while self.running:
            for sock, _ in self.poller.poll(100):
                if sock is not self.pull:
                    self._on_monitor(sock)
                    continue
                while True:
                    try:
                        data = self.pull.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self.handle(data)
            now = time.monotonic()
            if self.waiting:
                self._retry_waiting(now)
            if now >= next_expire:
                for address in self.state.expire(now):
                    if address not in self.state.executors:  # not back meanwhile
                        self._close(address)
                next_expire = now + 0.2
            while not self.updates.empty():
                self.registry.apply(self.updates.get_nowait())

    def _refresh_loop(self) -> None:
        kvs = _LazyKvs(self.cfg)
        announcer = Registry(kvs)
        announced_at = float("-inf")
        try:
            while self.running:
                now = time.monotonic()
                try:
                    if now - announced_at > 10.0:
                        announcer.announce_scheduler(self.address)
                        announced_at = now
                    # list() of a dict is atomic under the GIL: a consistent copy.
                    dags, fns = list(self.registry.dags), list(self.registry.versions)
                    self.updates.put(read_snapshot(kvs, dags, fns))
                except StoreError as exc:
                    log.debug("KVS not reachable yet: %s", exc)
                time.sleep(1.0)
        finally:
            kvs.close()

    # --- requests ----------------------------------------------------------

    def handle(self, data: bytes) -> None:
        """Handle one request; never raises (malformed input is logged and dropped)."""
        try:
            req = wire.parse_scheduler_request(data)
        except WireError as exc:
            log.warning("dropping a malformed request: %s", exc)
            return
        kind = req.WhichOneof("kind")
        if kind == "heartbeat":
            try:
                new = self.state.on_heartbeat(req.heartbeat, time.monotonic())
            except PlanError as exc:
                log.warning("bad heartbeat: %s", exc)
                return
            if new and not req.heartbeat.leaving:
                # Connect now, not at the first trigger: a trigger then leaves at once
                # on an established connection, ahead of the call's acknowledgement,
                # so a scheduler killed right after acknowledging has sent it.
                self._watch(req.heartbeat.address)
            return
        reply = pb.ClientMessage(response_id=req.request_id)
        t0 = time.perf_counter()
        try:
            handler = getattr(self, f"_on_{kind}")
            handler(req, reply)
        except _Deferred:
            return
        except PlanError as exc:
            self._error(reply, exc.code, exc.message)
        except StoreError as exc:
            self._error(reply, pb.INTERNAL_ERROR, f"the KVS is not available: {exc}")
        except Exception as exc:
            log.exception("internal error handling %s", kind)
            self._error(reply, pb.INTERNAL_ERROR, f"scheduler internal error: {exc!r}")
        if kind in ("call", "dag_call"):
            ok = reply.WhichOneof("kind") != "response" or reply.response.success
            name = req.call.name if kind == "call" else req.dag_call.name
            metrics.scheduled(
                "function" if kind == "call" else "dag", name, ok, time.perf_counter() - t0
            )
            log.log(
                logs.CALL_LEVEL if ok else logging.INFO,
                "[%s] %s %s: %s",
                req.request_id,
                kind,
                name,
                "placed" if ok else "refused: " + reply.response.message,
            )
        if req.response_address:
            self.send(req.response_address, reply.SerializeToString(), answer=True)

    @staticmethod
    def _error(reply: pb.ClientMessage, code: int, message: str) -> None:
        reply.ClearField("kind")
        reply.response.success = False
        reply.response.error = code  # type: ignore[assignment]
        reply.response.message = message
        reply.response.response_id = reply.response_id

    @staticmethod
    def _ok(reply: pb.ClientMessage) -> pb.GenericResponse:
        reply.response.success = True
        reply.response.response_id = reply.response_id
        return reply.response

    def _on_register_function(self, req: pb.SchedulerRequest, reply: pb.ClientMessage) -> None:
        fn = req.register_function
        check_name("function", fn.name)
        if not fn.body:
            raise PlanError(pb.INVALID_ARGUMENT, f"function {fn.name!r} has an empty body")
        check_limits(fn.name, fn.timeout_s, fn.memory_bytes)
        self.registry.register_function(fn.name, fn.body, fn.timeout_s, fn.memory_bytes)
        log.info("registered function %r", fn.name)
        self._ok(reply)

    def _on_delete_function(self, req: pb.SchedulerRequest, reply: pb.ClientMessage) -> None:
        name = req.delete_function
        check_name("function", name)
        # Ask the KVS, not the cache: it may have been deleted through another scheduler.
        self.registry.versions.pop(name, None)
        if name not in self.registry.has_functions([name]):
            raise PlanError(pb.FUNC_NOT_FOUND, f"function {name!r} is not registered")
        users = self.registry.dags_using(name)
        if users:
            raise PlanError(
                pb.INVALID_ARGUMENT,
                f"function {name!r} is used by DAG(s) {users}: delete them first",
            )
        self.registry.delete_function(name)
        log.info("deleted function %r", name)
        self._ok(reply)

    def _on_get_function(self, req: pb.SchedulerRequest, reply: pb.ClientMessage) -> None:
        name = req.get_function
        if name not in self.registry.has_functions([name]):
            raise PlanError(pb.FUNC_NOT_FOUND, f"function {name!r} is not registered")
        self._ok(reply)

    def _on_list_functions(self, req: pb.SchedulerRequest, reply: pb.ClientMessage) -> None:
        prefix = req.list_functions
        names = sorted(n for n in self.registry.function_names() if n.startswith(prefix))
        self._ok(reply).names.extend(names)

    def _on_register_dag(self, req: pb.SchedulerRequest, reply: pb.ClientMessage) -> None:
        dag = req.register_dag
        check_name("DAG", dag.name)
        if self.registry.dag_exists(dag.name):
            old = self.registry.dags[dag.name]
            if same_dag(old, dag):  # the same registration again: nothing to do
                log.info("DAG %r is already registered as given", dag.name)
                self._ok(reply)
                return
            links = [(c.source, c.sink) for c in old.connections]
            raise PlanError(
                pb.DAG_ALREADY_EXISTS,
                f"a different DAG named {dag.name!r} already exists (functions "
                f"{list(old.functions)}, connections {links}); delete it first",
            )
        registered = self.registry.has_functions(list(dag.functions))
        validate_dag(dag, registered)
        self.registry.register_dag(dag)
        log.info("registered DAG %r: %s", dag.name, list(dag.functions))
        self._ok(reply)

    def _on_delete_dag(self, req: pb.SchedulerRequest, reply: pb.ClientMessage) -> None:
        name = req.delete_dag
        if not self.registry.dag_exists(name):
            raise PlanError(pb.NO_SUCH_DAG, f"no DAG named {name!r}")
        self.registry.delete_dag(name)
        log.info("deleted DAG %r", name)
        self._ok(reply)

    def _start(
        self,
        req: pb.SchedulerRequest,
        reply: pb.ClientMessage,
        dag: pb.Dag,
        arguments: Any,
        output_key: str,
        consistency: int,
        client_id: str,
        exclude: Any,
        expiring_output: bool = False,
        may_wait: bool = True,
        continuation: pb.DagCall | None = None,
        client_clock: pb.Clock | None = None,
    ) -> None:
        try:
            schedule, sends = self.state.plan(
                dag,
                arguments,
                time.monotonic(),
                request_id=req.request_id,
                response_address=req.response_address,
                output_key=output_key,
                consistency=consistency,
                client_id=client_id,
                client_clock=client_clock,
                exclude=set(exclude),
                versions=self.registry.versions,
                expiring_output=expiring_output,
                sent_at=time.time(),
                continuation=continuation,
            )
        except PlanError as exc:
            if (
                exc.code != pb.NO_RESOURCES
                or not may_wait
                or not self.cfg.scheduler.no_executor_wait_s
            ):
                raise

            def start(reply: pb.ClientMessage) -> None:
                self._start(
                    req,
                    reply,
                    dag,
                    arguments,
                    output_key,
                    consistency,
                    client_id,
                    exclude,
                    expiring_output,
                    may_wait=False,
                    continuation=continuation,
                    client_clock=client_clock,
                )

            # No live executor: wait for one (``scheduler.no_executor_wait_s``), as a
            # node or worker being restarted is back within seconds.
            deadline = time.monotonic() + self.cfg.scheduler.no_executor_wait_s
            self.waiting.append(_Waiting(deadline, req, start))
            raise _Deferred from None
        for send in sends:
            self.send(send.address, send.data)
        self.placed[schedule.id] = sorted(set(schedule.locations.values()))
        if len(self.placed) > PLACED_KEPT:
            self.placed.popitem(last=False)
        ack = self._ok(reply).schedule  # the placement, for the client's cache
        ack.id = schedule.id
        ack.dag.CopyFrom(schedule.dag)
        ack.locations.update(schedule.locations)
        ack.versions.update(schedule.versions)
        if schedule.expiring_output:  # direct calls reuse the ack as their template
            ack.expiring_output = True

    def _retry_waiting(self, now: float) -> None:
        """Place the calls waiting for a live executor, or refuse those out of time."""
        waiting, self.waiting = self.waiting, []
        for w in waiting:
            reply = pb.ClientMessage(response_id=w.req.request_id)
            try:
                w.start(reply)
                if reply.response.success:
                    waited = now - (w.deadline - self.cfg.scheduler.no_executor_wait_s)
                    metrics.QUEUE_WAIT.labels("scheduler").observe(max(0.0, waited))
            except PlanError as exc:
                if exc.code == pb.NO_RESOURCES and now < w.deadline:
                    self.waiting.append(w)
                    continue
                message = exc.message
                if exc.code == pb.NO_RESOURCES:
                    message += f" (waited {self.cfg.scheduler.no_executor_wait_s:g}s for one)"
                self._error(reply, exc.code, message)
            except Exception as exc:
                log.exception("internal error placing a waiting call")
                self._error(reply, pb.INTERNAL_ERROR, f"scheduler internal error: {exc!r}")
            if w.req.response_address:
                self.send(w.req.response_address, reply.SerializeToString(), answer=True)

    def _on_call(self, req: pb.SchedulerRequest, reply: pb.ClientMessage) -> None:
        call = req.call
        check_name("function", call.name)
        if call.name not in self.registry.has_functions([call.name]):
            raise PlanError(pb.FUNC_NOT_FOUND, f"function {call.name!r} is not registered")
        dag = pb.Dag(name=call.name, functions=[call.name])
        self._start(
            req,
            reply,
            dag,
            {call.name: call.arguments},
            call.response_key,
            call.consistency,
            "",
            call.exclude,
            expiring_output=call.response_key.startswith(RESULTS_PREFIX),
        )

    def _on_dag_call(self, req: pb.SchedulerRequest, reply: pb.ClientMessage) -> None:
        call = req.dag_call
        dag = self.registry.get_dag(call.name)
        if dag is None:
            raise PlanError(pb.NO_SUCH_DAG, f"no DAG named {call.name!r}")
        self._start(
            req,
            reply,
            dag,
            continued_arguments(dag, call),
            call.output_key,
            call.consistency,
            call.client_id,
            call.exclude,
            continuation=call.continuation if call.HasField("continuation") else None,
            client_clock=call.client_clock if call.HasField("client_clock") else None,
        )

    def _on_cancel(self, req: pb.SchedulerRequest, reply: pb.ClientMessage) -> None:
        """A caller cancelled a call: drop it if it waits for an executor here, and
        pass the cancel on to the control socket of every executor it was placed on
        (they drop it if queued, stop it if running). No answer."""
        cancel = req.cancel
        call_id = cancel.call_id
        before = len(self.waiting)
        self.waiting = [w for w in self.waiting if w.req.request_id != call_id]
        if len(self.waiting) < before:
            log.info("[%s] cancelled while waiting for an executor; dropped", call_id)
        addresses = set(cancel.addresses) | set(self.placed.get(call_id, ()))
        # A call waiting behind a busy worker may have moved to another worker of the
        # same node (pool elasticity, executor/spill.py): tell every worker there.
        nodes = {v.node_id for a in addresses if (v := self.state.executors.get(a)) is not None}
        addresses |= {a for a, v in self.state.executors.items() if v.node_id in nodes}
        msg = pb.ExecutorMessage()
        msg.cancel.call_id = call_id
        data = msg.SerializeToString()
        sent = []
        for address in sorted(addresses):
            view = self.state.executors.get(address)
            if view is not None and view.control_address:
                self.send(view.control_address, data)
                sent.append(address)
        log.info("[%s] cancelled by its caller; told executor(s) %s", call_id, sent)
        req.ClearField("response_address")  # fire and forget

    def _on_replicate(self, req: pb.SchedulerRequest, reply: pb.ClientMessage) -> None:
        """The autoscaler found a function hot (or cool again): spread its calls over
        that many nodes (scheduler.placement)."""
        rep = req.replicate
        self.state.set_replicas(rep.function, rep.replicas)
        log.info("function %s: placement spread over %d node(s)", rep.function, rep.replicas)
        self._ok(reply)

    def _on_status(self, req: pb.SchedulerRequest, reply: pb.ClientMessage) -> None:
        now = time.monotonic()
        st = reply.status
        for view in self.state.alive(now):
            st.executors.add(
                address=view.address,
                node_id=view.node_id,
                alive=True,
                functions=sorted(view.functions),
                pid=view.pid,
                load=view.load(now, self.state.policy),
                busy=view.busy,
                queue_length=view.queue_length,
                gpu=view.gpu,
                current_call=view.current_call,
                current_call_s=view.current_call_s + max(0.0, now - view.last_seen)
                if view.current_call
                else 0.0,
                busy_s=view.busy_s,
                uptime_s=view.uptime_s,
            )
        st.kvs_address = f"{kvs_host(self.cfg)}:{self.cfg.kvs.routing_port}"
        st.scheduler_address = self.address
        st.server_version = version.__version__
        version.check(log, req.status.client_version, "scheduler", "client")
        st.dead.extend(a for a in req.status.addresses if not self.state.is_alive(a, now))
        st.function_replicas.update(self.state.replicas)
        st.functions = len(self.registry.functions)
        st.dags = len(self.registry.dags)

    def stop(self, *_: Any) -> None:
        self.running = False

    def close(self) -> None:
        for address in list(self.push):
            self._close(address)
        self.pull.close(linger=0)
        self.kvs.close()
        security.term(self.ctx)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scheduler.server")
    parser.add_argument("--config", help="YAML config file (defaults + env overrides apply)")
    parser.add_argument("--port", type=int, help="listen port (default cfg.scheduler.port)")
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    if args.port:
        cfg = replace(cfg, scheduler={"port": args.port})
    setup_logging(
        cfg, "scheduler", "scheduler", "%(asctime)s scheduler %(levelname)s %(name)s: %(message)s"
    )
    server = SchedulerServer(cfg)
    metrics.QUEUE_LENGTH.labels("scheduler", "registry_updates").set_function(server.updates.qsize)
    metrics.serve(cfg, "scheduler", "scheduler")
    signal.signal(signal.SIGTERM, server.stop)
    signal.signal(signal.SIGINT, server.stop)
    try:
        server.serve()
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
