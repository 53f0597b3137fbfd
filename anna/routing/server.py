"""Routing process (the shell): ``python -m anna.routing --config c.yml [--seed ADDR]``.

Binds one PULL on ``cfg.ip`` at ``routing_port + r`` for each routing thread r. A
one-frame message is an Anna ``KeyAddressRequest``; two frames are internal
(membership from peers, heartbeats from shards, departs). Logic lives in
:mod:`anna.routing.logic`.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import sys
import time
from collections import OrderedDict
from typing import Any

import zmq

from anna import insecure, wire
from anna.membership import make_node
from anna.outbox import Outbox
from anna.routing.logic import RoutingState, Send
from anna.shard.server import die_with_parent
from anna.zmtp import ZmtpServer
from cloudburst.shared import metrics, security
from cloudburst.shared.config import Config, load_config
from cloudburst.shared.errors import WireError
from cloudburst.shared.logs import setup_logging

log = logging.getLogger(__name__)

DRAIN = 512
#: Routing's largest message (a membership table, an address request).
MAX_MESSAGE = 64 * 1024 * 1024


def normalize_address(addr: str, default_port: int = 6450) -> str:
    """'host', 'host:port' or 'tcp://host:port' -> 'tcp://host:port'."""
    if addr.startswith("tcp://"):
        addr = addr[6:]
    host, sep, port = addr.rpartition(":")
    if not sep:
        return f"tcp://{addr}:{default_port}"
    return f"tcp://{host}:{port}"


class RoutingServer:
    def __init__(self, cfg: Config, seeds: list[str], storage: bool = True) -> None:
        self.cfg = cfg
        kvs = cfg.kvs
        self.address = f"tcp://{cfg.ip}:{kvs.routing_port}"
        own = None
        if storage:
            own = make_node(
                cfg.ip,
                kvs.shard_base_port,
                kvs.gossip_base_port,
                kvs.shards,
                time.time_ns(),
                self.address,
            )
        self.state = RoutingState(
            self.address,
            own,
            kvs.failure_timeout_s,
            kvs.virtual_nodes,
            kvs.replication_global,
            kvs.replication_local,
            [normalize_address(s, kvs.routing_port) for s in seeds],
        )
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.sec = security.server_security(cfg)
        self.outbox = Outbox(self.ctx, self.state.stats, self.sec)
        # Answers to a request's response_address: CURVE server toward the asker.
        self.answers: Outbox | _Answers = (
            Outbox(self.ctx, self.state.stats, self.sec, serve=True) if self.sec else self.outbox
        )
        self.running = True
        self.sock: Any = None
        # kvs.allow_insecure_clients: anna.zmtp servers instead of the libzmq socket.
        self.zservers: list[ZmtpServer] = []
        self.zpoll: Any = None

    def bind(self) -> None:
        cfg = self.cfg
        ports = [cfg.kvs.routing_port + r for r in range(max(1, cfg.kvs.routing_threads))]
        null_peers = security.insecure_clients(
            cfg, self.sec, "routing", insecure.address_request_address
        )
        if null_peers is not None:
            # libzmq cannot take NULL and CURVE on one socket; anna.zmtp's server can
            # (the peer's greeting decides). Answers to NULL peers go out over NULL.
            opts = security.zmtp_server_options(self.sec, cfg, null_peers)
            opts["max_frame"] = min(opts["max_frame"], MAX_MESSAGE)
            plain: OrderedDict[str, None] = OrderedDict()
            for port in ports:
                self.zservers.append(
                    ZmtpServer(cfg.ip, port, self.state.stats, plain=plain, **opts)
                )
            self.answers = _Answers(self.zservers[0], self.answers)
            self.zpoll = select.poll()
            for z in self.zservers:
                self.zpoll.register(z.fileno(), select.POLLIN)
            return
        self.sock = security.server_socket(self.ctx, zmq.PULL, self.sec)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)
        self.sock.setsockopt(zmq.RCVHWM, 100000)
        for port in ports:
            self.sock.bind(f"tcp://{cfg.ip}:{port}")

    def receive(self, timeout_ms: int) -> list[list[bytes]]:
        """The messages that arrive within ``timeout_ms`` (at most ``DRAIN`` per socket)."""
        if self.zservers:
            got: list[list[bytes | bytearray]] = []
            if len(self.zservers) == 1:
                got = self.zservers[0].poll(timeout_ms / 1000.0)
            elif self.zpoll.poll(timeout_ms):
                for z in self.zservers:
                    got.extend(z.poll(0))
            return [[f if type(f) is bytes else bytes(f) for f in m] for m in got]
        sock = self.sock
        out: list[list[bytes]] = []
        sock.poll(timeout_ms)
        for _ in range(DRAIN):
            try:
                out.append(sock.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                break
        return out

    def perform(self, sends: list[Send], outbox: Outbox | _Answers | None = None) -> None:
        out = outbox or self.outbox
        for s in sends:
            if len(s.frames) == 1:
                out.send(s.address, s.frames[0])
            else:
                out.send_multipart(s.address, s.frames)

    def run(self) -> None:
        st = self.state
        period = max(0.01, self.cfg.kvs.heartbeat_period_s)
        self.perform(st.start(time.monotonic()))
        next_tick = time.monotonic() + period
        next_stats = time.monotonic() + 60
        while self.running:
            timeout = max(0, int((next_tick - time.monotonic()) * 1000) + 1)
            sends: list[Send] = []
            answers: list[Send] = []
            for frames in self.receive(timeout):
                try:
                    if len(frames) == 1:
                        req = wire.decode_address_request(frames[0])
                        answers.extend(st.handle_address_request(req))
                        continue
                    kind, msg = wire.decode_internal(frames)
                    now = time.monotonic()
                    if kind == wire.KIND_HEARTBEAT:
                        sends.extend(st.handle_heartbeat(msg, now, time.time_ns()))  # type: ignore[arg-type]
                    elif kind == wire.KIND_JOIN:
                        sends.extend(st.handle_peer_membership(msg, now))  # type: ignore[arg-type]
                    elif kind == wire.KIND_DEPART:
                        sends.extend(st.handle_depart(msg, now))  # type: ignore[arg-type]
                    elif kind == wire.KIND_LIST_KEYS:  # anna.admin: who stores what
                        table = st.membership.SerializeToString()
                        answers.append(Send(msg.response_address, [wire.KIND_MEMBERSHIP, table]))  # type: ignore[attr-defined]
                    else:
                        st.stats["unexpected_internal"] += 1
                except WireError:
                    st.stats["malformed"] += 1
                except Exception:  # never let one message stop routing
                    st.stats["errors"] += 1
                    log.exception("routing: message failed")
            now = time.monotonic()
            if now >= next_tick:
                sends.extend(st.tick(now))
                next_tick = now + period
            if answers:
                self.perform(answers, self.answers)
            if sends:
                self.perform(sends)
            if now >= next_stats:
                log.info("routing stats: %s", dict(st.stats))
                next_stats = now + 60

    def close(self) -> None:
        self.outbox.close()
        if self.answers is not self.outbox:
            self.answers.close()
        if self.sock is not None:
            self.sock.close(0)
        for z in self.zservers:
            z.flush_all(0.2)
            z.close()
        security.term(self.ctx)


class _Answers:
    """Routing's answers when it also serves NULL peers: ``tcp://`` ones through its
    ZMTP server (NULL to a NULL peer's answer address, else CURVE), the rest (ipc://,
    multi-frame) through the libzmq outbox."""

    def __init__(self, server: ZmtpServer, outbox: Outbox | _Answers) -> None:
        self.server = server
        self.outbox = outbox

    def send(self, addr: str, data: bytes) -> None:
        if addr.startswith("tcp://"):
            self.server.send(addr, data)
        else:
            self.outbox.send(addr, data)

    def send_multipart(self, addr: str, frames: list[bytes]) -> None:
        self.outbox.send_multipart(addr, frames)

    def close(self) -> None:
        self.outbox.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m anna.routing")
    parser.add_argument("--config", help="YAML config (cloudburst.shared.config)")
    parser.add_argument("--seed", action="append", default=[], help="routing address to join")
    parser.add_argument("--no-storage", action="store_true", help="no storage node beside us")
    parser.add_argument("--die-with-parent", action="store_true")
    args = parser.parse_args(argv)
    if args.die_with_parent:
        die_with_parent()
    cfg = load_config(args.config)
    setup_logging(
        cfg,
        "routing",
        "routing",
        f"%(asctime)s %(levelname)s routing@{cfg.ip} %(name)s: %(message)s",
    )
    server = RoutingServer(cfg, args.seed, storage=not args.no_storage)
    metrics.export_stats("anna_routing", {}, lambda: server.state.stats)
    metrics.serve(cfg, "routing", "routing")

    def stop(signum: int, frame: object) -> None:
        server.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.bind()
    log.info("routing for %s serving on %s (pid %d)", cfg.ip, server.address, os.getpid())
    try:
        server.run()
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
