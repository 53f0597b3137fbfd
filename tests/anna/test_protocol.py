"""PROTOCOL.md rules against real processes (generated protobufs, raw sockets)."""

from __future__ import annotations

from typing import Any

import pytest
import zmq

from anna.proto import anna_pb2 as pb
from lattices import LWWPairLattice, SetLattice, to_payload
from tests.anna.conftest import KvsCluster

pytestmark = pytest.mark.integration


class Raw:
    def __init__(self) -> None:
        self.ctx = zmq.Context()
        self.pull = self.ctx.socket(zmq.PULL)
        self.address = f"tcp://127.0.0.1:{self.pull.bind_to_random_port('tcp://127.0.0.1')}"
        self.socks: dict[str, Any] = {}

    def send(self, addr: str, data: bytes) -> None:
        if addr not in self.socks:
            s = self.ctx.socket(zmq.PUSH)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(addr)
            self.socks[addr] = s
        self.socks[addr].send(data)

    def recv(self, timeout_ms: int = 10000) -> bytes | None:
        return bytes(self.pull.recv()) if self.pull.poll(timeout_ms) else None

    def request(self, addr: str, req: pb.KeyRequest) -> pb.KeyResponse:
        req.response_address = self.address
        self.send(addr, req.SerializeToString())
        data = self.recv()
        assert data is not None, f"no answer from {addr}"
        return pb.KeyResponse.FromString(data)

    def close(self) -> None:
        for s in self.socks.values():
            s.close(0)
        self.pull.close(0)
        self.ctx.term()


def _tuple(key: str, lattice: Any) -> pb.KeyTuple:
    lt, payload = to_payload(lattice)
    return pb.KeyTuple(key=key, lattice_type=lt, payload=payload)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def kvs(module_kvs: KvsCluster) -> KvsCluster:
    """One 2-shard KVS node for this module's tests (each uses its own keys)."""
    return module_kvs


def test_protocol_rules_on_a_live_shard(kvs: KvsCluster) -> None:
    client = kvs.client()
    raw = Raw()
    try:
        keys = [f"p{i}" for i in range(40)]
        addrs = client.get_addresses(keys)
        on0 = [k for k in keys if addrs[k] == [kvs.shard_address(0)]]
        on1 = [k for k in keys if addrs[k] == [kvs.shard_address(1)]]
        assert on0 and on1 and len(on0) + len(on1) == len(keys)
        s0 = kvs.shard_address(0)
        a, b = on0[0], on0[1]

        # GET never written -> KEY_DNE; response_id echoed; one tuple per request tuple
        r = raw.request(
            s0, pb.KeyRequest(type=pb.GET, tuples=[pb.KeyTuple(key=a)], request_id="x1")
        )
        assert r.response_id == "x1" and r.type == pb.GET
        assert [(t.key, t.error) for t in r.tuples] == [(a, pb.KEY_DNE)]

        # PUT: NO_ERROR; NONE and a mismatching type -> LATTICE, nothing stored
        r = raw.request(
            s0,
            pb.KeyRequest(
                type=pb.PUT,
                request_id="x2",
                tuples=[
                    _tuple(a, LWWPairLattice(1, b"one")),
                    pb.KeyTuple(key=b, lattice_type=pb.NONE, payload=b"zz"),
                    _tuple(on1[0], LWWPairLattice(1, b"elsewhere")),
                ],
            ),
        )
        assert [t.error for t in r.tuples] == [pb.NO_ERROR, pb.LATTICE, pb.WRONG_THREAD]
        r = raw.request(s0, pb.KeyRequest(type=pb.PUT, tuples=[_tuple(a, SetLattice({b"s"}))]))
        assert r.tuples[0].error == pb.LATTICE
        r = raw.request(
            s0,
            pb.KeyRequest(
                type=pb.GET,
                tuples=[
                    pb.KeyTuple(key=a),
                    pb.KeyTuple(key=b),
                    pb.KeyTuple(key=a, address_cache_size=3),
                ],
            ),
        )
        assert r.tuples[0].error == pb.NO_ERROR and not r.tuples[0].invalidate
        assert LWWPairLattice.parse(r.tuples[0].payload) == LWWPairLattice(1, b"one")
        assert r.tuples[1].error == pb.KEY_DNE
        assert r.tuples[2].invalidate  # cache thinks 3 replicas, there is 1

        # empty response_address: applied, no reply
        raw.send(
            s0,
            pb.KeyRequest(
                type=pb.PUT, tuples=[_tuple(a, LWWPairLattice(2, b"two"))]
            ).SerializeToString(),
        )
        assert raw.recv(300) is None
        r = raw.request(s0, pb.KeyRequest(type=pb.GET, tuples=[pb.KeyTuple(key=a)]))
        assert LWWPairLattice.parse(r.tuples[0].payload) == LWWPairLattice(2, b"two")

        # malformed bytes are dropped; the shard keeps serving
        raw.send(s0, b"\xff\xfe garbage")
        r = raw.request(
            s0, pb.KeyRequest(type=pb.GET, tuples=[pb.KeyTuple(key=a)], request_id="x9")
        )
        assert r.response_id == "x9"
    finally:
        raw.close()
        client.close()


