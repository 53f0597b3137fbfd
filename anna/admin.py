"""Operator commands: ``python -m anna.admin depart --routing HOST:PORT --node IP:PORT``.

``depart`` tells a routing node that a storage node leaves cleanly: the node is
tombstoned in the membership table, its shards hand every key off to the new owners,
and it can then be stopped (give it a few gossip periods). The node id is
``<ip>:<shard_base_port>`` of the leaving node.
"""

from __future__ import annotations

import argparse
import sys
import time

import zmq

from anna import wire
from anna.proto import anna_pb2 as pb
from anna.routing.server import normalize_address


def depart(routing: str, node_id: str, linger_ms: int = 2000) -> None:
    """Send a ``Depart`` for ``node_id`` to the routing at ``routing``."""
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, linger_ms)
        sock.connect(normalize_address(routing))
        sock.send_multipart(wire.encode_internal(wire.KIND_DEPART, pb.Depart(node_id=node_id)))
        sock.close()
    finally:
        ctx.term()


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
