"""The one place executors get their KVS state client from.

``make_state_client(cfg)`` returns an object with ``get(keys) -> {key: lattice | None}``
and ``put(key, lattice) -> bool`` (and ``close()``). When the executor node started a
node cache (``cfg.cache.enabled``; the node passes its ipc address to its workers in
the ``CB_NODE_CACHE`` environment variable) that is a :class:`cache.client.CacheClient`,
which also reports ``cached_key_sizes()`` for the heartbeat and falls back to the KVS
by itself if the cache dies; otherwise it is a direct KVS client.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

from cloudburst.shared.config import Config, kvs_host
from cloudburst.shared.kvs import make_kvs_client
from lattices import Lattice

#: Set by ``executor.node`` for its workers: the ``ipc://`` address of the node cache.
#: (Not ``CLOUDBURST_*``: that prefix is reserved for config overrides.)
NODE_CACHE_ENV = "CB_NODE_CACHE"


class StateClient(Protocol):
    def get(self, keys: list[str]) -> dict[str, Lattice[Any] | None]: ...

    def put(self, key: str, lattice: Lattice[Any]) -> Any: ...

    def close(self) -> None: ...


def kvs_routing_address(cfg: Config) -> str:
    """``host:port`` of KVS routing: ``cfg.kvs.host`` if the config has it (a node on
    127.0.0.2 reaching a KVS on 127.0.0.1), else ``cfg.ip`` as everywhere else."""
    host = kvs_host(cfg)
    return f"{host}:{cfg.kvs.routing_port}"


def make_state_client(cfg: Config) -> StateClient:
    """The KVS state client of an executor worker (see the module docstring)."""
    cache_address = os.environ.get(NODE_CACHE_ENV, "")
    if cfg.cache.enabled and cache_address:
        from cache.client import CacheClient

        return CacheClient(
            cfg=cfg,
            address=cache_address,
            kvs_addr=kvs_routing_address(cfg),
            ip=cfg.ip,
        )
    host = kvs_routing_address(cfg).rpartition(":")[0]
    return make_kvs_client(host, cfg.kvs.routing_port, ip=cfg.ip, timeout=cfg.kvs.request_timeout_s)
