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


@given(
    st.integers(0, 2),
    st.text(max_size=20),
    st.integers(0, 6),
    st.binary(max_size=300),
    st.integers(0, 2**32 - 1),
    st.text(max_size=30),
    st.text(max_size=30),
)
def test_fast_request_parse_matches_protobuf(
    rtype: int, key: str, lt: int, payload: bytes, cache: int, addr: str, rid: str
) -> None:
    """The shard's hand decoder reads what protobuf writes, from bytes or a view."""
    msg = pb.KeyRequest(
        type=rtype,  # type: ignore[arg-type]
        tuples=[pb.KeyTuple(key=key, lattice_type=lt, payload=payload, address_cache_size=cache)],  # type: ignore[arg-type]
        response_address=addr,
        request_id=rid,
    )
    data = msg.SerializeToString()
    want = (rtype, key, lt, payload, cache, addr, rid)
    assert wire.parse_single_key_request(data) == want
    assert wire.parse_single_key_request(memoryview(data)) == want


@given(st.binary(max_size=200))
def test_fast_request_parse_agrees_with_protobuf_on_garbage(data: bytes) -> None:
    """On any bytes the hand decoder either declines (None) or agrees with protobuf."""
    got = wire.parse_single_key_request(data)
    if got is None:
        return
    msg = wire.decode_key_request(data)  # must not raise: the bytes are valid
    t = msg.tuples[0]
    assert len(msg.tuples) == 1
    assert got == (
        msg.type,
        t.key,
        t.lattice_type,
        t.payload,
        t.address_cache_size,
        msg.response_address,
        msg.request_id,
    )


def test_fast_request_parse_declines_unusual_shapes() -> None:
    two = pb.KeyRequest(type=pb.GET, tuples=[pb.KeyTuple(key="a"), pb.KeyTuple(key="b")])
    assert wire.parse_single_key_request(two.SerializeToString()) is None
    none = pb.KeyRequest(type=pb.GET, response_address="x")
    assert wire.parse_single_key_request(none.SerializeToString()) is None
    err = pb.KeyRequest(type=pb.GET, tuples=[pb.KeyTuple(key="a", error=pb.KEY_DNE)])
    assert wire.parse_single_key_request(err.SerializeToString()) is None
    ok = pb.KeyRequest(type=pb.GET, tuples=[pb.KeyTuple(key="a")]).SerializeToString()
    assert wire.parse_single_key_request(ok + b"\x08\x01") is None  # a repeated field
    assert wire.parse_single_key_request(ok[:-1]) is None  # truncated
    assert wire.parse_single_key_request(b"") is None
    bad_utf8 = b"\x08\x01\x12\x03\x0a\x01\xff"
    assert wire.parse_single_key_request(bad_utf8) is None


@given(
    st.integers(1, 2),
    st.text(max_size=20),
    st.integers(0, 6),
    st.integers(0, 5),
    st.binary(max_size=300),
    st.booleans(),
    st.text(max_size=30),
)
def test_fast_response_encode_and_parse_match_protobuf(
    rtype: int, key: str, lt: int, error: int, payload: bytes, inval: bool, rid: str
) -> None:
    """The shard's hand-encoded reply is byte-identical to protobuf's, and the
    client's hand decoder reads it back."""
    got = b"".join(wire.single_key_response(rtype, key, lt, error, payload, inval, rid))
    want = pb.KeyResponse(
        type=rtype,  # type: ignore[arg-type]
        tuples=[
            pb.KeyTuple(key=key, lattice_type=lt, error=error, payload=payload, invalidate=inval)  # type: ignore[arg-type]
        ],
        response_id=rid,
    ).SerializeToString()
    assert got == want
    assert wire.parse_single_key_response(got) == (rtype, key, lt, error, payload, inval, rid)


@given(st.binary(max_size=200))
def test_fast_response_parse_agrees_with_protobuf_on_garbage(data: bytes) -> None:
    got = wire.parse_single_key_response(data)
    if got is None:
        return
    msg = wire.decode_key_response(data)
    t = msg.tuples[0]
    assert len(msg.tuples) == 1 and msg.error == 0
    assert got == (
        msg.type,
        t.key,
        t.lattice_type,
        t.error,
        t.payload,
        t.invalidate,
        msg.response_id,
    )


@given(st.text(max_size=10), st.binary(max_size=20), st.integers(0, 200), st.integers(0, 255))
def test_fast_parsers_agree_with_protobuf_on_corrupted_messages(
    key: str, payload: bytes, where: int, byte: int
) -> None:
    """One corrupted byte of a real message: decline, or decode exactly as protobuf."""
    req = pb.KeyRequest(
        type=pb.PUT,
        tuples=[pb.KeyTuple(key=key, lattice_type=pb.LWW, payload=payload, address_cache_size=1)],
        response_address="tcp://127.0.0.1:5",
        request_id="r-1",
    ).SerializeToString()
    resp = b"".join(wire.single_key_response(pb.GET, key, pb.LWW, 0, payload, True, "r-1"))
    for data, parse, decode in (
        (req, wire.parse_single_key_request, wire.decode_key_request),
        (resp, wire.parse_single_key_response, wire.decode_key_response),
    ):
        bad = bytearray(data)
        bad[where % len(bad)] = byte
        got = parse(bytes(bad))
        if got is None:
            continue
        msg = decode(bytes(bad))
        assert len(msg.tuples) == 1
        t = msg.tuples[0]
        if parse is wire.parse_single_key_request:
            want = (msg.type, t.key, t.lattice_type, t.payload, t.address_cache_size)
            assert got == (*want, msg.response_address, msg.request_id)
        else:
            want = (msg.type, t.key, t.lattice_type, t.error, t.payload, t.invalidate)
            assert got == (*want, msg.response_id)


@given(st.integers(0, 2**64 - 1), st.binary(max_size=300))
def test_fast_lww_parse_matches_protobuf(ts: int, value: bytes) -> None:
    data = pb.LWWValue(timestamp=ts, value=value).SerializeToString()
    assert wire.parse_lww_payload(data) == (ts, value)


@given(st.binary(max_size=60))
def test_fast_lww_parse_declines_or_agrees(data: bytes) -> None:
    from lattices import codec
    from lattices.base import LatticeError

    got = wire.parse_lww_payload(data)
    if got is None:
        return
    try:
        lat = codec.from_payload(pb.LWW, data)
    except LatticeError:
        raise AssertionError(f"fast parse accepted {data!r}, protobuf path rejects it") from None
    assert (lat.timestamp, lat.value) == got  # type: ignore[attr-defined]
    assert wire.parse_lww_payload(data + b"\x12\x00") is None  # non-canonical
