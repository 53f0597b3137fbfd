"""Actions the cache's pure logic (and the DDT ``StreamHub``) hand to the zmq shell.

These dataclasses are a stable interface: ``cache/streams.py`` codes against them.

* :class:`Reply` goes back to an executor-facing client over the cache's ROUTER
  socket: the shell sends ``[identity, *frames]``.
* :class:`SendPeer` goes to another node's cache: the shell PUSHes ``frames`` to that
  cache's peer PULL socket ``address`` (``tcp://ip:port``). ``frames[0]`` is the op
  (``b"stream.*"`` for DDT traffic), the rest is the op's payload.
* :class:`KvsSend` is used by the cache's own logic only: one serialized Anna
  protobuf PUSHed to a KVS address (routing, shard request port or shard cache port).

>>> Reply(b"id", [b"stream.ack", b"1"]).frames[0]
b'stream.ack'
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    """Send ``frames`` to the ROUTER peer ``identity`` (an executor-side client)."""

    identity: bytes
    frames: list[bytes]


@dataclass(frozen=True)
class SendPeer:
    """PUSH ``frames`` (``[op, *payload]``) to another cache's peer socket ``address``."""

    address: str
    frames: list[bytes]


@dataclass(frozen=True)
class KvsSend:
    """PUSH one serialized Anna message ``data`` to the KVS endpoint ``address``."""

    address: str
    data: bytes


Action = Reply | SendPeer | KvsSend

__all__ = ["Action", "KvsSend", "Reply", "SendPeer"]
