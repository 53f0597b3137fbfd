"""10k random garbage messages to every port; every server still answers correctly."""

from __future__ import annotations

import random
import time

import pytest
import zmq

from anna.proto import anna_pb2 as pb
from lattices import LWWPairLattice
from tests.anna.conftest import KvsCluster

pytestmark = pytest.mark.integration

N = 10_000


def _garbage(rng: random.Random, i: int) -> list[bytes]:
    kind = i % 5
    if kind == 0:  # random bytes
        return [rng.randbytes(rng.randrange(0, 200))]
    if kind == 1:  # random multi-frame
        return [rng.randbytes(rng.randrange(0, 40)) for _ in range(rng.randrange(2, 4))]
    if kind == 2:  # a valid KeyRequest full of nonsense
        req = pb.KeyRequest(
            type=rng.randrange(0, 8),  # type: ignore[arg-type]
            response_address=rng.choice(
                ["", "garbage", "tcp://127.0.0.1:1", "tcp://x:0", "ipc://"]
            ),
            request_id=str(i),
        )
        for _ in range(rng.randrange(0, 4)):
            req.tuples.add(
                key=rng.choice(["", "k", "ANNA_METADATA|x", "é" * 10]),
                lattice_type=rng.randrange(0, 7),  # type: ignore[arg-type]
                payload=rng.randbytes(rng.randrange(0, 30)),
                address_cache_size=rng.randrange(0, 5),
            )
        return [req.SerializeToString()]
    if kind == 3:  # internal kinds with garbage bodies
        return [
            rng.choice([b"gossip", b"heartbeat", b"depart", b"nope"]),
            rng.randbytes(rng.randrange(0, 60)),
        ]
    # a truncated valid message
    req = pb.KeyAddressRequest(
        response_address="tcp://127.0.0.1:1", keys=["a", "b"], request_id="r"
    )
    data = req.SerializeToString()
    return [data[: rng.randrange(0, len(data))]]


def test_garbage_on_every_port(kvs: KvsCluster) -> None:
    kv = kvs.cfg["kvs"]
    ports = [kv["routing_port"]]
    for t in range(2):
        ports += [
            kv["shard_base_port"] + t,
            kv["gossip_base_port"] + t,
            kv["shard_base_port"] + 100 + t,
        ]
    client = kvs.client()
    keys = [f"g{i}" for i in range(50)]
    assert all(client.put(keys, [LWWPairLattice(1, k.encode()) for k in keys]).values())
    ctx = zmq.Context()
    rng = random.Random(1234)
    try:
        start = time.monotonic()
        for port in ports:
            sock = ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.LINGER, 5000)
            sock.setsockopt(zmq.SNDHWM, 0)
            sock.connect(f"tcp://127.0.0.1:{port}")
            for i in range(N):
                sock.send_multipart(_garbage(rng, i))
            sock.close()  # linger: everything is delivered
        kvs.procs.check_alive()
        # Every server still answers correctly (routing, both shards, cache ports untouched data).
        fresh = kvs.client()
        try:
            got = fresh.get(keys)
            assert {k: v.reveal() for k, v in got.items() if v} == {k: k.encode() for k in keys}
            assert fresh.put("after", LWWPairLattice(2, b"ok")) is True
            assert fresh.get("after")["after"] == LWWPairLattice(2, b"ok")
        finally:
            fresh.close()
        kvs.procs.check_alive()
        assert time.monotonic() - start < 60
    finally:
        client.close()
        ctx.term()
