"""Anna's own (NULL-mechanism) clients on a CURVE cluster: ``kvs.allow_insecure_clients``.

Pure decisions, no sockets. Anna's client speaks only ZMTP's NULL mechanism (no
keys). On a cluster with CURVE on, the KVS request ports (routing, shards) still serve
such a client when the config opts in explicitly::

    kvs:
      allow_insecure_clients: true
      insecure_client_networks: "127.0.0.0/8"   # the default: loopback only

A connection whose peer address is in one of the networks may then greet with NULL
instead of CURVE (:meth:`InsecureClients.peer_allowed`); any other peer is refused as
without the opt-in. A NULL peer may only send client requests (one frame: a
``KeyRequest`` to a shard, a ``KeyAddressRequest`` to routing), never the cluster's
internal messages (membership, heartbeats, departs, gossip); and the answer goes back
over NULL only to a ``tcp://`` response address whose host is in the networks too
(:meth:`InsecureClients.reply_address`). Everything else of the cluster stays CURVE.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from anna import wire
from cloudburst.shared.errors import WireError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Frames = Sequence[bytes | bytearray]

DEFAULT_NETWORKS = "127.0.0.0/8"


def parse_networks(text: str) -> tuple[Network, ...]:
    """``"127.0.0.0/8, 10.1.2.0/24"`` -> networks (ValueError naming a bad one). A bare
    address is a network of one host."""
    out: list[Network] = []
    for part in text.replace(";", ",").split(","):
        item = part.strip()
        if not item:
            continue
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(
                f"kvs.insecure_client_networks: {item!r} is not a network (e.g. 127.0.0.0/8)"
            ) from None
    return tuple(out)


def key_request_address(frames: Frames) -> str | None:
    """The response address of a one-frame ``KeyRequest`` (a shard's client request);
    None for anything else (internal messages, malformed bytes)."""
    if len(frames) != 1:
        return None
    try:
        return wire.decode_key_request(bytes(frames[0])).response_address
    except WireError:
        return None


def address_request_address(frames: Frames) -> str | None:
    """The response address of a one-frame ``KeyAddressRequest`` (routing)."""
    if len(frames) != 1:
        return None
    try:
        return wire.decode_address_request(bytes(frames[0])).response_address
    except WireError:
        return None


@dataclass(frozen=True)
class InsecureClients:
    """Which NULL peers a CURVE server serves, and where their answers may go.

    ``request_address(frames)`` names the response address of a client request (None:
    not a client request), :func:`key_request_address` or
    :func:`address_request_address`."""

    networks: tuple[Network, ...]
    request_address: Callable[[Frames], str | None] = key_request_address

    def _in_networks(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False  # a name: not resolved here (it could resolve anywhere)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.networks)

    def peer_allowed(self, host: str) -> bool:
        """Whether a connection from ``host`` (an IP address) may speak NULL."""
        return self._in_networks(host)

    def reply_address(self, frames: Frames) -> str | None:
        """The address to answer a NULL peer's message at, over NULL; None: refuse the
        message (not a client request, or an answer address outside the networks)."""
        address = self.request_address(frames)
        if not address or not address.startswith("tcp://"):
            return None
        host, sep, port = address[6:].rpartition(":")
        if not sep or not port.isdigit():
            return None
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        return address if self._in_networks(host) else None

    def describe(self) -> str:
        return ", ".join(str(n) for n in self.networks) or "no network"


def from_config(
    kvs: object, curve_on: bool, request_address: Callable[[Frames], str | None]
) -> InsecureClients | None:
    """The policy of ``cfg.kvs`` (None: NULL peers are refused). Without CURVE the
    option means nothing (every peer speaks NULL already). ValueError: a bad network."""
    if not curve_on or not getattr(kvs, "allow_insecure_clients", False):
        return None
    text = getattr(kvs, "insecure_client_networks", DEFAULT_NETWORKS)
    networks = parse_networks(text)
    if not networks:
        raise ValueError(
            "kvs.allow_insecure_clients is on but kvs.insecure_client_networks is empty"
        )
    return InsecureClients(networks, request_address)


def warning(policy: InsecureClients, what: str) -> str:
    """The loud line a KVS process logs at start when the opt-in is on."""
    return (
        f"!!! SECURITY: kvs.allow_insecure_clients is ON: the {what} serves clients WITHOUT "
        f"keys (NULL mechanism: unauthenticated, unencrypted) from {policy.describe()}; "
        "they can read and write every KVS key !!!"
    )
