"""Cache push contract: CacheSubscription to shard port P+100, KeyResponse pushes."""

from __future__ import annotations

import time

import pytest
import zmq

from anna.proto import anna_pb2 as pb
from lattices import SetLattice
from tests.anna.conftest import KvsCluster

pytestmark = pytest.mark.integration


def _recv(sock: zmq.Socket, timeout_ms: int = 10000) -> pb.KeyResponse:  # type: ignore[type-arg]
    assert sock.poll(timeout_ms), "no push arrived"
    return pb.KeyResponse.FromString(sock.recv())


def test_subscribed_keys_are_pushed_on_change(kvs: KvsCluster) -> None:
    client = kvs.client()
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    cache_address = f"tcp://127.0.0.1:{pull.bind_to_random_port('tcp://127.0.0.1')}"
    sub = ctx.socket(zmq.PUSH)
    sub.setsockopt(zmq.LINGER, 0)
    try:
        assert client.put("c1", SetLattice({b"a"}))
        (shard,) = client.get_addresses(["c1"])["c1"]
        host, port = shard.rsplit(":", 1)
        sub.connect(f"{host}:{int(port) + 100}")
        sub.send(pb.CacheSubscription(cache_address=cache_address, keys=["c1"]).SerializeToString())
        first = _recv(pull)  # the current value, right after subscribing
        assert first.type == pb.PUT
        assert [(t.key, t.lattice_type) for t in first.tuples] == [("c1", pb.SET)]
        assert SetLattice.parse(first.tuples[0].payload) == SetLattice({b"a"})

        start = time.monotonic()
        for v in (b"b", b"c", b"d"):
            assert client.put("c1", SetLattice({v}))
        merged = SetLattice({b"a", b"b", b"c", b"d"})
        got = SetLattice(set())
        while got != merged:  # pushes are batched: the full merged value arrives
            resp = _recv(pull)
            (t,) = resp.tuples
            got = SetLattice.parse(t.payload)
        assert time.monotonic() - start < 5

        sub.send(
            pb.CacheSubscription(
                cache_address=cache_address, keys=["c1"], unsubscribe=True
            ).SerializeToString()
        )
        time.sleep(0.2)
        while pull.poll(0):
            pull.recv()
        assert client.put("c1", SetLattice({b"e"}))
        assert not pull.poll(500), "pushed after unsubscribe"
    finally:
        sub.close(0)
        pull.close(0)
        ctx.term()
        client.close()
