"""The per-node cache (see docs/cache.md).

* ``cache.client.CacheClient``: what executors use (same get/put as AnnaTcpClient,
  falls back to the KVS when the cache is unreachable);
* ``python -m cache.server --config c.yml --node-id N``: the cache process;
* ``cache.protocol``: the framing of its ipc socket, ``ipc_address(ipc_dir, node_id)``;
* ``cache.actions``: ``Reply`` / ``SendPeer`` (the DDT ``cache.streams.StreamHub`` hook).

Nothing is imported here, so importing a submodule stays cheap.
"""
