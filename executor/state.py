"""The one place executors get their KVS state client from.

``make_state_client(cfg)`` returns an object with ``get(keys) -> {key: lattice | None}``
and ``put(key, lattice) -> bool`` (and ``close()``). Today that is a direct KVS client;
the per-node cache replaces it here with a client of the node's cache.
"""

from __future__ import annotations

from typing import Any, Protocol

from cloudburst.shared.config import Config
from cloudburst.shared.kvs import make_kvs_client
from lattices import Lattice


class StateClient(Protocol):
    def get(self, keys: list[str]) -> dict[str, Lattice[Any] | None]: ...

    def put(self, key: str, lattice: Lattice[Any]) -> Any: ...

    def close(self) -> None: ...


def make_state_client(cfg: Config) -> StateClient:
    """The KVS state client of an executor worker (see the module docstring)."""
    return make_kvs_client(
        cfg.ip, cfg.kvs.routing_port, ip=cfg.ip, timeout=cfg.kvs.request_timeout_s
    )
