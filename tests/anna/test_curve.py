"""anna.curve: the CurveZMQ handshake and MESSAGE boxes, without sockets."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anna.curve import (
    SMALL,
    CurveClient,
    CurveCodec,
    CurveError,
    CurveServer,
    decode_metadata,
    encode_metadata,
    error_body,
    keypair,
    parse_error,
    public_of,
)

SERVER = keypair()
CLIENT = keypair()


def pair(
    authorize=lambda key: key == CLIENT[0], server_key: bytes | None = None
) -> tuple[CurveClient, CurveServer]:
    client = CurveClient(server_key or SERVER[0], *CLIENT, {b"Socket-Type": b"PUSH"})
    server = CurveServer(*SERVER, authorize, {b"Socket-Type": b"PULL"})
    return client, server


def established() -> tuple[CurveClient, CurveServer]:
    client, server = pair()
    ready, props = server.initiate(client.welcome(server.hello(client.hello())))
    assert props == {b"socket-type": b"PUSH"}
    assert client.ready(ready) == {b"socket-type": b"PULL"}
    return client, server


def test_handshake_sizes_and_keys():
    client, server = pair()
    hello = client.hello()
    assert len(hello) == 200 and hello.startswith(b"\x05HELLO\x01\x00" + bytes(72))
    welcome = server.hello(hello)
    assert len(welcome) == 168 and welcome.startswith(b"\x07WELCOME")
    initiate = client.welcome(welcome)
    assert initiate.startswith(b"\x08INITIATE") and len(initiate) >= 257
    ready, _ = server.initiate(initiate)
    client.ready(ready)
    assert server.client_public == CLIENT[0]
    assert public_of(CLIENT[1]) == CLIENT[0]
    # The cookie key is forgotten once INITIATE is accepted.
    assert server.cookie_key is None


def test_messages_both_ways_with_increasing_nonces():
    client, server = established()
    assert client.codec and server.codec
    for i in range(5):
        body = client.codec.seal(b"m%d" % i, more=i % 2 == 0)
        assert server.codec.open(body) == (1 if i % 2 == 0 else 0, b"m%d" % i)
        assert client.codec.open(server.codec.seal(b"r%d" % i)) == (0, b"r%d" % i)
    assert client.codec.seal_parts([b"a", b"b"])[:8] == b"\x07MESSAGE"


@given(st.binary(max_size=2000), st.booleans())
def test_message_roundtrip(payload, more):
    key = bytes(range(32))
    sender = CurveCodec(key, is_server=False)
    receiver = CurveCodec(key, is_server=True)
    assert receiver.open(sender.seal(payload, more)) == (int(more), payload)


def _body(frame: bytes) -> bytes:
    """The MESSAGE body of a whole ZMTP frame (short or long header)."""
    if frame[0] & 0x02:
        assert struct.unpack(">Q", frame[1:9])[0] == len(frame) - 9
        return frame[9:]
    assert frame[1] == len(frame) - 2
    return frame[2:]


@given(st.binary(max_size=SMALL), st.booleans(), st.integers(0, 5))
def test_small_frames_in_the_codec_buffer_match_the_general_path(payload, more, at):
    """frame/frame_parts/open_at (the codec's C buffer) against seal/open, mixed on one
    stream: the same bodies, one nonce sequence."""
    key = bytes(range(32))
    sender = CurveCodec(key, is_server=False)
    receiver = CurveCodec(key, is_server=True)
    frame = sender.frame(payload, more)
    assert frame[0] & 0x01 == 0  # a frame of the ZMTP stream: "more" is inside the box
    body = _body(frame)
    assert body[:8] == b"\x07MESSAGE" and len(body) == len(payload) + 33
    assert receiver.open_at(b"\xaa" * at + body + b"tail", at, at + len(body)) == (
        int(more),
        payload,
    )
    parts = [payload[: len(payload) // 2], payload[len(payload) // 2 :]]
    assert receiver.open(_body(sender.frame_parts(parts))) == (0, payload)
    assert receiver.open_at(sender.seal(payload), 0, len(payload) + 33) == (0, payload)


def test_small_frame_header_sizes_and_fallback():
    key = bytes(range(32))
    sender = CurveCodec(key, is_server=False)
    receiver = CurveCodec(key, is_server=True)
    short = sender.frame(b"x" * 222)
    assert len(short) == 2 + 255  # the largest short frame
    long = sender.frame(b"x" * 223)
    assert long[0] == 0x02  # a long header from 256 bytes
    assert receiver.open(_body(short)) == (0, b"x" * 222)
    assert receiver.open(_body(long)) == (0, b"x" * 223)
    big = sender.seal(b"y" * (SMALL + 1))  # over SMALL: open_at falls back to open
    assert receiver.open_at(b"z" + bytes(big), 1, 1 + len(big)) == (0, b"y" * (SMALL + 1))


def test_open_at_refuses_replays_tampering_and_other_commands():
    client, server = established()
    assert client.codec and server.codec
    first = _body(client.codec.frame(b"one"))
    second = _body(client.codec.frame(b"two"))
    assert server.codec.open_at(second, 0, len(second)) == (0, b"two")
    for old in (first, second):
        with pytest.raises(CurveError, match="replay"):
            server.codec.open_at(old, 0, len(old))
    bad = bytearray(_body(client.codec.frame(b"three")))
    bad[-1] ^= 1
    with pytest.raises(CurveError, match="does not open"):
        server.codec.open_at(bytes(bad), 0, len(bad))
    with pytest.raises(CurveError, match="expected a MESSAGE"):
        server.codec.open_at(b"\x05READY" + bytes(40), 0, 46)
    with pytest.raises(CurveError, match="expected a MESSAGE"):
        server.codec.open_at(first[:32], 0, 32)
    last = _body(client.codec.frame(b"four"))  # the stream goes on after refusals
    assert server.codec.open_at(last, 0, len(last)) == (0, b"four")


def test_replayed_and_decreasing_nonces_are_refused():
    client, server = established()
    assert client.codec and server.codec
    first = client.codec.seal(b"one")
    second = client.codec.seal(b"two")
    server.codec.open(second)
    with pytest.raises(CurveError, match="replay"):
        server.codec.open(second)  # replayed
    with pytest.raises(CurveError, match="replay"):
        server.codec.open(first)  # older
    server.codec.open(client.codec.seal(b"three"))  # the stream goes on


def test_tampered_box_is_refused():
    client, server = established()
    assert client.codec and server.codec
    body = bytearray(client.codec.seal(b"payload"))
    body[-1] ^= 1
    with pytest.raises(CurveError, match="does not open"):
        server.codec.open(bytes(body))
    # A box of the other direction (server's prefix) does not open on the server.
    with pytest.raises(CurveError):
        server.codec.open(server.codec.seal(b"reflected"))


def test_wrong_server_key():
    client, server = pair(server_key=keypair()[0])
    with pytest.raises(CurveError, match="HELLO box"):
        server.hello(client.hello())


def test_server_impostor_fails_at_welcome():
    client = CurveClient(SERVER[0], *CLIENT, {})
    impostor = CurveServer(*keypair(), lambda k: True, {})
    # The impostor cannot even open HELLO (it is boxed to the real server key).
    with pytest.raises(CurveError):
        impostor.hello(client.hello())


def test_unknown_client_key_is_refused_with_a_reason():
    client, server = pair(authorize=lambda key: False)
    initiate = client.welcome(server.hello(client.hello()))
    with pytest.raises(CurveError) as info:
        server.initiate(initiate)
    assert info.value.reason == "400"
    assert server.codec is None and server.client_public is None
    with pytest.raises(CurveError, match="refused"):
        client.ready(error_body(info.value.reason))


def test_vouch_must_match_the_claimed_key():
    """A client claiming someone else's public key cannot make the vouch."""
    other_public, _ = keypair()
    liar = CurveClient(SERVER[0], other_public, CLIENT[1], {})
    server = CurveServer(*SERVER, lambda k: k == other_public, {})
    with pytest.raises(CurveError, match="vouch"):
        server.initiate(liar.welcome(server.hello(liar.hello())))


def test_cookie_from_another_connection_is_refused():
    c1, s1 = pair()
    c2, s2 = pair()
    s1.hello(c1.hello())
    welcome2 = s2.hello(c2.hello())
    with pytest.raises(CurveError, match="cookie"):
        s1.initiate(c2.welcome(welcome2))


@pytest.mark.parametrize("cut", [0, 1, 6, 8, 100, 199])
def test_truncated_hello(cut):
    client, server = pair()
    with pytest.raises(CurveError):
        server.hello(client.hello()[:cut])


@pytest.mark.parametrize("cut", [0, 9, 104, 112, 200, 256])
def test_truncated_initiate(cut):
    client, server = pair()
    initiate = client.welcome(server.hello(client.hello()))
    with pytest.raises(CurveError):
        server.initiate(initiate[:cut])


@pytest.mark.parametrize("cut", [0, 8, 24, 100, 167])
def test_truncated_welcome_and_ready(cut):
    client, server = pair()
    welcome = server.hello(client.hello())
    with pytest.raises(CurveError):
        client.welcome(welcome[:cut])
    client2, server2 = pair()
    ready, _ = server2.initiate(client2.welcome(server2.hello(client2.hello())))
    if cut < len(ready):
        with pytest.raises(CurveError):
            client2.ready(ready[:cut])


def test_out_of_order_commands():
    client, server = pair()
    with pytest.raises(CurveError, match="before HELLO"):
        server.initiate(b"\x08INITIATE" + bytes(300))
    hello = client.hello()
    server.hello(hello)
    with pytest.raises(CurveError, match="second HELLO"):
        server.hello(hello)
    with pytest.raises(CurveError):
        CurveClient(SERVER[0], *CLIENT, {}).ready(b"\x05READY" + bytes(40))


def test_initiate_replaying_hello_nonce_is_refused():
    client, server = pair()
    hello = client.hello()
    welcome = server.hello(hello)
    client.nonce = 1  # INITIATE reuses HELLO's nonce
    with pytest.raises(CurveError):
        server.initiate(client.welcome(welcome))


def test_metadata_and_error_roundtrip():
    props = {b"Socket-Type": b"PULL", b"Identity": b""}
    assert decode_metadata(encode_metadata(props)) == {b"socket-type": b"PULL", b"identity": b""}
    with pytest.raises(CurveError):
        decode_metadata(b"\x0bSocket-Type" + struct.pack(">I", 10) + b"abc")
    assert parse_error(error_body("400")) == "400"
    assert parse_error(b"\x05READY") is None


def test_bad_key_lengths():
    with pytest.raises(ValueError):
        CurveClient(b"short", *CLIENT, {})
    with pytest.raises(ValueError):
        CurveServer(SERVER[0], b"x" * 31, lambda k: True, {})
