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
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any, cast

import zmq

from anna import insecure, wire
from anna.listing import list_keys_response
from anna.membership import digest, make_node, node_id_for
from anna.outbox import Outbox
from anna.proto import anna_pb2 as pb
from anna.shard import bigvalue
from anna.shard.biglane import BigLane
from anna.shard.logic import Append, Reply, ReplyParts, SendInternal, ShardState
from anna.shard.wal import WriteAheadLog, write_records
from anna.zmtp import ZmtpServer, spin_window_s
from cloudburst.shared import metrics, security
from cloudburst.shared.config import Config, load_config
from cloudburst.shared.errors import WireError
from cloudburst.shared.logs import setup_logging
from lattices import codec
from lattices.base import Lattice
from lattices.lww import LWWPairLattice

log = logging.getLogger(__name__)

CACHE_PORT_OFFSET = 100
DRAIN = 256  # messages taken from one socket before looking at the others
COMPACT_BYTES = 64 * 1024 * 1024
EVENTS = zmq.EVENTS
POLLIN = zmq.POLLIN
BUSY_CHECK_MS = 2  # busy mode: how often the gossip and cache sockets are looked at
KEY_ACCESS_WINDOW_S = 10.0  # per-key access counts: the window the hot keys are counted over
GC_GEN0_THRESHOLD = 20_000
BIG_FRAME = 64 * 1024  # requests at least this large are parsed in place (no copy)
#: Requests at least this large are decoded and logged by the worker thread
#: (anna.shard.biglane), off the request loop.
BIG_REQUEST = 4 * 1024 * 1024
#: The heartbeat thread stops sending once the loop has not refreshed the heartbeat for
#: this long: a loop stuck for good is declared dead, one busy with a value is not.
HEARTBEAT_STALL_S = 120.0


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


