"""The StreamHub extension hook: stream.* ops on the ROUTER and the peer socket."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import zmq

from cache import protocol
from cache.actions import Reply, SendPeer
from cache.server import CacheServer
from cloudburst.shared.config import load_config


class FakeHub:
    def __init__(self) -> None:
        self.handled: list[tuple[bytes | None, bytes, list[bytes]]] = []
        self.ticks: list[float] = []
        self.peer_address = ""

    def handle(self, sender: bytes | None, op: bytes, frames: list[bytes], now: float) -> list:
        self.handled.append((sender, op, [bytes(f) for f in frames]))
        if sender is not None:
            return [
                Reply(sender, [op, b"ack", *frames]),
                SendPeer(self.peer_address, [b"stream.forward", *frames]),
            ]
        return []

    def tick(self, now: float) -> list:
        self.ticks.append(now)
        return []


def test_stream_ops_reach_the_hub(tmp_path: Path) -> None:
    cfg = load_config(env={}, cache={"ipc_dir": str(tmp_path / "ipc")})
    server = CacheServer(cfg, "hooknode", "127.0.0.1:1")
    hub = FakeHub()
    hub.peer_address = server.peer_address
    server.hub = hub
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    ctx = zmq.Context.instance()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    try:
        dealer.connect(protocol.ipc_address(str(tmp_path / "ipc"), "hooknode"))
        dealer.send_multipart([b"stream.open", b"s1", b"payload"])
        assert dealer.poll(5000)
        assert dealer.recv_multipart() == [b"stream.open", b"ack", b"s1", b"payload"]
        deadline = time.monotonic() + 5
        while len(hub.handled) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert hub.handled[0][0] is not None and hub.handled[0][1] == b"stream.open"
        assert hub.handled[1] == (None, b"stream.forward", [b"s1", b"payload"])
        # tick() at least every 5 ms (allow for scheduling noise on a busy machine)
        n0 = len(hub.ticks)
        time.sleep(0.2)
        assert len(hub.ticks) - n0 >= 10
        # Built-in ops still work beside streams.
        dealer.send_multipart([b"info", b"r1"])
        assert dealer.poll(5000)
        op, rid, body = protocol.decode_reply(dealer.recv_multipart())
        assert b"peer_address" in body[0] and rid == b"r1"
    finally:
        dealer.close(0)
        server.running = False
        thread.join(timeout=5)
        server.close()
    assert not thread.is_alive()
