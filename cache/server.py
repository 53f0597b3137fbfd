"""The cache process (the zmq shell): ``python -m cache.server --config c.yml --node-id N``.

One per executor node. Sockets (see :mod:`cache.protocol` for the framing):

* ROUTER ``ipc://<cfg.cache.ipc_dir>/cache-<node>.sock``: executors' requests;
* PULL ``tcp://<ip>:<random>``: KVS responses and the shards' pushed updates (this is
  the ``cache_address`` of our CacheSubscriptions);
* PULL ``tcp://<ip>:<random>``: routing's KeyAddressResponses;
* PULL ``tcp://<ip>:<peer port or random>``: other caches' ``stream.*`` messages;
* cached PUSH sockets to routing, shards and peer caches.

The pure state lives in :class:`cache.logic.CacheState`; DDT stream ops go to
``cache.streams.StreamHub`` when that module exists.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import time
from collections import Counter
from typing import Any

import zmq

from anna import wire
from anna.outbox import Outbox
from cache import protocol
from cache.actions import KvsSend, Reply, SendPeer
from cache.logic import CacheState
from cache.pins import PIN_PREFIX, PinTable
from cache.shm import ShmStore, owner_pid, put_prefix, segment_prefix
from cloudburst.shared import logs, metrics, security
from cloudburst.shared.config import Config, kvs_host, load_config
from cloudburst.shared.errors import WireError
from cloudburst.shared.logs import setup_logging
from cloudburst.shared.serializer import NUMPY
from cloudburst.shared.spans import lww_value_span

log = logging.getLogger(__name__)

DRAIN = 256
#: ``hub.tick`` runs at least this often (the StreamHub contract).
STREAM_TICK_S = 0.005
LOGIC_TICK_S = 0.01
#: How often the pins of dead workers are dropped.
OWNER_CHECK_S = 1.0


def load_stream_hub(node_id: str, peer_address: str, cfg: Config) -> Any | None:
    """``cache.streams.StreamHub(node_id, peer_address, cfg)``, or None if not there."""
    try:
        mod = importlib.import_module("cache.streams")
    except ModuleNotFoundError as exc:
        if exc.name in ("cache.streams",):
            return None
        log.exception("cache.streams failed to import; stream ops disabled")
        return None
    except Exception:
        log.exception("cache.streams failed to import; stream ops disabled")
        return None
    hub_cls = getattr(mod, "StreamHub", None)
    if hub_cls is None:
        return None
    try:
        return hub_cls(node_id, peer_address, cfg)
    except Exception:
        log.exception("cache.streams.StreamHub failed to start; stream ops disabled")
        return None


class CacheServer:
    """Binds the sockets and runs the poll loop around :class:`CacheState`."""

    def __init__(
        self,
        cfg: Config,
        node_id: str,
        kvs_addr: str,
        ip: str | None = None,
        peer_port: int = 0,
    ) -> None:
        self.cfg = cfg
        self.node_id = node_id
        self.ip = ip or cfg.ip
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.running = True
        self.shell_stats: Counter[str] = Counter()
        host, _, port = kvs_addr.removeprefix("tcp://").rpartition(":")
        if not host:
            host, port = kvs_addr.removeprefix("tcp://"), str(cfg.kvs.routing_port)
        routing = [f"tcp://{host}:{int(port) + r}" for r in range(max(1, cfg.kvs.routing_threads))]

        self.ipc = protocol.ipc_address(cfg.cache.ipc_dir, node_id)
        protocol.make_socket_dir(cfg.cache.ipc_dir)
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 0)
        self.router.setsockopt(zmq.SNDHWM, 0)
        self.router.setsockopt(zmq.RCVHWM, 0)
        try:
            os.unlink(self.ipc[len("ipc://") :])  # a stale socket of a dead predecessor
        except FileNotFoundError:
            pass
        self.router.bind(self.ipc)

        sec = self.sec = security.server_security(cfg)

        def pull(port: int = 0, serve: bool = False) -> tuple[zmq.Socket[Any], str]:
            # The KVS answers to our listeners (CURVE client); peers push to us (server).
            sock = (security.server_socket if serve else security.client_socket)(
                self.ctx, zmq.PULL, sec
            )
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVHWM, 0)
            if port:
                sock.bind(f"tcp://{self.ip}:{port}")
            else:
                port = sock.bind_to_random_port(f"tcp://{self.ip}")
            return sock, f"tcp://{self.ip}:{port}"

        self.kvs_in, self.response_address = pull()
        self.addr_in, self.address_response_address = pull()
        self.peer_in, self.peer_address = pull(peer_port, serve=True)
        self.outbox = Outbox(self.ctx, self.shell_stats, sec)
        self.store: ShmStore | None = None
        if cfg.cache.shm_threshold_bytes > 0 and os.path.isdir(cfg.cache.shm_dir):
            self.store = ShmStore(segment_prefix(self.ipc), cfg.cache.shm_dir)
            swept = self.store.sweep()  # what a killed predecessor left
            if swept:
                log.warning("cache %s: removed %d stale shm segments", node_id, swept)
        self.state = CacheState(
            node_id,
            routing,
            self.response_address,
            self.address_response_address,
            cfg.cache.capacity_bytes,
            request_timeout=cfg.kvs.request_timeout_s,
            epoch=os.urandom(8),
            store=self.store,
            shm_threshold=cfg.cache.shm_threshold_bytes,
            numpy_type=NUMPY,
        )
        self.hub = load_stream_hub(node_id, self.peer_address, cfg)
        # SINGLE/MULTI DAG calls' pinned versions (cache/pins.py, docs/consistency.md).
        self.pins = PinTable(self.peer_address, ttl=cfg.scheduler.call_timeout_s)
        log.info(
            "cache %s: ipc %s, kvs %s, responses %s, peer %s, capacity %d bytes, streams %s",
            node_id,
            self.ipc,
            routing[0],
            self.response_address,
            self.peer_address,
            cfg.cache.capacity_bytes,
            "on" if self.hub else "off",
        )

    def info(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "ipc_address": self.ipc,
            "peer_address": self.peer_address,
            "response_address": self.response_address,
            "routing": self.state.routing,
            "pid": os.getpid(),
            "streams": self.hub is not None,
            "push_period_ms": self.cfg.cache.push_period_ms,
            "subscription_refresh_s": self.cfg.cache.subscription_refresh_s,
        }

    # ---- actions --------------------------------------------------------------------------

    def perform(self, actions: list[Any]) -> None:
        for act in actions:
            if type(act) is Reply:
                try:
                    self.router.send_multipart([act.identity, *act.frames], zmq.NOBLOCK, copy=False)
                except zmq.ZMQError:
                    self.shell_stats["reply_dropped"] += 1
            elif type(act) is KvsSend:
                self.outbox.send(act.address, act.data)
            elif type(act) is SendPeer:
                self.outbox.send_multipart(act.address, list(act.frames))
            else:
                log.error("cache %s: unknown action %r", self.node_id, type(act).__name__)

    # ---- events ---------------------------------------------------------------------------

    def on_client(self, frames: list[bytes], now: float) -> list[Any]:
        if len(frames) < 2:
            self.shell_stats["malformed"] += 1
            return []
        identity, op = frames[0], frames[1]
        if op.startswith(protocol.STREAM_PREFIX):
            if self.hub is None:
                rid = frames[2] if len(frames) > 2 else b""
                return [Reply(identity, protocol.reply_error(op, rid, "streams not available"))]
            try:
                return list(self.hub.handle(identity, op, frames[2:], now))
            except Exception:
                log.exception("cache %s: stream op %r failed", self.node_id, op[:40])
                return []
        if len(frames) < 3:
            self.shell_stats["malformed"] += 1
            return []
        if op.startswith(PIN_PREFIX):
            return self.pins.handle(identity, op, frames[2:], self._held, now)
        rid = frames[2]
        st = self.state
        if b"@" in rid and log.isEnabledFor(logs.CALL_LEVEL):
            call = rid.split(b"@", 1)[1].decode(errors="replace")
            log.log(
                logs.CALL_LEVEL,
                "[%s] %s of %d frame(s)",
                call,
                op.decode(errors="replace"),
                len(frames) - 3,
            )
        try:
            if op == protocol.OP_GET:
                return st.client_get(identity, rid, protocol.decode_get_args(frames[3:]), now)
            if op == protocol.OP_GETV:
                keys, known = protocol.decode_getv_args(frames[3:])
                return st.client_get(identity, rid, keys, now, known)
            if op == protocol.OP_GETM:
                keys, known = protocol.decode_getv_args(frames[3:])
                return st.client_get(identity, rid, keys, now, known, mapped=True)
            if op == protocol.OP_RELEASE:
                st.release(identity, [bytes(f).decode() for f in frames[3:]])
                return []
            if op == protocol.OP_PUT:
                return st.client_put(identity, rid, protocol.decode_put_args(frames[3:]), now)
            if op == protocol.OP_ADOPT:
                return self.on_adopt(identity, rid, frames[3:], now)
            if op == protocol.OP_NOTE:
                return st.client_note(protocol.decode_note_args(frames[3:]), now)
        except WireError as exc:
            self.shell_stats["malformed"] += 1
            return [Reply(identity, protocol.reply_error(op, rid, str(exc)))]
        if op == protocol.OP_PING:
            return [Reply(identity, [op, rid, protocol.OK])]
        if op == protocol.OP_STATS:
            stats = st.snapshot_stats()
            stats.update(self.pins.stats())
            stats.update({f"shell_{k}": v for k, v in self.shell_stats.items()})
            return [Reply(identity, protocol.reply_json(op, rid, stats))]
        if op == protocol.OP_KEYS:
            return [Reply(identity, protocol.reply_json(op, rid, st.key_sizes()))]
        if op == protocol.OP_INFO:
            return [Reply(identity, protocol.reply_json(op, rid, self.info()))]
        return [Reply(identity, protocol.reply_error(op, rid, f"unknown op {op[:32]!r}"))]

    def on_adopt(self, identity: bytes, rid: bytes, frames: list[bytes], now: float) -> list[Any]:
        """A worker's PUT through a segment it wrote (``adopt``): take the file over
        (rename + read-only map, no copy), check it holds one LWW payload, then write
        it through like a PUT (``CacheState.client_adopt``)."""
        key, src, offset = protocol.decode_adopt_args(frames)
        if self.store is None:
            raise WireError("shared memory is off in this cache")
        try:
            name, view = self.store.adopt(src, offset, put_prefix(self.ipc))
        except (OSError, ValueError) as exc:
            self.state.stats["shm_adopt_refused"] += 1
            raise WireError(f"cannot adopt segment {src!r}: {exc}") from None
        try:
            _, start, end = lww_value_span(view)
            if end <= start:
                raise ValueError("empty LWW value")
        except (ValueError, IndexError) as exc:
            view.release()
            self.store.unlink(name)
            self.state.stats["shm_adopt_refused"] += 1
            raise WireError(f"segment {src!r} holds no LWW payload: {exc}") from None
        return self.state.client_adopt(identity, rid, key, name, view, offset, now)

    def _held(self, key: str) -> tuple[int, bytes] | None:
        """The cached ``(lattice type, payload)`` of ``key`` (a pin's source), if held."""
        entry = self.state.entries.get(key)
        if entry is None:
            return None
        self.state.entries.move_to_end(key)
        return entry.lattice_type, bytes(entry.payload)

    def on_peer(self, frames: list[bytes], now: float) -> list[Any]:
        if frames and frames[0].startswith(PIN_PREFIX):
            return self.pins.peer(frames, now)
        if not frames or not frames[0].startswith(protocol.STREAM_PREFIX) or self.hub is None:
            self.shell_stats["peer_dropped"] += 1
            return []
        try:
            return list(self.hub.handle(None, frames[0], frames[1:], now))
        except Exception:
            log.exception("cache %s: peer stream op failed", self.node_id)
            return []

    # ---- loop -----------------------------------------------------------------------------

    def run(self) -> None:
        poller = zmq.Poller()
        for sock in (self.router, self.kvs_in, self.addr_in, self.peer_in):
            poller.register(sock, zmq.POLLIN)
        router, kvs_in, addr_in, peer_in = self.router, self.kvs_in, self.addr_in, self.peer_in
        st, hub = self.state, self.hub
        tick_period = STREAM_TICK_S if hub is not None else LOGIC_TICK_S
        next_tick = time.monotonic()
        next_stats = next_tick + 60
        next_owner_check = next_tick + OWNER_CHECK_S
        # Re-subscribe every held key periodically: a restarted shard forgot us.
        resub_period = self.cfg.cache.subscription_refresh_s
        next_resub = next_tick + resub_period if resub_period > 0 else float("inf")
        while self.running:
            timeout = max(0, int((next_tick - time.monotonic()) * 1000) + 1)
            try:
                events = dict(poller.poll(timeout))
            except zmq.ZMQError:
                if not self.running:
                    break
                raise
            now = time.monotonic()
            actions: list[Any] = []
            try:
                if kvs_in in events:
                    for _ in range(DRAIN):
                        try:
                            data = kvs_in.recv(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        try:
                            actions += st.key_response(wire.decode_key_response(data), now)
                        except WireError:
                            self.shell_stats["malformed"] += 1
                if addr_in in events:
                    for _ in range(DRAIN):
                        try:
                            data = addr_in.recv(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        try:
                            actions += st.address_response(wire.decode_address_response(data), now)
                        except WireError:
                            self.shell_stats["malformed"] += 1
                if router in events:
                    for _ in range(DRAIN):
                        try:
                            frames = router.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        actions += self.on_client(frames, now)
                if peer_in in events:
                    for _ in range(DRAIN):
                        try:
                            frames = peer_in.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        actions += self.on_peer(frames, now)
                if now >= next_tick:
                    actions += st.tick(now)
                    if self.pins.calls or self.pins.fetches:
                        actions += self.pins.tick(now)
                    if hub is not None:
                        try:
                            actions += hub.tick(now)
                        except Exception:
                            log.exception("cache %s: stream tick failed", self.node_id)
                    next_tick = now + tick_period
                if now >= next_owner_check:
                    self.drop_dead_owners()
                    if self.store is not None:
                        self.store.sweep_orphans()  # killed workers' handoffs
                    next_owner_check = now + OWNER_CHECK_S
                if now >= next_resub:
                    actions += st.resubscribe_all()
                    next_resub = now + resub_period
            except Exception:  # one bad event never stops the cache
                self.shell_stats["internal_errors"] += 1
                log.exception("cache %s: event handling failed", self.node_id)
            if actions:
                self.perform(actions)
            if now >= next_stats:
                log.info("cache %s stats: %s", self.node_id, json.dumps(st.snapshot_stats()))
                next_stats = now + 60

    def drop_dead_owners(self) -> None:
        """Release the pins of workers whose process is gone (same node: pid check)."""
        for owner in set(self.state.book.owners()) | self.pins.owners():
            pid = owner_pid(owner)
            if pid is None:
                continue
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                self.state.drop_owner(owner)
                self.pins.drop_owner(owner)
            except PermissionError:
                pass

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
        self.outbox.close()
        for sock in (self.router, self.kvs_in, self.addr_in, self.peer_in):
            sock.close(0)
        try:
            os.unlink(self.ipc[len("ipc://") :])
        except OSError:
            pass
        security.term(self.ctx)


#: Counters (monotonic) among the cache's stats; every other stat is a gauge.
_COUNTERS = {
    "hits",
    "misses",
    "evictions",
    "evicted_bytes",
    "puts",
    "pushes",
    "not_modified",
    "lattice_errors",
    "kvs_gets",
    "kvs_puts",
    "retries",
    "kvs_timeouts",
    "pins",
    "pin_fetches",
    "pins_lost",
    "pin_calls_expired",
}


def start_metrics(server: CacheServer, port: int | None) -> None:
    """Serve the cache's counters as Prometheus text on ``http://<ip>:port/metrics``."""
    from prometheus_client import start_http_server
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.registry import REGISTRY, Collector

    class CacheCollector(Collector):
        def collect(self) -> Any:
            stats = server.state.snapshot_stats()  # a copy taken under the GIL
            stats.update(server.pins.stats())
            for name, value in sorted(stats.items()):
                metric = f"cloudburst_cache_{name}"
                labels = ["node"]
                if name in _COUNTERS:
                    fam: Any = CounterMetricFamily(metric, f"cache {name}", labels=labels)
                else:
                    fam = GaugeMetricFamily(metric, f"cache {name}", labels=labels)
                fam.add_metric([server.node_id], float(value))
                yield fam

    REGISTRY.register(CacheCollector())
    if port is not None:  # None: cloudburst.shared.metrics.serve serves it
        start_http_server(port, addr=server.ip)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cache.server")
    parser.add_argument("--config", help="YAML config (cloudburst.shared.config)")
    parser.add_argument(
        "--node-id",
        required=True,
        help="executor node id (names the ipc socket); 'auto': the id an executor node "
        "with cache.external derives from the same config (cfg.ip, executor.base_port)",
    )
    parser.add_argument(
        "--kvs",
        default="",
        help="KVS routing as host or host:port (default <cfg.kvs.host or cfg.ip>:<routing_port>)",
    )
    parser.add_argument("--ip", default=None, help="address to bind tcp sockets on (cfg.ip)")
    parser.add_argument("--peer-port", type=int, default=0, help="stream peer port (0: random)")
    parser.add_argument(
        "--metrics-port", type=int, default=0, help="Prometheus /metrics port (0: off)"
    )
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    if args.node_id == "auto":
        args.node_id = protocol.external_node_id(cfg.ip, cfg.executor.base_port)
    setup_logging(
        cfg,
        "cache",
        "cache",
        f"%(asctime)s %(levelname)s cache[{args.node_id}] %(name)s %(message)s",
    )
    kvs = args.kvs or f"{kvs_host(cfg)}:{cfg.kvs.routing_port}"
    server = CacheServer(cfg, args.node_id, kvs, ip=args.ip, peer_port=args.peer_port)
    if args.metrics_port:
        start_metrics(server, args.metrics_port)
    elif metrics.serve(cfg, "cache", "cache"):
        start_metrics(server, None)
        hub = server.hub
        if hub is not None:  # DDT deltas (entries), back-pressure waits (held acks)
            metrics.export_stats(
                "cloudburst_ddt",
                {"node": args.node_id},
                lambda: {
                    **hub.stats,
                    "streams": len(hub.streams),
                    "waiting_writers": sum(len(x.held_acks) for x in list(hub.streams.values())),
                },
                gauges=frozenset({"streams", "waiting_writers"}),
            )

    def stop(signum: int, frame: object) -> None:
        server.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.run()
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
