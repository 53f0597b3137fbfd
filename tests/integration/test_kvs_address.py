"""``CloudburstConnection(kvs_address=...)``: a client that reaches the KVS by another
name than the one the scheduler reports (a host outside a container network's DNS,
docs/deploy.md) uses its own."""

from __future__ import annotations

from typing import Any

import pytest

from cloudburst.shared.errors import ConnectionFailed
from cloudburst.shared.processes import free_port

pytestmark = pytest.mark.integration


def test_kvs_address_replaces_the_schedulers(cluster: Any) -> None:
    port = cluster.cfg.kvs.routing_port
    with cluster.connect(kvs_address=f"localhost:{port}") as cloud:
        assert cloud.kvs_address == f"localhost:{port}"
        assert cloud.put_object("kvs-address-key", 41) is True
        assert cloud.get_object("kvs-address-key") == 41
    with cluster.connect() as cloud:
        assert cloud.kvs_address.endswith(f":{port}") and "localhost" not in cloud.kvs_address
        assert cloud.get_object("kvs-address-key") == 41


def test_a_wrong_kvs_address_is_named(cluster: Any) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    with cluster.connect(kvs_address=nowhere) as cloud:
        with pytest.raises(ConnectionFailed, match=nowhere):
            cloud.put_object("kvs-address-other", 1)
