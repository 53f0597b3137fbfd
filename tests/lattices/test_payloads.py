"""Anna payload encodings: exact round trips, canonical bytes, clear errors on garbage."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st
from lattice_strategies import LAWS, PAYLOAD_STRATEGIES

from anna.proto import anna_pb2
from lattices import (
    LATTICE_CLASSES,
    LatticeDecodeError,
    LatticeError,
    from_payload,
    to_payload,
)

NAMES = sorted(PAYLOAD_STRATEGIES)


@pytest.mark.parametrize("name", NAMES)
@LAWS
@given(data=st.data())
def test_round_trip(name: str, data: st.DataObject) -> None:
    x = data.draw(PAYLOAD_STRATEGIES[name])
    payload = x.serialize()
    assert isinstance(payload, bytes)
    y = type(x).parse(payload)
    assert y == x
    assert type(y) is type(x)
    assert y.reveal() == x.reveal()
    assert y.serialize() == payload  # canonical: equal lattices, equal bytes
    t, p = to_payload(x)
    assert (t, p) == (type(x).lattice_type, payload)
    assert from_payload(t, p) == x


@pytest.mark.parametrize("name", NAMES)
@settings(LAWS, max_examples=100)
@given(data=st.data())
def test_round_trip_of_merged(name: str, data: st.DataObject) -> None:
    s = PAYLOAD_STRATEGIES[name]
    x = data.draw(s).merge(data.draw(s)).merge(data.draw(s))
    payload = x.serialize()
    y = type(x).parse(payload)
    assert y.serialize() == payload
    assert y.reveal() == x.reveal()


@pytest.mark.parametrize("lattice_type", sorted(LATTICE_CLASSES))
@settings(LAWS, max_examples=150)
@given(garbage=st.binary(min_size=1, max_size=40))
def test_garbage_raises_our_error(lattice_type: int, garbage: bytes) -> None:
    cls = LATTICE_CLASSES[lattice_type]
    try:
        x = from_payload(lattice_type, garbage)
    except LatticeDecodeError as exc:
        assert not isinstance(exc, DecodeError)
        assert str(exc)
    except Exception as exc:  # pragma: no cover - the failure we test for
        pytest.fail(f"{type(exc).__name__} escaped from_payload: {exc}")
    else:
        # Some random bytes are a valid encoding; then they must decode to this type.
        assert type(x) is cls


@pytest.mark.parametrize(
    "garbage",
    [b"\xff", b"\xff\xff\xff\xff", b"\x0a\x05ab", b"\x08", b"\x80\x80\x80", b"\x12\x7f"],
)
@pytest.mark.parametrize("lattice_type", sorted(LATTICE_CLASSES))
def test_known_garbage_raises(lattice_type: int, garbage: bytes) -> None:
    with pytest.raises(LatticeDecodeError):
        from_payload(lattice_type, garbage)


@pytest.mark.parametrize("name", NAMES)
@settings(LAWS, max_examples=50)
@given(data=st.data())
def test_payload_of_another_type(name: str, data: st.DataObject) -> None:
    """A payload read as another type raises our error or (when the bytes happen to be
    a valid encoding of that type too, which protobuf cannot rule out) yields that type."""
    payload = data.draw(PAYLOAD_STRATEGIES[name]).serialize()
    for lattice_type, cls in LATTICE_CLASSES.items():
        try:
            y = from_payload(lattice_type, payload)
        except LatticeDecodeError:
            continue
        assert type(y) is cls


def test_specific_cross_type_payloads_raise() -> None:
    lww = anna_pb2.LWWValue(timestamp=5, value=b"abc").SerializeToString()
    st_ = anna_pb2.SetValue(values=[b"a", b"b"]).SerializeToString()
    prio = anna_pb2.PriorityValue(priority=1.5, value=b"x").SerializeToString()
    with pytest.raises(LatticeDecodeError):
        from_payload(anna_pb2.PRIORITY, lww)
    with pytest.raises(LatticeDecodeError):
        from_payload(anna_pb2.LWW, st_)
    with pytest.raises(LatticeDecodeError):
        from_payload(anna_pb2.SET, lww)
    with pytest.raises(LatticeDecodeError):
        from_payload(anna_pb2.LWW, prio)


@pytest.mark.parametrize("lattice_type", [anna_pb2.NONE, 7, 99, -1])
def test_none_or_unknown_type_raises(lattice_type: int) -> None:
    with pytest.raises(LatticeDecodeError):
        from_payload(lattice_type, b"")


@pytest.mark.parametrize("bad", ["a string", None, 42])
def test_non_bytes_payload_raises(bad: Any) -> None:
    for lattice_type in LATTICE_CLASSES:
        with pytest.raises(LatticeDecodeError):
            from_payload(lattice_type, bad)


def test_decode_error_is_a_lattice_error_and_value_error() -> None:
    assert issubclass(LatticeDecodeError, LatticeError)
    assert issubclass(LatticeDecodeError, ValueError)
