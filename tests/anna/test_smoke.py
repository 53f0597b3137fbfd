"""The thin path: local mode starts, PUT/GET every lattice type through the client."""

from __future__ import annotations

import pytest

from lattices import LWWPairLattice, OrderedSetLattice, PriorityLattice, SetLattice
from tests.anna.conftest import KvsCluster

pytestmark = pytest.mark.integration


def test_put_get_every_lattice_type(kvs: KvsCluster) -> None:
    client = kvs.client()
    try:
        values = {
            "lww": LWWPairLattice(5, b"five"),
            "set": SetLattice({b"a", b"b"}),
            "oset": OrderedSetLattice({b"z", b"a"}),
            "prio": PriorityLattice(2.0, b"two"),
        }
        for k, v in values.items():
            assert client.put(k, v) is True
        got = client.get(list(values) + ["missing"])
        assert got["missing"] is None
        for k, v in values.items():
            assert got[k] == v, k
        assert client.put("lww", LWWPairLattice(4, b"older")) is True
        assert client.get("lww")["lww"] == LWWPairLattice(5, b"five")
        many = {f"k{i}": LWWPairLattice(i + 1, b"v%d" % i) for i in range(200)}
        assert client.put(list(many), list(many.values())) == {k: True for k in many}
        assert client.get(list(many)) == many
        # the address cache spans both shards
        addrs = client.get_addresses(list(many))
        assert {a[0] for a in addrs.values()} == {kvs.shard_address(0), kvs.shard_address(1)}
    finally:
        client.close()
