"""Round trips of the cache framing (cache.protocol)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cache import protocol
from cloudburst.shared.errors import WireError

keys = st.text(min_size=1, max_size=20)


@given(st.lists(keys, min_size=1, max_size=5))
def test_get_round_trip(ks: list[str]) -> None:
    frames = protocol.encode_get(b"r", ks)
    assert frames[:2] == [protocol.OP_GET, b"r"]
    assert protocol.decode_get_args(frames[2:]) == ks


@given(st.lists(st.tuples(keys, st.integers(0, 6), st.binary(max_size=50)), min_size=1, max_size=5))
def test_put_round_trip(tuples: list[tuple[str, int, bytes]]) -> None:
    frames = protocol.encode_put(b"r", tuples)
    assert protocol.decode_put_args(frames[2:]) == tuples


@given(
    st.lists(st.tuples(st.integers(0, 6), st.integers(0, 5), st.binary(max_size=50)), max_size=5)
)
def test_get_reply_round_trip(results: list[tuple[int, int, bytes]]) -> None:
    op, rid, body = protocol.decode_reply(protocol.reply_get(b"x", results))
    assert (op, rid) == (protocol.OP_GET, b"x")
    assert protocol.decode_get_body(body, len(results)) == results


def test_error_reply_and_malformed() -> None:
    with pytest.raises(WireError, match="nope"):
        protocol.decode_reply(protocol.reply_error(b"get", b"1", "nope"))
    with pytest.raises(WireError):
        protocol.decode_put_args([b"k", b"\x01"])
    with pytest.raises(WireError):
        protocol.decode_get_args([])
    with pytest.raises(WireError):
        protocol.decode_put_args([b"k", b"\x01\x02", b"p"])


def test_ipc_address_is_short_and_stable() -> None:
    a = protocol.ipc_address("/tmp/" + "d" * 120, "node")
    assert a == protocol.ipc_address("/tmp/" + "d" * 120, "node")
    assert protocol.ipc_address("/x", "a/b c") == "ipc:///x/cache-a_b_c.sock"


@given(
    st.lists(
        st.tuples(
            keys,
            st.sampled_from([b"", b"v" * 16]),
            st.integers(0, 6),
            st.sampled_from([0, 1, 3, 4, 255]),
            st.binary(max_size=30),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_getv_round_trip(items: list[tuple[str, bytes, int, int, bytes]]) -> None:
    frames = protocol.encode_getv(b"r", [i[0] for i in items], [i[1] for i in items])
    assert protocol.decode_getv_args(frames[2:]) == ([i[0] for i in items], [i[1] for i in items])
    results = [(lt, err, payload if err == 0 else b"", v) for _, v, lt, err, payload in items]
    op, rid, body = protocol.decode_reply(protocol.reply_getv(b"r", results))
    assert protocol.decode_getv_body(body, len(items)) == results


def test_getv_malformed() -> None:
    with pytest.raises(WireError):
        protocol.decode_getv_args([b"\x05\x00\x00\x00ab", b""])
    with pytest.raises(WireError):
        protocol.decode_getv_body([b"\x01\x00\x00"], 1)  # NO_ERROR but no payload frame


@given(st.lists(st.tuples(keys, st.integers(0, 6), st.binary(max_size=50)), min_size=1, max_size=5))
def test_note_round_trip(tuples: list[tuple[str, int, bytes]]) -> None:
    frames = protocol.encode_note(b"r", tuples)
    assert frames[:2] == [protocol.OP_NOTE, b"r"] and len(frames) == 3  # one frame
    assert protocol.decode_note_args(frames[2:]) == tuples
    with pytest.raises(WireError):
        protocol.decode_note_args([frames[2][:-1]])  # truncated