def decode_big(
    frame: bytearray, span: tuple[Any, ...], max_bytes: int
) -> tuple[bytes | memoryview, Lattice[Any] | None]:
    """(Worker thread) the payload of a large one-key request and, for a PUT, its
    lattice; the copies do not hold the GIL. A payload over ``max_bytes`` is not
    copied (the shard answers VALUE_TOO_LARGE from its length)."""
    rtype, _, lt, start, end = span[:5]
    if end - start > max_bytes:
        return memoryview(frame)[start:end], None
    payload = bigvalue.copy_bytes(frame, start, end)
    if rtype != pb.PUT:
        return payload, None
    if lt == pb.LWW:
        sp = wire.lww_span(payload, 0, len(payload))
        if sp is not None:
            return payload, LWWPairLattice._make(sp[0], bigvalue.copy_bytes(payload, sp[1], sp[2]))
    try:
        return payload, codec.from_payload(lt, payload)
    except Exception:
        return payload, None  # the loop's merge answers LATTICE


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
            max_value_bytes=kvs.max_value_bytes,
        )
        base = Path(data_dir or kvs.data_dir)
        self.wal = WriteAheadLog(
            base / (kvs.wal_name or f"{cfg.ip}_{kvs.shard_base_port}") / f"shard{index}",
            kvs.wal_fsync,
            kvs.wal_fsync_interval_ms,
        )
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.sec = security.server_security(cfg)
        self.outbox = Outbox(self.ctx, self.state.stats, self.sec)
        # Answers to a request's response_address: CURVE server toward the asker.
        self.answers = (
            Outbox(self.ctx, self.state.stats, self.sec, serve=True) if self.sec else self.outbox
        )
        self.running = True
        self._heartbeat: tuple[list[bytes], list[str]] | None = None
        self.loop_alive = time.monotonic()
        self._hb_stop = threading.Event()
        self._hb_thread: threading.Thread | None = None
        self.big = BigLane()
        self.big_keys: dict[str, int] = {}  # keys with a large PUT in the worker
        self.deferred: list[bytes | bytearray] = []  # requests for those keys, in order
        self.compacting = False
        self.compact_failed = False
        self.snapshot_bytes = 0

    def recover(self) -> None:
        start = time.monotonic()
        n = self.state.replay(self.wal.recover())
        self.wal.open()
        if self.wal.size > COMPACT_BYTES:
            self.wal.compact(self.state.snapshot())
        try:
            self.snapshot_bytes = self.wal.snap_path.stat().st_size
        except FileNotFoundError:
            self.snapshot_bytes = 0
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
        sec = self.sec
        # kvs.allow_insecure_clients: Anna's own (NULL) clients from listed networks.
        null_peers = security.insecure_clients(
            self.cfg, sec, f"shard {self.index}", insecure.key_request_address
        )
        self.req = ZmtpServer(
            ip,
            kvs.shard_base_port + self.index,
            self.state.stats,
            **security.zmtp_server_options(sec, self.cfg, null_peers),
        )
        self.gossip = security.server_socket(self.ctx, zmq.PULL, sec)
        self.gossip.bind(f"tcp://{ip}:{kvs.gossip_base_port + self.index}")
        self.cache = security.server_socket(self.ctx, zmq.PULL, sec)
        self.cache.bind(f"tcp://{ip}:{kvs.shard_base_port + self.index + CACHE_PORT_OFFSET}")
        for sock in (self.gossip, self.cache):
            sock.setsockopt(zmq.LINGER, 0)
        # Gossip and hand-off carry whole values (one tuple may be the largest value).
        self.gossip.setsockopt(zmq.MAXMSGSIZE, kvs.max_value_bytes + 64 * 1024 * 1024)
        self.cache.setsockopt(zmq.MAXMSGSIZE, 256 * 1024 * 1024)

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
            elif ta is ReplyParts:
                # A large value's answer: its pieces go out as they are (the value
                # itself is not copied); over libzmq (ipc://) joined off the loop first.
                if a.address.startswith("tcp://"):
                    self.req.send_parts(a.address, a.parts)
                else:
                    self.big.submit(bigvalue.join, (a.parts,), partial(self._send_built, a.address))

    def _send_built(self, address: str, data: bytes | Exception) -> None:
        if isinstance(data, Exception):
            self.state.stats["request_errors"] += 1
            log.error("shard %d: building a large answer failed: %r", self.index, data)
            return
        self.reply(address, data)

    # ---- large values (see anna.shard.biglane) -------------------------------------------

    def big_request(self, frame: bytearray) -> bool:
        """Hand a large one-key request to the worker (False: not one, take the general
        path). Later requests for the same key wait for it (:attr:`deferred`)."""
        span = wire.single_key_request_span(frame)
        if span is None:
            return False
        key = span[1]
        if key in self.big_keys:
            self.deferred.append(frame)  # behind the large PUT of the same key
            return True
        self.big_keys[key] = self.big_keys.get(key, 0) + 1
        self.state.stats["big_requests"] += 1
        self.big.submit(
            decode_big,
            (frame, span, self.cfg.kvs.max_value_bytes),
            partial(self._big_decoded, span),
        )
        return True

    def _big_decoded(self, span: tuple[Any, ...], result: Any) -> None:
        rtype, key, lt, _, _, cache_size, address, rid = span
        if isinstance(result, Exception):
            self.state.stats["request_errors"] += 1
            log.error("shard %d: decoding a large request failed: %r", self.index, result)
            self._big_finish(key, [])
            return
        payload, decoded = result
        try:
            actions = self.state.handle_single(
                rtype, key, lt, payload, cache_size, address, rid, decoded
            )
        except Exception:
            self.state.stats["request_errors"] += 1
            log.exception("shard %d: large request failed", self.index)
            actions = []
        records = [r for a in actions if type(a) is Append for r in a.tuples]
        rest = [a for a in actions if type(a) is not Append]
        if not records:
            self._big_finish(key, rest)
            return
        wal = self.wal
        self.big.submit(
            write_records,
            (wal.fd, records, wal.fsync_policy != "never"),
            partial(self._big_written, key, rest),
        )

    def _big_written(self, key: str, rest: list[Any], written: int | Exception) -> None:
        if isinstance(written, Exception):
            # Not durable: no acknowledgement (the client times out and retries).
            self.state.stats["wal_errors"] += 1
            log.error("shard %d: logging a large value of %r failed: %r", self.index, key, written)
            rest = [a for a in rest if type(a) is SendInternal]
        else:
            self.wal.size += written
        self._big_finish(key, rest)

    def _big_finish(self, key: str, actions: list[Any]) -> None:
        if actions:
            self.perform(actions)
        n = self.big_keys.get(key, 0) - 1
        if n > 0:
            self.big_keys[key] = n
        else:
            self.big_keys.pop(key, None)
        if self.deferred and key not in self.big_keys:
            frames, self.deferred = self.deferred, []
            for f0 in frames:
                self._one_frame(f0)

    def _one_frame(self, f0: bytes | bytearray) -> None:
        """One request off the hot path (a deferred one): the same handling."""
        st = self.state
        if type(f0) is bytearray and len(f0) >= BIG_REQUEST and self.big_request(f0):
            return
        buf = memoryview(f0) if type(f0) is bytearray else cast(bytes, f0)
        try:
            one = wire.parse_single_key_request(buf)
            if one is not None:
                if one[1] in self.big_keys:
                    self.deferred.append(f0)
                    return
                actions = st.handle_single(*one)
            else:
                kreq = wire.decode_key_request(buf)
                if any(t.key in self.big_keys for t in kreq.tuples):
                    self.deferred.append(f0)
                    return
                actions = st.handle_request(kreq)
        except WireError:
            st.stats["malformed"] += 1
            return
        except Exception:
            st.stats["request_errors"] += 1
            log.exception("shard %d: request failed", self.index)
            return
        if actions:
            self.perform(actions)

    def maybe_compact(self) -> None:
        """Compact the WAL once it outgrows both ``COMPACT_BYTES`` and the last
        snapshot: in the background (rotate now, snapshot in the worker)."""
        wal = self.wal
        if self.compacting or wal.size <= max(COMPACT_BYTES, self.snapshot_bytes):
            return
        if self.compact_failed:
            wal.compact(self.state.snapshot())
            self.compact_failed = False
            return
        records = [(k, e.lattice_type, e.get_payload()) for k, e in self.state.store.items()]
        old_fd = wal.rotate()
        self.compacting = True
        self.big.submit(wal.write_snapshot, (records, old_fd), self._compacted)

    def _compacted(self, result: int | Exception) -> None:
        self.compacting = False
        if isinstance(result, Exception):
            # wal.old stays (recovery replays it); the next compaction is synchronous
            # and removes it.
            self.compact_failed = True
            log.error("shard %d: background compaction failed: %r", self.index, result)
            return
        self.snapshot_bytes = result
        self.state.stats["compactions"] += 1

    def reply(self, address: str, data: bytes) -> None:
        """A reply to a client: ZMTP on a plain socket for tcp://, libzmq otherwise."""
        if address.startswith("tcp://"):
            self.req.send(address, data)
        else:
            self.answers.send(address, data)

    def heartbeat(self) -> None:
        """Refresh the heartbeat the heartbeat thread sends (the loop calls this every
        heartbeat period; the thread keeps sending the last one while the loop is busy)."""
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
        self._heartbeat = (frames, sorted(targets))
        self.loop_alive = time.monotonic()

    def heartbeat_thread(self, period: float) -> None:
        """Send the current heartbeat every ``period`` from a thread of its own, so a
        loop busy with a large value (a copy, a 1 GB fsync) never misses one. It stops
        vouching for the loop if that has not refreshed the heartbeat for
        ``HEARTBEAT_STALL_S`` (a hung loop is then declared dead as before)."""
        outbox = Outbox(self.ctx, self.state.stats, self.sec)
        try:
            while True:
                beat = self._heartbeat
                if beat is not None and time.monotonic() - self.loop_alive < HEARTBEAT_STALL_S:
                    frames, targets = beat
                    for addr in targets:
                        outbox.send_multipart(addr, frames)
                if self._hb_stop.wait(period):
                    break
        finally:
            outbox.close()

    def start_heartbeats(self) -> None:
        self.heartbeat()
        self._hb_thread = threading.Thread(
            target=self.heartbeat_thread,
            args=(max(0.01, self.cfg.kvs.heartbeat_period_s),),
            name="heartbeat",
            daemon=True,
        )
        self._hb_thread.start()

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
        next_roll = now + KEY_ACCESS_WINDOW_S
        gc_period = min(60.0, max(0.5, kvs.tombstone_ttl_s / 4))
        next_gc = now + gc_period
        next_timer = now
        next_aux = now
        busy = False
        busy_timeout = BUSY_CHECK_MS / 1000.0
        spin = spin_window_s(kvs.shard_spin_us, req.curve is not None)
        req_fd = req.fileno()
        big = self.big
        big_keys = self.big_keys
        poll_list = [(gossip, POLLIN), (cache, POLLIN), (req_fd, POLLIN), (big.fd, POLLIN)]
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
                    if type(f0) is bytearray:
                        # A large frame, received in place into a bytearray; a very
                        # large one is decoded and logged off the loop.
                        if len(f0) >= BIG_REQUEST and self.big_request(f0):
                            continue
                        buf: bytes | memoryview = memoryview(f0)
                    else:
                        buf = cast(bytes, f0)
                    try:
                        one = parse_single(buf)
                        if one is not None:
                            if big_keys and one[1] in big_keys:
                                self.deferred.append(f0)  # after that key's large PUT
                                continue
                            actions = handle_single(*one)
                        else:
                            kreq = decode_request(buf)
                            if big_keys and any(t.key in big_keys for t in kreq.tuples):
                                self.deferred.append(f0)
                                continue
                            actions = handle_request(kreq)
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
                if big.done:
                    big.drain()
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
                if big.fd in ready or big.done:
                    big.drain()
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
                            if st.gossip_lags:
                                metrics.observe_gossip_lags(self.index, st.gossip_lags)
                                st.gossip_lags.clear()
                        elif kind == wire.KIND_MEMBERSHIP:
                            actions.extend(st.handle_membership(imsg))
                        elif kind == wire.KIND_ANTI_ENTROPY:
                            actions.extend(st.handle_anti_entropy(imsg))
                        elif kind == wire.KIND_LIST_KEYS:
                            lreq = cast(pb.KeyRequest, imsg)
                            prefix = lreq.tuples[0].key if lreq.tuples else ""
                            self.answers.send(
                                lreq.response_address,
                                list_keys_response(st.store, prefix, lreq.request_id),
                            )
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
                    self.maybe_compact()
                if now >= next_stats:
                    log.info(
                        "shard %d stats: %s; %d key(s), %d tombstone(s)",
                        self.index,
                        dict(st.stats),
                        len(st.store),
                        len(st.tombs),
                    )
                    next_stats = now + 60
                if now >= next_roll:
                    st.roll_accesses()
                    next_roll = now + KEY_ACCESS_WINDOW_S
                next_timer = min(
                    next_gossip, next_hb, next_push, next_stats, next_ae, next_gc, next_roll
                )
                if wal.unsynced and wal.fsync_policy == "interval":
                    next_timer = min(next_timer, wal.last_sync + wal.interval_s)

    def close(self) -> None:
        self._hb_stop.set()
        if self._hb_thread is not None:
            self._hb_thread.join(timeout=2.0)
        try:
            self.big.wait_idle(30.0)  # large PUTs being logged, answers being built
        finally:
            self.big.close()
        try:
            # Ship pending gossip and hand-offs before leaving.
            self.perform(self.state.gossip_tick())
            self.wal.flush(time.monotonic())
            self.wal.close()
        finally:
            self.req.flush_all(0.5)
            self.req.close()
            self.outbox.close()
            if self.answers is not self.outbox:
                self.answers.close()
            for sock in (self.gossip, self.cache):
                sock.close(0)
            security.term(self.ctx)


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
    setup_logging(
        cfg,
        "shard",
        f"shard{args.shard}",
        f"%(asctime)s %(levelname)s shard{args.shard}@{cfg.ip} %(name)s: %(message)s",
    )
    server = ShardServer(cfg, args.shard)
    st = server.state
    metrics.export_stats(  # requests by type (get/put/delete), gossip, ... and key count
        "anna_shard",
        {"shard": str(args.shard)},
        lambda: {**st.stats, "keys": len(st.store), "subscribed_keys": len(st.subscribers)},
        gauges=frozenset({"keys", "subscribed_keys"}),
    )
    metrics.export_gossip_ages(str(args.shard), lambda: dict(st.gossip_heard))
    metrics.export_hot_keys(str(args.shard), lambda: st.hot_keys, KEY_ACCESS_WINDOW_S)
    metrics.serve(cfg, "shard", f"shard{args.shard}", args.shard)

    def stop(signum: int, frame: object) -> None:
        server.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.recover()
    server.bind()
    server.start_heartbeats()
    log.info("shard %d of node %s serving (pid %d)", args.shard, server.node_id, os.getpid())
    try:
        server.run()
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
