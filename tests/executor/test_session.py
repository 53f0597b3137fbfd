"""executor/session.py: a SINGLE/MULTI call's read/write set (fakes, no sockets)."""

from __future__ import annotations

from typing import Any

import pytest

from cache import pins as pinmod
from cache.actions import Reply
from cache.pins import PinTable
from cloudburst.shared import serializer
from cloudburst.shared.proto import cloudburst_pb2 as pb
from executor.session import CallSession, ConsistencyError, causal_values
from lattices import LWWPairLattice, MultiKeyCausalLattice, VectorClock, codec


class Store:
    """A KVS stand-in: get/put of lattices."""

    def __init__(self, **values: Any) -> None:
        self.data: dict[str, Any] = dict(values)

    def get(self, keys: list[str]) -> dict[str, Any]:
        return {k: self.data.get(k) for k in keys}

    def put(self, key: str, lattice: Any) -> bool:
        old = self.data.get(key)
        self.data[key] = lattice if old is None else old.merge(lattice)
        return True


class Node:
    """One node cache's pin table behind a CacheClient-like surface; ``net`` carries
    peer messages between nodes synchronously."""

    def __init__(self, address: str, net: dict[str, Node], cached: Store) -> None:
        self.table = PinTable(address)
        self.net = net
        self.cached = cached
        net[address] = self

    def _held(self, key: str) -> tuple[int, bytes] | None:
        v = self.cached.data.get(key)
        return None if v is None else codec.to_payload(v)

    def _call(self, frames: list[bytes]) -> list[bytes] | None:
        acts = self.table.handle(b"p1-0", frames[0], frames[1:], self._held, 0.0)
        out: list[bytes] | None = None
        while acts:
            act = acts.pop(0)
            if isinstance(act, Reply):
                out = act.frames
            else:
                target = self.net[act.address].table
                acts += target.peer(act.frames, 0.0)
        return out

    def pin_get(self, call: str, keys: list[str], locs: list[str]) -> Any:
        frames = self._call(pinmod.encode_pin_get(b"r", call, keys, locs))
        assert frames is not None
        return pinmod.decode_pin_get_body(frames[3:], len(keys))

    def pin_put(self, call: str, key: str, ltype: int, payload: bytes, overwrite: bool) -> Any:
        frames = self._call(pinmod.encode_pin_put(b"r", call, key, ltype, payload, overwrite))
        assert frames is not None
        return frames[3][0], frames[4]

    def pin_release(self, call: str, holders: list[str]) -> None:
        self._call(pinmod.encode_pin_release(b"r", call, holders))


def lww(v: Any, ts: int) -> LWWPairLattice:
    return LWWPairLattice(ts, serializer.to_bytes(v))


def val(lattice: Any) -> Any:
    return serializer.from_bytes(lattice.value)


def _hop(up: CallSession, down: CallSession) -> None:
    msg = pb.CallSession()
    up.to_pb(msg)
    down.absorb([pb.CallSession.FromString(msg.SerializeToString())])


def test_single_repeatable_read_across_nodes_and_writes_visible() -> None:
    net: dict[str, Node] = {}
    kvs = Store(k=lww("old", 1))
    n1, n2 = Node("n1", net, kvs), Node("n2", net, Store())
    f = CallSession("c", pb.SINGLE, kvs, n1, "n1")
    assert val(f.get("k")["k"]) == "old"
    f.put("w", lww("written", 5))
    kvs.put("k", lww("new", 2))  # overwritten after f read it
    assert val(f.get(["k"])["k"]) == "old"
    g = CallSession("c", pb.SINGLE, kvs, n2, "n2")
    _hop(f, g)
    assert val(g.get("k")["k"]) == "old"  # fetched from n1's pin, not the KVS
    assert val(g.get("w")["w"]) == "written"
    assert g.holders == {"n1", "n2"}
    g.release()
    assert n1.table.bytes == 0 and n2.table.bytes == 0


def test_without_a_cache_the_versions_travel_inline() -> None:
    kvs = Store(k=lww("old", 1))
    f = CallSession("c", pb.SINGLE, kvs)
    assert val(f.get("k")["k"]) == "old"
    kvs.put("k", lww("new", 2))
    g = CallSession("c", pb.SINGLE, kvs)
    _hop(f, g)
    assert val(g.get("k")["k"]) == "old"
    assert g.get("absent")["absent"] is None and "absent" not in g.reads


def test_lost_pin_raises() -> None:
    net: dict[str, Node] = {}
    kvs = Store(k=lww("old", 1))
    n1 = Node("n1", net, kvs)
    f = CallSession("c", pb.SINGLE, kvs, n1, "n1")
    f.get("k")
    f.release()
    g = CallSession("c", pb.SINGLE, kvs, n1, "n1")
    _hop(f, g)
    g.reads["k"].location = "n1"
    with pytest.raises(ConsistencyError, match="no longer pinned"):
        g.get("k")


