"""Cached outgoing PUSH sockets, one per peer address (used by every server shell)."""

from __future__ import annotations

from collections import Counter, OrderedDict
from typing import TYPE_CHECKING, Any

import zmq
import zmq.backend

from anna import wire

if TYPE_CHECKING:
    from cloudburst.shared.security import Security

MAX_OUT_SOCKETS = 2048
COPY_THRESHOLD = 64 * 1024
NOBLOCK = zmq.NOBLOCK
# The backend's send, skipping pyzmq's Python-level wrapper (routing_id/group handling,
# which a PUSH socket never uses).
_raw_send = zmq.backend.Socket.send


class Outbox:
    """Cached PUSH sockets by address (bounded: the oldest connection is closed first).

    With ``sec`` the sockets are CURVE clients (messages to servers: heartbeats, gossip,
    membership), or with ``serve`` CURVE servers (answers to the address a request
    named: the asker's listener is the CURVE client), see cloudburst.shared.security.
    """

    def __init__(
        self,
        ctx: zmq.Context[Any],
        stats: Counter[str],
        sec: Security | None = None,
        serve: bool = False,
    ) -> None:
        self.ctx = ctx
        self.secure = None if sec is None else (sec.serve if serve else sec.ask)
        self.socks: OrderedDict[str, zmq.Socket[Any]] = OrderedDict()
        self.stats = stats

    def _sock(self, addr: str) -> zmq.Socket[Any] | None:
        sock = self.socks.get(addr)
        if sock is not None:
            return sock
        if not wire.valid_address(addr):
            self.stats["bad_address"] += 1
            return None
        sock = self.ctx.socket(zmq.PUSH)
        if self.secure is not None:
            self.secure(sock)
        sock.setsockopt(zmq.LINGER, 500)
        # Bounded queue per peer: a dead client's replies are dropped, not hoarded.
        sock.setsockopt(zmq.SNDHWM, 1000)
        try:
            sock.connect(addr)
        except zmq.ZMQError:
            sock.close(0)
            self.stats["bad_address"] += 1
            return None
        self.socks[addr] = sock
        if len(self.socks) > MAX_OUT_SOCKETS:
            _, old = self.socks.popitem(last=False)
            old.close(0)
        return sock

    def send(self, addr: str, data: bytes) -> None:
        sock = self._sock(addr)
        if sock is None:
            return
        try:
            _raw_send(sock, data, NOBLOCK, len(data) < COPY_THRESHOLD)  # type: ignore[call-overload]
        except zmq.ZMQError:
            self.stats["send_dropped"] += 1

    def send_multipart(self, addr: str, frames: list[bytes]) -> None:
        sock = self._sock(addr)
        if sock is None:
            return
        try:
            sock.send_multipart(frames, zmq.NOBLOCK, copy=False)
        except zmq.ZMQError:
            self.stats["send_dropped"] += 1

    def close(self) -> None:
        for sock in self.socks.values():
            sock.close(200)
        self.socks.clear()
