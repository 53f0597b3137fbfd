"""``CloudburstConnection.delete_object`` against a real cluster: the KVS forgets the
key, and a function reading it through its node's cache stops seeing it."""

from __future__ import annotations

import pytest

from cloudburst.client.client import CloudburstConnection
from cloudburst.shared.processes import wait_until

pytestmark = pytest.mark.integration


def test_delete_object(cloud: CloudburstConnection) -> None:
    read = cloud.register(lambda cb, key: cb.get(key), "del_read")
    assert cloud.put_object("del-x", 5) is True
    assert read("del-x").get(timeout=15) == 5  # the executor's cache now holds it
    assert cloud.delete_object("del-x") is True
    assert cloud.get_object("del-x") is None
    wait_until(lambda: read("del-x").get(timeout=15) is None, 15, "the cache to drop del-x")
    assert cloud.delete_object("never-written") is True  # idempotent
    # a put after the delete brings the key back, with only the new value
    assert cloud.put_object("del-set", {1, 2})
    assert cloud.delete_object("del-set")
    assert cloud.put_object("del-set", {3})
    assert cloud.get_object("del-set") == {3}
    assert cloud.put_object("del-x", 6)
    wait_until(lambda: read("del-x").get(timeout=15) == 6, 15, "the new value of del-x")