def test_client_recovers_from_wrong_thread(kvs: KvsCluster) -> None:
    """A stale address cache (pointing at the wrong shard) is corrected via routing."""
    client = kvs.client()
    try:
        keys = [f"w{i}" for i in range(20)]
        real = client.get_addresses(keys)
        for k in keys:  # poison the cache: every key at the other shard
            other = (
                kvs.shard_address(1) if real[k] == [kvs.shard_address(0)] else kvs.shard_address(0)
            )
            client._cache[k] = [other]
        assert all(client.put(keys, [LWWPairLattice(1, k.encode()) for k in keys]).values())
        assert client.get_addresses(keys) == real
        got = client.get(keys)
        assert {k: v.reveal() for k, v in got.items() if v} == {k: k.encode() for k in keys}
    finally:
        client.close()


def test_client_timeout_names_the_address(kvs: KvsCluster) -> None:
    from anna.client import AnnaTcpClient
    from anna.errors import AnnaTimeoutError
    from cloudburst.shared.errors import CloudburstTimeoutError
    from cloudburst.shared.processes import free_port

    port = free_port()
    dead = AnnaTcpClient("127.0.0.1", routing_port=port, timeout=0.3)
    try:
        with pytest.raises(CloudburstTimeoutError, match=f"tcp://127.0.0.1:{port}") as info:
            dead.get("k")
        assert isinstance(info.value, AnnaTimeoutError)
    finally:
        dead.close()
    client = kvs.client(timeout=5.0)
    try:
        assert client.put("k", LWWPairLattice(1, b"v"))
        real = client.get_addresses(["k"])["k"]
        # A cached address where nothing listens any more (a departed or dead node): the
        # client stops trying it after a moment, asks routing again and gets the value.
        dead_addr = [f"tcp://127.0.0.1:{port}"]
        client._cache["k"] = dead_addr
        assert client.get("k")["k"] == LWWPairLattice(1, b"v")
        assert client.get_addresses(["k"])["k"] == real
        client._cache["k"] = dead_addr
        assert client.put("k", LWWPairLattice(2, b"w")) is True
        client._cache["k"] = dead_addr
        assert client.pipeline().get("k").put("k", LWWPairLattice(3, b"x")).execute() == [
            LWWPairLattice(2, b"w"),
            True,
        ]
        client._cache["k"] = dead_addr
        assert client.get(["k", "other"])["k"] == LWWPairLattice(3, b"x")
    finally:
        client.close()


def test_no_servers() -> None:
    """A routing with no storage node answers NO_SERVERS (client: NoServersError)."""
    import sys

    from anna.errors import NoServersError
    from cloudburst.shared.processes import ProcessGroup, free_port

    port = free_port()
    with ProcessGroup() as group:
        group.start(
            "routing",
            [sys.executable, "-m", "anna.routing", "--no-storage"],
            env={"CLOUDBURST_KVS__ROUTING_PORT": str(port)},
        )
        from anna.client import AnnaTcpClient

        client = AnnaTcpClient(f"127.0.0.1:{port}", timeout=10)
        try:
            with pytest.raises(NoServersError):
                client.get("k")
        finally:
            client.close()
