"""Generated protobuf code is current, and the KVS schema is byte-compatible with Anna."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from anna.proto import anna_pb2
from cloudburst.shared.proto import cloudburst_pb2

ROOT = Path(__file__).resolve().parents[2]
GENERATED = [
    "anna/proto/anna_pb2.py",
    "anna/proto/anna_pb2.pyi",
    "cloudburst/shared/proto/cloudburst_pb2.py",
    "cloudburst/shared/proto/cloudburst_pb2.pyi",
]


def test_generated_code_is_current(tmp_path: Path) -> None:
    subprocess.run(
        ["bash", str(ROOT / "scripts/gen-protos.sh"), str(tmp_path)],
        check=True,
        env={**os.environ, "PYTHON": sys.executable},
        timeout=60,
    )
    stale = [rel for rel in GENERATED if (tmp_path / rel).read_bytes() != (ROOT / rel).read_bytes()]
    assert not stale, f"stale generated code, run scripts/gen-protos.sh: {stale}"


# --- a minimal protobuf encoder written from the field table in PROTOCOL.md ---


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field_varint(num: int, value: int) -> bytes:
    return _varint(num << 3 | 0) + _varint(value)


def _field_bytes(num: int, value: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(value)) + value


def _hand_key_request() -> bytes:
    lww = _field_varint(1, 1234567890123) + _field_bytes(2, b"hello")
    tup = (
        _field_bytes(1, b"k1")  # key
        + _field_varint(2, 1)  # lattice_type LWW
        + _field_bytes(4, lww)  # payload
        + _field_varint(5, 3)  # address_cache_size
    )
    return (
        _field_varint(1, 2)  # type PUT
        + _field_bytes(2, tup)  # tuples
        + _field_bytes(3, b"tcp://127.0.0.1:6460")  # response_address
        + _field_bytes(4, b"req-1")  # request_id
    )


def test_hand_encoded_key_request_parses() -> None:
    req = anna_pb2.KeyRequest()
    req.ParseFromString(_hand_key_request())
    assert req.type == anna_pb2.PUT
    assert req.response_address == "tcp://127.0.0.1:6460"
    assert req.request_id == "req-1"
    (tup,) = req.tuples
    assert (tup.key, tup.lattice_type, tup.address_cache_size) == ("k1", anna_pb2.LWW, 3)
    lww = anna_pb2.LWWValue()
    lww.ParseFromString(tup.payload)
    assert (lww.timestamp, lww.value) == (1234567890123, b"hello")


def test_our_key_request_serializes_to_anna_bytes() -> None:
    lww = anna_pb2.LWWValue(timestamp=1234567890123, value=b"hello")
    req = anna_pb2.KeyRequest(
        type=anna_pb2.PUT,
        tuples=[
            anna_pb2.KeyTuple(
                key="k1",
                lattice_type=anna_pb2.LWW,
                payload=lww.SerializeToString(),
                address_cache_size=3,
            )
        ],
        response_address="tcp://127.0.0.1:6460",
        request_id="req-1",
    )
    assert req.SerializeToString() == _hand_key_request()


def test_anna_enums_match_protocol() -> None:
    assert [anna_pb2.RT_UNSPECIFIED, anna_pb2.GET, anna_pb2.PUT] == [0, 1, 2]
    assert [
        anna_pb2.NONE,
        anna_pb2.LWW,
        anna_pb2.SET,
        anna_pb2.SINGLE_CAUSAL,
        anna_pb2.MULTI_CAUSAL,
        anna_pb2.ORDERED_SET,
        anna_pb2.PRIORITY,
    ] == list(range(7))
    assert [
        anna_pb2.NO_ERROR,
        anna_pb2.KEY_DNE,
        anna_pb2.WRONG_THREAD,
        anna_pb2.TIMEOUT,
        anna_pb2.LATTICE,
        anna_pb2.NO_SERVERS,
    ] == list(range(6))


def test_key_address_response_field_numbers() -> None:
    # addresses=1 (KeyAddress: key=1, ips=2), error=2, response_id=3
    inner = _field_bytes(1, b"k") + _field_bytes(2, b"tcp://127.0.0.1:6200")
    raw = _field_bytes(1, inner) + _field_varint(2, 5) + _field_bytes(3, b"r")
    resp = anna_pb2.KeyAddressResponse()
    resp.ParseFromString(raw)
    assert resp.addresses[0].key == "k"
    assert list(resp.addresses[0].ips) == ["tcp://127.0.0.1:6200"]
    assert resp.error == anna_pb2.NO_SERVERS and resp.response_id == "r"


def test_cloudburst_error_names_match_the_original() -> None:
    from cloudburst.shared.proto.cloudburst_pb2 import (  # noqa: F401 - import is the test
        DAG_ALREADY_EXISTS,
        CloudburstError,
    )

    expected = {
        "FUNC_NOT_FOUND": 1,
        "NOT_PINNED": 2,
        "EXECUTION_ERROR": 3,
        "NO_SUCH_DAG": 4,
        "NO_RESOURCES": 5,
        "DAG_ALREADY_EXISTS": 6,
    }
    for name, number in expected.items():
        assert getattr(cloudburst_pb2, name) == number
        assert cloudburst_pb2.CloudburstError.Value(name) == number
    assert (cloudburst_pb2.NORMAL, cloudburst_pb2.SINGLE, cloudburst_pb2.MULTI) == (0, 1, 2)
