from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cloudburst.shared import serializer
from cloudburst.shared.errors import SerializationError
from cloudburst.shared.proto import cloudburst_pb2 as pb


def test_bytes_pass_through_and_strings_are_utf8() -> None:
    assert serializer.dumps(b"\x00raw") == (serializer.BYTES, b"\x00raw")
    assert serializer.dumps("héllo") == (serializer.STRING, "héllo".encode())


def test_numpy_is_not_pickled() -> None:
    arr = np.arange(1000, dtype=np.float64)
    kind, body = serializer.dumps(arr)
    assert kind == serializer.NUMPY
    assert arr.tobytes() in body  # the raw buffer, verbatim
    assert len(body) < arr.nbytes + 64
    out = serializer.loads(kind, body)
    assert out.dtype == arr.dtype and np.array_equal(out, arr)
    out[0] = 5.0  # decoded arrays are writable


def test_non_contiguous_and_object_arrays() -> None:
    arr = np.arange(20).reshape(4, 5)[:, ::2]
    assert np.array_equal(serializer.from_bytes(serializer.to_bytes(arr)), arr)
    obj = np.array([{"a": 1}, None], dtype=object)
    kind, _ = serializer.dumps(obj)
    assert kind == serializer.DEFAULT


@settings(max_examples=200)
@given(
    hnp.arrays(
        dtype=st.sampled_from([np.int8, np.int64, np.float32, np.float64, np.complex128, np.bool_]),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, max_side=5),
    )
)
def test_numpy_round_trip(arr: np.ndarray) -> None:
    out = serializer.from_bytes(serializer.to_bytes(arr))
    assert out.shape == arr.shape and out.dtype == arr.dtype
    assert np.array_equal(out, arr, equal_nan=arr.dtype.kind in "fc")


@given(
    st.recursive(
        st.none() | st.integers() | st.text() | st.binary() | st.floats(allow_nan=False),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
        max_leaves=20,
    )
)
def test_python_values_round_trip(value: object) -> None:
    assert serializer.from_bytes(serializer.to_bytes(value)) == value


def test_functions_round_trip() -> None:
    fn = serializer.from_bytes(serializer.to_bytes(lambda x: x + 1))
    assert fn(1) == 2


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        (serializer.DEFAULT, b"not a pickle"),
        (serializer.NUMPY, b"garbage"),
        (serializer.NUMPY, b"CBNP\x03\x00\x01<f8" + b"\x10\x00\x00\x00\x00\x00\x00\x00"),
        (serializer.STRING, b"\xff\xfe"),
        (99, b""),
    ],
)
def test_garbage_raises_our_error(kind: int, body: bytes) -> None:
    with pytest.raises(SerializationError):
        serializer.loads(kind, body)


def test_garbage_value_message() -> None:
    with pytest.raises(SerializationError):
        serializer.from_bytes(b"\xff\xff\xff")


def test_unpicklable_value() -> None:
    import threading

    with pytest.raises(SerializationError, match="cannot serialize"):
        serializer.dumps(threading.Lock())


@pytest.mark.parametrize(
    "obj",
    [
        np.arange(20_000, dtype=np.float64),
        np.arange(30_000, dtype=np.int32).reshape(100, 300)[:, ::2],  # not contiguous
        {"w": np.ones(20_000), "tag": "t"},  # out-of-band buffers
    ],
)
def test_large_values_are_joined_into_the_same_value_message(obj: object) -> None:
    """to_bytes builds a large Value by one join: protobuf parses it back to the
    same message, and it decodes to the value (a writable copy from bytes)."""
    data = serializer.to_bytes(obj)
    msg = pb.Value()
    msg.ParseFromString(data)
    assert msg.SerializeToString() == data
    kind, body = serializer.dumps(obj)
    assert msg.type == kind
    back = serializer.from_bytes(data)
    if isinstance(obj, dict):
        assert np.array_equal(back["w"], obj["w"]) and back["w"].flags.writeable
    else:
        assert msg.body == body
        assert np.array_equal(back, obj) and back.flags.writeable


@pytest.mark.parametrize("ts", [0, 1, 2**63, 12_345_678_901_234])
@pytest.mark.parametrize("n", [70_000, 300_001])
def test_large_lww_payload_is_protobufs_encoding(ts: int, n: int) -> None:
    from anna.proto import anna_pb2
    from lattices.lww import LWWPairLattice

    value = bytes(range(256)) * (n // 256) + b"x" * (n % 256)
    lat = LWWPairLattice(ts, value)
    assert lat.serialize() == anna_pb2.LWWValue(timestamp=ts, value=value).SerializeToString()
    assert LWWPairLattice.parse(lat.serialize()).value == value
