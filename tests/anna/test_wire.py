"""Wire codec: round trips and clean errors on garbage."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anna import wire
from anna.proto import anna_pb2 as pb
from cloudburst.shared.errors import WireError


@given(
    st.lists(st.tuples(st.text(), st.binary(), st.integers(0, 6)), max_size=5),
    st.text(),
    st.text(),
)
def test_key_request_round_trip(tuples: list[tuple[str, bytes, int]], addr: str, rid: str) -> None:
    req = pb.KeyRequest(type=pb.PUT, response_address=addr, request_id=rid)
    for k, p, t in tuples:
        req.tuples.add(key=k, payload=p, lattice_type=t)  # type: ignore[arg-type]
    assert wire.decode_key_request(req.SerializeToString()) == req


@given(st.binary(max_size=200))
def test_garbage_never_raises_anything_but_wire_error(data: bytes) -> None:
    for decode in (wire.decode_key_request, wire.decode_address_request, wire.decode_subscription):
        try:
            decode(data)
        except WireError:
            pass
    try:
        wire.decode_internal([b"gossip", data])
    except WireError:
        pass


def test_internal_frames() -> None:
    msg = pb.Gossip(tuples=[pb.KeyTuple(key="k")], sender="s")
    kind, back = wire.decode_internal(wire.encode_internal(wire.KIND_GOSSIP, msg))
    assert kind == wire.KIND_GOSSIP and back == msg
    with pytest.raises(WireError):
        wire.decode_internal([b"nope", b""])
    with pytest.raises(WireError):
        wire.decode_internal([b"gossip"])


@pytest.mark.parametrize(
    ("addr", "ok"),
    [
        ("tcp://127.0.0.1:6200", True),
        ("ipc:///tmp/x", True),
        ("tcp://127.0.0.1", False),
        ("tcp://:5", False),
        ("tcp://h:99999", False),
        ("inproc://x", False),
        ("", False),
    ],
)
def test_valid_address(addr: str, ok: bool) -> None:
    assert wire.valid_address(addr) is ok


@given(
    st.integers(0, 2),
    st.text(max_size=20),
    st.integers(0, 6),
    st.binary(max_size=300),
    st.integers(0, 300),
    st.text(max_size=30),
    st.text(max_size=30),
    st.integers(0, 2**64 - 1),
)
def test_hand_encoded_request_matches_protobuf(
    rtype: int, key: str, lt: int, payload: bytes, cache: int, addr: str, rid: str, ts: int
) -> None:
    """The client's fast-path encoding is byte-identical to the generated classes'."""
    got = b"".join(
        wire.key_request_parts(
            rtype, key, lt, [payload[:7], payload[7:]], cache, wire.string_field(3, addr), rid
        )
    )
    want = pb.KeyRequest(
        type=rtype,  # type: ignore[arg-type]
        tuples=[pb.KeyTuple(key=key, lattice_type=lt, payload=payload, address_cache_size=cache)],  # type: ignore[arg-type]
        response_address=addr,
        request_id=rid,
    ).SerializeToString()
    assert got == want
    lww = b"".join(wire.lww_payload_parts(ts, payload))
    assert lww == pb.LWWValue(timestamp=ts, value=payload).SerializeToString()
