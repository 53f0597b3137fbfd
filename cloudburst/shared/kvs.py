"""How Cloudburst processes (client, scheduler, executors) reach the KVS.

One factory so the address conventions live in one place: the KVS is named by its
routing tier's ``host`` and ``port``.
"""

from __future__ import annotations

from typing import Any


def make_kvs_client(
    routing_host: str,
    routing_port: int,
    *,
    ip: str | None = None,
    timeout: float = 5.0,
    sec: Any = "process",
) -> Any:
    """A KVS client (``get(keys)``, ``put(key, lattice)``, ``close()``) talking to the
    routing tier at ``routing_host:routing_port``; it binds only random ports. ``sec``:
    a :class:`cloudburst.shared.security.Security` (CURVE), None (plain), or by default
    this server process's (:func:`cloudburst.shared.security.current`)."""
    from anna.client import AnnaTcpClient
    from cloudburst.shared import security

    if sec == "process":
        sec = security.current()

    return AnnaTcpClient(
        routing_host,
        ip=ip or routing_host,
        local=True,
        routing_port=routing_port,
        timeout=timeout,
        curve=None if sec is None else sec.zmtp_client(),
    )


def split_address(addr: str, default_port: int) -> tuple[str, int]:
    """``"host"``, ``"host:port"`` or ``"tcp://host:port"`` -> ``(host, port)``."""
    text = addr.strip()
    if text.startswith("tcp://"):
        text = text[len("tcp://") :]
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        try:
            return host, int(port)
        except ValueError:
            raise ValueError(f"bad port in address {addr!r}") from None
    if not text:
        raise ValueError("empty address")
    return text, default_port
