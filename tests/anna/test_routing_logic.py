"""Routing state machine: answers, NO_SERVERS, joins, failure detection, departs."""

from __future__ import annotations

from anna import wire
from anna.membership import digest, make_node, merge_membership
from anna.proto import anna_pb2 as pb
from anna.routing.logic import RoutingState

R1 = "tcp://127.0.0.1:6450"
R2 = "tcp://127.0.0.2:6450"


def _node(ip: str, epoch: int = 1, routing: str = "") -> pb.StorageNode:
    return make_node(ip, 6200, 6250, 2, epoch, routing)


def _answer(sends: list) -> pb.KeyAddressResponse:  # type: ignore[type-arg]
    (s,) = sends
    assert s.address == "tcp://client:1" and len(s.frames) == 1
    return pb.KeyAddressResponse.FromString(s.frames[0])


def test_no_servers() -> None:
    st = RoutingState(R1, None)
    resp = _answer(
        st.handle_address_request(
            pb.KeyAddressRequest(response_address="tcp://client:1", keys=["k"], request_id="x")
        )
    )
    assert resp.error == pb.NO_SERVERS and resp.response_id == "x"


def test_addresses_are_full_tcp_addresses() -> None:
    st = RoutingState(R1, _node("127.0.0.1", routing=R1))
    resp = _answer(
        st.handle_address_request(
            pb.KeyAddressRequest(response_address="tcp://client:1", keys=["a", "b"], request_id="7")
        )
    )
    assert resp.response_id == "7" and resp.error == pb.NO_ERROR
    assert [a.key for a in resp.addresses] == ["a", "b"]
    for a in resp.addresses:
        (ip,) = a.ips
        assert ip in ("tcp://127.0.0.1:6200", "tcp://127.0.0.1:6201")
    assert st.handle_address_request(pb.KeyAddressRequest(keys=["a"])) == []


def test_join_failure_and_rejoin() -> None:
    a = RoutingState(R1, _node("127.0.0.1", routing=R1), failure_timeout_s=3.0)
    b = RoutingState(R2, _node("127.0.0.2", routing=R2), seeds=[R1])
    a.start(0.0)
    joins = [s for s in b.start(0.0) if s.frames[0] == wire.KIND_JOIN]
    assert [s.address for s in joins] == [R1]
    out = a.handle_peer_membership(pb.Membership.FromString(joins[0].frames[1]), 0.1)
    assert len(a.placement.live) == 2
    # a tells b's shards and b's routing about the new table
    assert any(s.address == "tcp://127.0.0.2:6250" for s in out)
    back = [s for s in out if s.address == R2]
    b.handle_peer_membership(pb.Membership.FromString(back[0].frames[1]), 0.2)
    assert digest(a.membership) == digest(b.membership)
    # heartbeats from node 1 only: node 2 is declared dead after the timeout
    for t in (1.0, 2.0, 3.0):
        a.handle_heartbeat(pb.Heartbeat(node_id="127.0.0.1:6200"), t, 0)
        assert len(a.placement.live) == 2
        a.tick(t)
    a.handle_heartbeat(pb.Heartbeat(node_id="127.0.0.1:6200"), 3.5, 0)
    a.tick(3.5)
    assert [n.node_id for n in a.placement.live] == ["127.0.0.1:6200"]
    # node 2's own routing hears it was declared dead but its shards are alive: rejoin
    b.handle_peer_membership(a.membership, 3.6)
    assert [n.node_id for n in b.placement.live] == ["127.0.0.1:6200"]
    b.handle_heartbeat(pb.Heartbeat(node_id="127.0.0.2:6200"), 3.7, 10**18)
    assert len(b.placement.live) == 2
    merge_membership(a.membership, b.membership)
    a._rebuild()
    assert len(a.placement.live) == 2


