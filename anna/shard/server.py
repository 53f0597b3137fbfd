"""Storage shard process (the shell): ``python -m anna.shard --config c.yml --shard T``.

Binds, on ``cfg.ip``: the request PULL ``shard_base_port+T`` (Anna ``KeyRequest``), the
gossip PULL ``gossip_base_port+T`` (internal two-frame messages) and the cache
PULL ``shard_base_port+T+100`` (``CacheSubscription``). Everything else is
:class:`anna.shard.logic.ShardState`; this module only moves bytes, keeps time and
touches the disk (:mod:`anna.shard.wal`).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, cast

import zmq

from anna import wire
from anna.membership import digest, make_node, node_id_for
from anna.outbox import Outbox
from anna.proto import anna_pb2 as pb
from anna.shard.logic import Append, Reply, SendInternal, ShardState
from anna.shard.wal import WriteAheadLog
from anna.zmtp import ZmtpServer
from cloudburst.shared.config import Config, load_config
from cloudburst.shared.errors import WireError

log = logging.getLogger(__name__)

CACHE_PORT_OFFSET = 100
DRAIN = 256  # messages taken from one socket before looking at the others
COMPACT_BYTES = 64 * 1024 * 1024
EVENTS = zmq.EVENTS
POLLIN = zmq.POLLIN
BUSY_CHECK_MS = 2  # busy mode: how often the gossip and cache sockets are looked at
GC_GEN0_THRESHOLD = 20_000
BIG_FRAME = 64 * 1024  # requests at least this large are parsed in place (no copy)


def tune_malloc() -> None:
    """Keep freed memory for reuse: fresh 1 MB buffers page-fault (PERF_NOTES.md).

    Large values pass through here as several 1 MB copies per request; without this,
    glibc returns them to the kernel (mmap/trim) and every request faults them in again.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 * 1024 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 512 * 1024 * 1024)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def raise_fd_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit: every client holds two connections to
    the shard (requests in, replies out), and the default soft limit is often 1024."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY:
            hard = 1 << 20
        if soft != resource.RLIM_INFINITY and soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, OSError, ValueError):
        pass


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent dies (no orphans)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class ShardServer:
    """The poll loop of one shard."""

    def __init__(self, cfg: Config, index: int, data_dir: Path | None = None) -> None:
        self.cfg = cfg
        kvs = cfg.kvs
        self.index = index
        self.node_id = node_id_for(cfg.ip, kvs.shard_base_port)
        self.routing_address = f"tcp://{cfg.ip}:{kvs.routing_port}"
        me = make_node(
            cfg.ip, kvs.shard_base_port, kvs.gossip_base_port, kvs.shards, 0, self.routing_address
        )
        membership = pb.Membership(nodes=[me], routing_addresses=[self.routing_address])
        self.state = ShardState(
            self.node_id,
            index,
            membership,
            kvs.virtual_nodes,
            kvs.replication_global,
            kvs.replication_local,
            anti_entropy=kvs.anti_entropy_period_s > 0,
            tombstone_ttl_ms=int(kvs.tombstone_ttl_s * 1000),
        )
        base = Path(data_dir or kvs.data_dir)
        self.wal = WriteAheadLog(
            base / f"{cfg.ip}_{kvs.shard_base_port}" / f"shard{index}",
            kvs.wal_fsync,
            kvs.wal_fsync_interval_ms,
        )
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.outbox = Outbox(self.ctx, self.state.stats)
        self.running = True

    def recover(self) -> None:
        start = time.monotonic()
        n = self.state.replay(self.wal.recover())
        self.wal.open()
        if self.wal.size > COMPACT_BYTES:
            self.wal.compact(self.state.snapshot())
        # The store holds no reference cycles: keep the recovered objects out of every
        # collection, and collect the young generation less often (the hot path
        # allocates a few short-lived containers per request, never cycles).
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_GEN0_THRESHOLD, 20, 20)
        log.info(
            "shard %d: recovered %d record(s), %d key(s) in %.2fs",
            self.index,
            n,
            len(self.state.store),
            time.monotonic() - start,
        )

    def bind(self) -> None:
        kvs, ip = self.cfg.kvs, self.cfg.ip
        # Requests and replies speak ZMTP on plain sockets (anna.zmtp): no libzmq I/O
        # thread between the network and this loop (two thread wake-ups fewer per
        # request). Clients still see a libzmq PULL peer.
        self.req = ZmtpServer(ip, kvs.shard_base_port + self.index, self.state.stats)
        self.gossip = self.ctx.socket(zmq.PULL)
        self.gossip.bind(f"tcp://{ip}:{kvs.gossip_base_port + self.index}")
        self.cache = self.ctx.socket(zmq.PULL)
        self.cache.bind(f"tcp://{ip}:{kvs.shard_base_port + self.index + CACHE_PORT_OFFSET}")
        for sock in (self.gossip, self.cache):
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.MAXMSGSIZE, 256 * 1024 * 1024)

    def perform(self, actions: list[Any]) -> None:
        """Carry out actions: WAL appends first (one write), one commit, then the
        messages."""
        records: list[Any] = []
        for a in actions:
            if type(a) is Append:
                records.extend(a.tuples)
        if records:
            self.wal.append(records)
            self.wal.commit(time.monotonic())
        send = self.reply
        for a in actions:
            ta = type(a)
            if ta is Reply:
                r = a.response
                send(a.address, r if isinstance(r, bytes) else r.SerializeToString())
            elif ta is SendInternal:
                self.outbox.send_multipart(a.address, wire.encode_internal(a.kind, a.message))

    def reply(self, address: str, data: bytes) -> None:
        """A reply to a client: ZMTP on a plain socket for tcp://, libzmq otherwise."""
        if address.startswith("tcp://"):
            self.req.send(address, data)
        else:
            self.outbox.send(address, data)

    def heartbeat(self) -> None:
        st = self.state
        node = st.placement.nodes.get(self.node_id)
        hb = pb.Heartbeat(
            node_id=self.node_id,
            epoch=node.epoch if node else 0,
            shard=self.index,
            gossip_address=st.my_gossip,
            membership_digest=digest(st.membership),
        )
        frames = wire.encode_internal(wire.KIND_HEARTBEAT, hb)
        targets = set(st.membership.routing_addresses)
        for n in st.placement.live:
            if n.routing_address:
                targets.add(n.routing_address)
        targets.add(self.routing_address)
        for addr in targets:
            self.outbox.send_multipart(addr, frames)

    def run(self) -> None:
        """The poll loop.

        Two modes: while requests keep coming it blocks on the request socket alone
        (a blocking recv is ~25 us cheaper per request than polling three sockets on
        these machines) and looks at the gossip and cache sockets every
        ``BUSY_CHECK_MS``; after ``BUSY_CHECK_MS`` without a request it polls all three
        until the next timer, so an idle shard does not spin.
        """
        kvs = self.cfg.kvs
        st = self.state
        req, gossip, cache = self.req, self.gossip, self.cache
        handle_request = st.handle_request
        handle_single = st.handle_single
        decode_request = wire.decode_key_request
        parse_single = wire.parse_single_key_request
        send = self.reply
        perform = self.perform
        wal = self.wal
        monotonic = time.monotonic
        sched_yield = os.sched_yield
        gossip_period = max(0.01, kvs.gossip_period_s)
        hb_period = max(0.01, kvs.heartbeat_period_s)
        push_period = max(0.001, self.cfg.cache.push_period_ms / 1000.0)
        ae_period = kvs.anti_entropy_period_s
        now = monotonic()
        next_ae = now + ae_period if ae_period > 0 else float("inf")
        next_gossip = now + gossip_period
        next_hb = now
        next_push = now + push_period
        next_stats = now + 60
        gc_period = min(60.0, max(0.5, kvs.tombstone_ttl_s / 4))
        next_gc = now + gc_period
        next_timer = now
        next_aux = now
        busy = False
        busy_timeout = BUSY_CHECK_MS / 1000.0
        spin = max(0, kvs.shard_spin_us) / 1e6
        req_fd = req.fileno()
        poll_list = [(gossip, POLLIN), (cache, POLLIN), (req_fd, POLLIN)]
        while self.running:
            if busy:
                try:
                    messages = req.poll(0)
                    if not messages:
                        # Spin a little before sleeping: the next request of a client
                        # that is waiting on us is then taken without a wake-up.
                        spin_end = monotonic() + spin
                        while not messages and monotonic() < spin_end:
                            sched_yield()  # a client on our core gets to send it
                            messages = req.poll(0)
                        if not messages:
                            messages = req.poll(busy_timeout)
                except OSError:
                    if not self.running:
                        break
                    raise
                if not messages:
                    busy = False
                batch: list[Any] | None = [] if len(messages) > 1 else None
                for frames in messages:
                    # The hot path: one request, its WAL append and reply. A one-key
                    # request is decoded by hand and answered with hand-encoded bytes
                    # (no protobuf objects); anything else takes the general path.
                    if len(frames) != 1:
                        st.stats["malformed"] += 1
                        continue
                    f0 = frames[0]
                    # A large frame was received in place into a bytearray.
                    buf = memoryview(f0) if type(f0) is bytearray else cast(bytes, f0)
                    try:
                        one = parse_single(buf)
                        if one is not None:
                            actions = handle_single(*one)
                        else:
                            actions = handle_request(decode_request(buf))
                    except WireError:
                        st.stats["malformed"] += 1
                        actions = []
                    except Exception:  # never let one request stop the shard
                        st.stats["request_errors"] += 1
                        log.exception("shard %d: request failed", self.index)
                        actions = []
                    if batch is not None:
                        batch.extend(actions)
                    elif len(actions) == 1 and type(actions[0]) is Reply:
                        a = actions[0]
                        r = a.response
                        send(a.address, r if isinstance(r, bytes) else r.SerializeToString())
                    elif actions:
                        perform(actions)
                if batch:
                    # Several requests arrived together (a pipeline, many clients): one
                    # WAL write and commit for all, then the replies, coalesced per
                    # client into one system call.
                    req.cork()
                    try:
                        perform(batch)
                    finally:
                        req.uncork()
                now = monotonic()
                if now < next_aux and now < next_timer:
                    continue
                ready = [s for s in (gossip, cache) if s.getsockopt(EVENTS) & POLLIN]
                next_aux = now + BUSY_CHECK_MS / 1000.0
            else:
                now = monotonic()
                timeout = max(0, int((next_timer - now) * 1000) + 1)
                try:
                    ready = [s for s, _ in zmq.zmq_poll(poll_list, timeout)]
                except zmq.ZMQError:
                    if not self.running:
                        break
                    raise
                if req_fd in ready:
                    busy = True  # take it (and what follows) on the hot path
                    ready.remove(req_fd)
            actions = []
            if gossip in ready:
                for _ in range(DRAIN):
                    if not gossip.getsockopt(EVENTS) & POLLIN:
                        break
                    try:
                        frames = gossip.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    try:
                        kind, imsg = wire.decode_internal(frames)
                        if kind == wire.KIND_GOSSIP:
                            actions.extend(st.handle_gossip(imsg))
                        elif kind == wire.KIND_MEMBERSHIP:
                            actions.extend(st.handle_membership(imsg))
                        elif kind == wire.KIND_ANTI_ENTROPY:
                            actions.extend(st.handle_anti_entropy(imsg))
                        else:
                            st.stats["unexpected_internal"] += 1
                    except WireError:
                        st.stats["malformed"] += 1
                    except Exception:
                        st.stats["internal_errors"] += 1
                        log.exception("shard %d: internal message failed", self.index)
            if cache in ready:
                for _ in range(DRAIN):
                    if not cache.getsockopt(EVENTS) & POLLIN:
                        break
                    try:
                        data = cache.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    try:
                        st.handle_subscription(wire.decode_subscription(data))
                    except WireError:
                        st.stats["malformed"] += 1
            now = monotonic()
            if now >= next_timer:
                if now >= next_gossip:
                    actions.extend(st.gossip_tick())
                    next_gossip = now + gossip_period
                if now >= next_push:
                    actions.extend(st.push_tick())
                    next_push = now + push_period
                if now >= next_ae:
                    actions.extend(st.anti_entropy_tick())
                    next_ae = now + max(0.01, ae_period)
                if now >= next_gc:
                    actions.extend(st.tombstone_gc())
                    next_gc = now + gc_period
            if actions:
                perform(actions)
            if now >= next_timer:
                if wal.unsynced and wal.fsync_policy == "interval":
                    if now - wal.last_sync >= wal.interval_s:
                        wal.flush(now)
                if now >= next_hb:
                    self.heartbeat()
                    next_hb = now + hb_period
                    if wal.size > COMPACT_BYTES:
                        wal.compact(st.snapshot())
                if now >= next_stats:
                    log.info("shard %d stats: %s", self.index, dict(st.stats))
                    next_stats = now + 60
                next_timer = min(next_gossip, next_hb, next_push, next_stats, next_ae, next_gc)
                if wal.unsynced and wal.fsync_policy == "interval":
                    next_timer = min(next_timer, wal.last_sync + wal.interval_s)

    def close(self) -> None:
        try:
            # Ship pending gossip and hand-offs before leaving.
            self.perform(self.state.gossip_tick())
            self.wal.flush(time.monotonic())
            self.wal.close()
        finally:
            self.req.flush_all(0.5)
            self.req.close()
            self.outbox.close()
            for sock in (self.gossip, self.cache):
                sock.close(0)
            self.ctx.term()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m anna.shard")
    parser.add_argument("--config", help="YAML config (cloudburst.shared.config)")
    parser.add_argument("--shard", type=int, default=0, help="shard index t (port base+t)")
    parser.add_argument("--die-with-parent", action="store_true")
    args = parser.parse_args(argv)
    if args.die_with_parent:
        die_with_parent()
    tune_malloc()
    raise_fd_limit()
    cfg = load_config(args.config)
    logging.basicConfig(
        level=cfg.log_level,
        format=f"%(asctime)s %(levelname)s shard{args.shard}@{cfg.ip} %(name)s: %(message)s",
    )
    server = ShardServer(cfg, args.shard)

    def stop(signum: int, frame: object) -> None:
        server.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.recover()
    server.bind()
    log.info("shard %d of node %s serving (pid %d)", args.shard, server.node_id, os.getpid())
    try:
        server.run()
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
