"""One storage shard: wire handling in :mod:`anna.wire`, logic, WAL, and the server."""
