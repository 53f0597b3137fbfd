"""Anna compatibility: a client built only from PROTOCOL.md's field table works."""

from __future__ import annotations

import pytest

from tests.anna import rawclient as raw
from tests.anna.conftest import KvsCluster

pytestmark = pytest.mark.integration


def test_raw_client_put_then_get_lww(kvs: KvsCluster) -> None:
    c = raw.RawClient()
    try:
        # 1. KeyAddressRequest to routing
        c.send(kvs.routing_address, raw.key_address_request(c.addr_address, ["compat"], "a1"))
        data = c.recv(c.addr)
        assert data is not None, "no KeyAddressResponse"
        resp = raw.parse(data)
        assert resp[3] == [b"a1"]  # response_id
        assert resp.get(2, [0]) == [0]  # error NO_ERROR
        (ka,) = [raw.parse(a) for a in resp[1]]
        assert ka[1] == [b"compat"]
        shard = ka[2][0].decode()
        assert shard.startswith("tcp://127.0.0.1:")

        # 2. PUT an LWW value to the returned address
        payload = raw.lww_value(42, b"hello anna")
        c.send(
            shard,
            raw.key_request(
                raw.PUT, [raw.key_tuple("compat", raw.LWW, payload)], c.resp_address, "p1"
            ),
        )
        data = c.recv(c.resp)
        assert data is not None, "no PUT response"
        put = raw.parse(data)
        assert put[1] == [raw.PUT] and put[3] == [b"p1"]
        (t,) = [raw.parse(x) for x in put[2]]
        assert t[1] == [b"compat"] and t.get(3, [0]) == [0]

        # 3. GET it back
        c.send(shard, raw.key_request(raw.GET, [raw.key_tuple("compat")], c.resp_address, "g1"))
        data = c.recv(c.resp)
        assert data is not None, "no GET response"
        get = raw.parse(data)
        assert get[1] == [raw.GET] and get[3] == [b"g1"]
        (t,) = [raw.parse(x) for x in get[2]]
        assert t.get(3, [0]) == [0] and t[2] == [raw.LWW]
        value = raw.parse(t[4][0])
        assert value[1] == [42] and value[2] == [b"hello anna"]

        # 4. a key never written, at its own shard: KEY_DNE (1)
        c.send(kvs.routing_address, raw.key_address_request(c.addr_address, ["never"], "a2"))
        data = c.recv(c.addr)
        assert data is not None
        never_shard = raw.parse(raw.parse(data)[1][0])[2][0].decode()
        c.send(
            never_shard, raw.key_request(raw.GET, [raw.key_tuple("never")], c.resp_address, "g2")
        )
        data = c.recv(c.resp)
        assert data is not None
        (t,) = [raw.parse(x) for x in raw.parse(data)[2]]
        assert t[3] == [1] and 4 not in t
    finally:
        c.close()
