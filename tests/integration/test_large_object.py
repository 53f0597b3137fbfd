"""The issue's reproduction (issue 10, point 8): a 100 MB object put through the
client is read back at once, every time, and the KVS keeps its only storage node."""

from __future__ import annotations

import pytest

from cloudburst.client.client import CloudburstConnection

pytestmark = pytest.mark.integration


@pytest.mark.timeout(300)
def test_large_object_round_trips(cloud: CloudburstConnection) -> None:
    kvs = cloud._kvs_client()
    before = kvs.get_addresses(["big-object"], refresh=True)
    for i in range(3):
        value = bytes([i]) * (100 << 20)
        assert cloud.put_object("big-object", value) is True
        got = cloud.get_object("big-object")
        assert got == value
        del value, got
    assert kvs.get_addresses(["big-object"], refresh=True) == before
    assert cloud.delete_object("big-object") is True
