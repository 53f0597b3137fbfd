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