def test_partition_heal_does_not_flap() -> None:
    """Both sides of a healed partition declared the other dead; when the other comes
    back (a newer epoch), its failure clock restarts instead of tripping at once."""
    a = RoutingState(R1, _node("127.0.0.1", routing=R1), failure_timeout_s=3.0)
    b = RoutingState(R2, _node("127.0.0.2", routing=R2), seeds=[R1])
    a.start(0.0)
    join = next(s for s in b.start(0.0) if s.frames[0] == wire.KIND_JOIN)
    a.handle_peer_membership(pb.Membership.FromString(join.frames[1]), 0.1)
    b.handle_peer_membership(a.membership, 0.1)
    a.handle_heartbeat(pb.Heartbeat(node_id="127.0.0.2:6200"), 0.5, 0)
    # the link is cut: each hears only its own node
    for t in (1.0, 2.0, 3.0, 4.0):
        a.handle_heartbeat(pb.Heartbeat(node_id="127.0.0.1:6200"), t, 0)
        b.handle_heartbeat(pb.Heartbeat(node_id="127.0.0.2:6200"), t, 0)
        a.tick(t)
        b.tick(t)
    assert [n.node_id for n in a.placement.live] == ["127.0.0.1:6200"]
    assert [n.node_id for n in b.placement.live] == ["127.0.0.2:6200"]
    # healed: the tables meet; a routing that heard its own node recently keeps it live
    a.handle_peer_membership(b.membership, 4.2)
    assert "127.0.0.1:6200" in a.placement.nodes, "a served NO_SERVERS after the heal"
    # later ones rejoin through their own node's heartbeat
    a.handle_peer_membership(b.membership, 10.0)
    b.handle_peer_membership(a.membership, 10.0)
    a.handle_heartbeat(pb.Heartbeat(node_id="127.0.0.1:6200"), 10.1, 10**18)
    b.handle_heartbeat(pb.Heartbeat(node_id="127.0.0.2:6200"), 10.1, 10**18 + 1)
    a.handle_peer_membership(b.membership, 10.2)
    b.handle_peer_membership(a.membership, 10.2)
    assert len(a.placement.live) == 2 and len(b.placement.live) == 2
    a.tick(10.3)
    b.tick(10.3)
    assert len(a.placement.live) == 2 and len(b.placement.live) == 2


def test_depart() -> None:
    a = RoutingState(R1, _node("127.0.0.1", routing=R1))
    merge_membership(a.membership, pb.Membership(nodes=[_node("127.0.0.2", routing=R2)]))
    a._rebuild()
    out = a.handle_depart(pb.Depart(node_id="127.0.0.2:6200"), 1.0)
    assert [n.node_id for n in a.placement.live] == ["127.0.0.1:6200"]
    # the departed node's shards are told (so they hand their keys off)
    assert "tcp://127.0.0.2:6250" in {s.address for s in out}


def test_heartbeat_with_stale_digest_gets_the_table() -> None:
    a = RoutingState(R1, _node("127.0.0.1", routing=R1))
    out = a.handle_heartbeat(
        pb.Heartbeat(node_id="127.0.0.1:6200", gossip_address="tcp://127.0.0.1:6250"), 0.0, 0
    )
    assert out and out[0].frames[0] == wire.KIND_MEMBERSHIP
    same = a.handle_heartbeat(
        pb.Heartbeat(
            node_id="127.0.0.1:6200",
            gossip_address="tcp://127.0.0.1:6250",
            membership_digest=a.digest,
        ),
        0.0,
        0,
    )
    assert same == []


def test_membership_merge_is_order_independent() -> None:
    x = pb.Membership(nodes=[_node("127.0.0.1", 1), _node("127.0.0.2", 5)])
    y = pb.Membership(nodes=[_node("127.0.0.2", 5), _node("127.0.0.3", 2)])
    dead = _node("127.0.0.2", 5)
    dead.departed = True
    z = pb.Membership(nodes=[dead])
    orders = [(x, y, z), (z, y, x), (y, z, x)]
    digests = set()
    for order in orders:
        m = pb.Membership()
        for part in order:
            merge_membership(m, part)
        assert not merge_membership(m, x)  # idempotent
        digests.add(digest(m))
    assert len(digests) == 1
