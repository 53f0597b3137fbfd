"""Operator commands: ``python -m anna.admin depart --routing HOST:PORT --node IP:PORT``.

``depart`` tells a routing node that a storage node leaves cleanly: the node is
tombstoned in the membership table, its shards hand every key off to the new owners,
and it can then be stopped (give it a few gossip periods). The node id is
``<ip>:<shard_base_port>`` of the leaving node.

:func:`depart_and_wait` is the whole clean leave (used by ``anna.local`` on
SIGTERM/SIGINT): find out whether other live nodes exist, send the ``Depart`` to the
node's own routing, wait until that routing no longer places keys on the node, give
the shards a few gossip periods to ship their keys, all within a deadline.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import zmq

from anna import wire
from anna.proto import anna_pb2 as pb
from anna.routing.server import normalize_address
from cloudburst.shared import security

log = logging.getLogger(__name__)

#: Keys asked about to see which nodes the ring places data on (see :func:`placed_on`).
PROBE_KEYS = 512


def depart(routing: str, node_id: str, linger_ms: int = 2000) -> None:
    """Send a ``Depart`` for ``node_id`` to the routing at ``routing``."""
    ctx = zmq.Context()
    try:
        sock = security.client_socket(ctx, zmq.PUSH, security.default())
        sock.setsockopt(zmq.LINGER, linger_ms)
        sock.setsockopt(zmq.SNDTIMEO, linger_ms)
        sock.connect(normalize_address(routing))
        try:
            sock.send_multipart(wire.encode_internal(wire.KIND_DEPART, pb.Depart(node_id=node_id)))
        finally:
            sock.close()  # a socket left open would make the context's term wait for ever
    finally:
        security.term(ctx)


def placed_on(
    routing: str, ip: str, timeout: float = 2.0, keys: int = PROBE_KEYS
) -> set[str] | None:
    """The shard addresses routing places a sample of ``keys`` random keys on.

    An empty set: routing has no live storage node (NO_SERVERS); None: no answer
    within ``timeout``. With ``keys`` = 512 a node owning 1/64 of the ring is missed
    with probability ~3e-4, so this tells reliably whether *other* live nodes exist
    (it is not a membership listing).
    """
    with _routing_exchange(routing, ip, timeout) as (push, pull, reply_to):
        rid = os.urandom(8).hex()
        req = pb.KeyAddressRequest(
            response_address=reply_to,
            keys=[f"__depart_probe_{rid}_{i}" for i in range(keys)],
            request_id=rid,
        )
        try:
            push.send(req.SerializeToString())
        except zmq.Again:
            return None
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not pull.poll(int(left * 1000) + 1):
                continue
            resp = wire.decode_address_response(pull.recv())
            if resp.response_id != rid:
                continue
            if resp.error == pb.NO_SERVERS:
                return set()
            return {a for ka in resp.addresses for a in ka.ips}
        return None


@contextmanager
def _routing_exchange(
    routing: str, ip: str, timeout: float
) -> Iterator[tuple[zmq.Socket[bytes], zmq.Socket[bytes], str]]:
    """A PUSH to ``routing`` and a PULL bound on ``ip`` for its answer (and that
    answer's address), closed with their own context on leaving."""
    ctx = zmq.Context()
    try:
        pull = security.client_socket(ctx, zmq.PULL, security.default())
        pull.setsockopt(zmq.LINGER, 0)
        port = pull.bind_to_random_port(f"tcp://{ip}")
        push = security.client_socket(ctx, zmq.PUSH, security.default())
        push.setsockopt(zmq.LINGER, 0)
        push.setsockopt(zmq.SNDTIMEO, int(timeout * 1000))
        try:
            push.connect(normalize_address(routing))
            yield push, pull, f"tcp://{ip}:{port}"
        finally:
            pull.close(0)
            push.close(0)
    finally:
        security.term(ctx)


@dataclass
class KeyListing:
    """What :func:`list_keys` found: every live key with the prefix (deduplicated over
    replicas), the shards asked, and those that did not answer or cut their list."""

    keys: list[str]
    shards: list[str]
    missing: list[str]
    truncated: list[str]


def membership(routing: str, ip: str, timeout: float = 2.0) -> pb.Membership | None:
    """The membership table of the routing at ``routing`` (None: no answer)."""
    with _routing_exchange(routing, ip, timeout) as (push, pull, reply_to):
        req = pb.KeyRequest(response_address=reply_to, request_id="membership")
        try:
            push.send_multipart(wire.encode_internal(wire.KIND_LIST_KEYS, req))
            if not pull.poll(int(timeout * 1000)):
                return None
            kind, msg = wire.decode_internal(pull.recv_multipart())
        except zmq.Again:
            return None
        return msg if isinstance(msg, pb.Membership) else None


def live_shards(table: pb.Membership) -> list[str]:
    """Gossip addresses of the shards of every live node of ``table``."""
    return sorted(a for n in table.nodes if not n.departed for a in n.gossip_addresses)


def list_keys(routing: str, ip: str, prefix: str = "", timeout: float = 5.0) -> KeyListing:
    """Every live key starting with ``prefix``: asks routing for the membership, then
    every live shard for its keys (one ``KIND_LIST_KEYS`` each) within ``timeout``.
    Raises ``TimeoutError`` when routing does not answer."""
    deadline = time.monotonic() + timeout
    table = membership(routing, ip, timeout=min(2.0, timeout))
    if table is None:
        raise TimeoutError(f"KVS routing at {normalize_address(routing)} did not answer")
    shards = live_shards(table)
    keys: set[str] = set()
    answered: set[str] = set()
    truncated: list[str] = []
    ctx = zmq.Context()
    try:
        pull = security.client_socket(ctx, zmq.PULL, security.default())
        pull.setsockopt(zmq.LINGER, 0)
        port = pull.bind_to_random_port(f"tcp://{ip}")
        pushes = []
        try:
            rid = os.urandom(8).hex()
            for i, addr in enumerate(shards):
                push = security.client_socket(ctx, zmq.PUSH, security.default())
                push.setsockopt(zmq.LINGER, 0)
                push.setsockopt(zmq.SNDTIMEO, 1000)
                push.connect(addr)
                pushes.append(push)
                req = pb.KeyRequest(response_address=f"tcp://{ip}:{port}", request_id=f"{rid}-{i}")
                req.tuples.add(key=prefix)
                try:
                    push.send_multipart(wire.encode_internal(wire.KIND_LIST_KEYS, req))
                except zmq.Again:
                    continue
            while len(answered) < len(shards):
                left = deadline - time.monotonic()
                if left <= 0 or not pull.poll(int(left * 1000) + 1):
                    break
                resp = wire.decode_key_response(pull.recv())
                head, _, idx = resp.response_id.rpartition("-")
                if head != rid or not idx.isdigit() or int(idx) >= len(shards):
                    continue
                addr = shards[int(idx)]
                answered.add(addr)
                keys.update(t.key for t in resp.tuples)
                if resp.error == pb.TIMEOUT:
                    truncated.append(addr)
        finally:
            pull.close(0)
            for push in pushes:
                push.close(0)
    finally:
        security.term(ctx)
    return KeyListing(
        sorted(keys), shards, [s for s in shards if s not in answered], sorted(truncated)
    )


@dataclass
class DepartOutcome:
    """What :func:`depart_and_wait` did (``anna.local`` logs it)."""

    status: str  # alone | departed | timeout | no_routing | aborted
    seconds: float
    others: int = 0  # shards of other nodes seen before departing
    detail: str = ""


def depart_and_wait(
    routing: str,
    node_id: str,
    own_shards: Iterable[str],
    ip: str,
    timeout: float = 10.0,
    settle: float = 1.5,
    abort: Callable[[], bool] = lambda: False,
) -> DepartOutcome:
    """Leave the cluster cleanly within ``timeout`` seconds (see the module docstring).

    ``routing`` is the node's own routing (so it does not re-admit its own shards),
    ``own_shards`` their request addresses, ``ip`` where to bind the probe's reply
    socket, ``settle`` how long the shards get to hand their keys off once routing
    agrees the node left (a few gossip periods). ``abort()`` true stops waiting.
    """
    start = time.monotonic()
    deadline = start + timeout
    own = set(own_shards)

    def left() -> float:
        return max(0.0, deadline - time.monotonic())

    before = placed_on(routing, ip, timeout=min(2.0, left()))
    if before is None:
        return DepartOutcome("no_routing", time.monotonic() - start, detail="no answer")
    others = before - own
    if not others:
        return DepartOutcome("alone", time.monotonic() - start)
    depart(routing, node_id, linger_ms=int(min(2.0, left()) * 1000))
    while True:
        if abort():
            return DepartOutcome("aborted", time.monotonic() - start, len(others))
        now_on = placed_on(routing, ip, timeout=min(1.0, left()))
        if now_on is not None and not (now_on & own):
            break
        if left() <= 0:
            return DepartOutcome(
                "timeout", time.monotonic() - start, len(others), "routing still places keys here"
            )
        time.sleep(min(0.05, left()))
    # Routing agrees: the shards got the table at the same time and hand every key off
    # at their next gossip tick (what is still queued ships when they stop).
    end = min(deadline, time.monotonic() + settle)
    while time.monotonic() < end and not abort():
        time.sleep(min(0.05, max(0.0, end - time.monotonic())))
    return DepartOutcome("departed", time.monotonic() - start, len(others))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m anna.admin")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("depart", help="a storage node leaves the cluster cleanly")
    d.add_argument("--routing", required=True, help="any routing node, host[:port]")
    d.add_argument("--node", required=True, help="the leaving node: <ip>:<shard_base_port>")
    d.add_argument("--wait", type=float, default=0.0, help="seconds to wait afterwards")
    args = parser.parse_args(argv)
    depart(args.routing, args.node)
    print(f"asked {normalize_address(args.routing)} to retire node {args.node}")
    if args.wait:
        time.sleep(args.wait)
    return 0


if __name__ == "__main__":
    sys.exit(main())