def test_multi_read_waits_for_a_dependency_version() -> None:
    """g's read of ``a`` depends on the version of ``a`` that ``b`` (read by f) needs:
    the stale cached ``a`` is replaced by a KVS read of a version that covers it."""
    net: dict[str, Node] = {}
    a1 = MultiKeyCausalLattice({"w": 1}, {}, {serializer.to_bytes("a1")})
    a2 = MultiKeyCausalLattice({"w": 2}, {}, {serializer.to_bytes("a2")})
    b2 = MultiKeyCausalLattice({"w": 2}, {"a": VectorClock({"w": 2})}, {serializer.to_bytes("b2")})
    kvs = Store(a=a2, b=b2)
    stale = Store(a=a1, b=b2)  # node 2's cache has not seen a2 yet
    n1, n2 = Node("n1", net, kvs), Node("n2", net, stale)
    f = CallSession("c", pb.MULTI, stale, n1, "n1", fresh=kvs.get)
    assert causal_values(f.get("b")["b"]) == ["b2"]
    g = CallSession("c", pb.MULTI, stale, n2, "n2", fresh=kvs.get)
    _hop(f, g)
    assert causal_values(g.get("a")["a"]) == ["a2"]
    assert causal_values(g.get("a")["a"]) == ["a2"]  # and pinned
    # SINGLE has no such rule: it reads the stale version.
    s = CallSession("s", pb.SINGLE, stale, n2, "n2")
    s.get("b")
    assert causal_values(s.get("a")["a"]) == ["a1"]


def test_multi_dependency_that_never_appears_fails() -> None:
    b = MultiKeyCausalLattice({"w": 9}, {"a": VectorClock({"w": 9})}, {b"x"})
    kvs = Store(a=MultiKeyCausalLattice({"w": 1}, {}, {b"y"}), b=b)
    now = [0.0]
    sess = CallSession(
        "c",
        pb.MULTI,
        kvs,
        fresh=kvs.get,
        clock=lambda: now[0],
        sleep=lambda d: now.__setitem__(0, now[0] + d),
    )
    sess.get("b")
    with pytest.raises(ConsistencyError, match="did not appear"):
        sess.get("a")


def test_multi_writes_carry_dependencies_and_the_client_entry() -> None:
    kvs = Store(
        a=MultiKeyCausalLattice({"w": 1}, {}, {serializer.to_bytes(1)}),
        x=MultiKeyCausalLattice({"w": 3}, {}, {serializer.to_bytes("x")}),
        plain=lww(0, 1),
    )
    sess = CallSession("c", pb.MULTI, kvs, client_id="me")
    sess.get("a")
    sess.put("x", lww("y", 9))  # a plain value onto a causal key: a causal write
    x = kvs.data["x"]
    assert isinstance(x, MultiKeyCausalLattice)
    assert x.vector_clock == VectorClock({"w": 3, "me": 1})
    assert x.dependencies["a"] == VectorClock({"w": 1})
    sess.put("plain", lww(5, 10))  # an LWW key stays LWW
    assert isinstance(kvs.data["plain"], LWWPairLattice)
    out = sess.output_lattice("out", 42)
    assert out.vector_clock.get("me") == 2  # x's entry 1, incremented
    assert set(out.dependencies.keys()) == {"a", "x"}
    assert causal_values(out) == [42]


def test_concurrent_versions_are_seen_in_a_deterministic_order() -> None:
    a = MultiKeyCausalLattice({"p": 1}, {}, {serializer.to_bytes("zeta")})
    b = MultiKeyCausalLattice({"q": 1}, {}, {serializer.to_bytes("alpha")})
    assert causal_values(a.merge(b)) == causal_values(b.merge(a))
    assert sorted(causal_values(a.merge(b))) == ["alpha", "zeta"]


def test_fan_in_of_branches_that_read_two_versions_warns_and_keeps_the_first() -> None:
    kvs = Store(k=lww("v1", 1))
    left = CallSession("c", pb.SINGLE, kvs)
    left.get("k")
    kvs.put("k", lww("v2", 2))
    right = CallSession("c", pb.SINGLE, kvs)
    right.get("k")
    sink = CallSession("c", pb.SINGLE, kvs)
    msgs = []
    for s in (left, right):
        m = pb.CallSession()
        s.to_pb(m)
        msgs.append(m)
    sink.absorb(msgs)
    assert sink.branch_conflicts == 1
    assert val(sink.get("k")["k"]) == "v1"
