"""Write-ahead log: records survive, torn tails are dropped, compaction keeps state."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anna.proto import anna_pb2 as pb
from anna.shard.wal import WriteAheadLog, encode_record, read_records, tuple_prefix


def _t(key: str, value: bytes = b"v") -> pb.KeyTuple:
    return pb.KeyTuple(key=key, lattice_type=pb.LWW, payload=value)


def _r(key: str, value: bytes = b"v") -> tuple[str, int, bytes]:
    return (key, pb.LWW, value)


@given(st.text(), st.integers(0, 6), st.binary(max_size=300))
def test_record_prefix_is_protobuf_encoding(key: str, lt: int, payload: bytes) -> None:
    want = pb.KeyTuple(key=key, lattice_type=lt, payload=payload).SerializeToString()  # type: ignore[arg-type]
    assert tuple_prefix(key, lt, len(payload)) + payload == want


@pytest.mark.parametrize("policy", ["always", "interval", "never"])
def test_append_recover(tmp_path: Path, policy: str) -> None:
    wal = WriteAheadLog(tmp_path, policy, 5)
    assert list(wal.recover()) == []
    wal.open()
    wal.append([_r("a"), _r("b")])
    wal.commit(1.0)
    wal.append([_r("c")])
    wal.flush(2.0)
    wal.close()
    again = WriteAheadLog(tmp_path, policy)
    assert [t.key for t in again.recover()] == ["a", "b", "c"]


def test_always_policy_syncs_on_commit(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, "always")
    list(wal.recover())
    wal.open()
    wal.append([_r("a")])
    assert wal.unsynced
    wal.commit(0.0)
    assert not wal.unsynced
    never = WriteAheadLog(tmp_path / "n", "never")
    list(never.recover())
    never.open()
    never.append([_r("a")])
    never.commit(0.0)
    assert never.unsynced  # left to the OS


def test_torn_tail_is_truncated(tmp_path: Path) -> None:
    path = tmp_path / "wal.log"
    good = encode_record(_t("a").SerializeToString()) + encode_record(_t("b").SerializeToString())
    torn = encode_record(_t("c").SerializeToString())[:-2]
    path.write_bytes(good + torn)
    wal = WriteAheadLog(tmp_path)
    assert [t.key for t in wal.recover()] == ["a", "b"]
    assert path.stat().st_size == len(good)
    # a flipped byte (bad crc) also ends the log
    bad = bytearray(good)
    bad[-1] ^= 0xFF
    path.write_bytes(bytes(bad))
    records, end = read_records(path)
    assert [t.key for t in records] == ["a"] and end < len(bad)


def test_compaction(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path)
    list(wal.recover())
    wal.open()
    wal.append([_r("a", b"1"), _r("a", b"2"), _r("b")])
    wal.commit(0)
    wal.compact([_t("a", b"2"), _t("b")])
    assert wal.size == 0 and (tmp_path / "wal.log").stat().st_size == 0
    wal.append([_r("c")])
    wal.commit(0)
    wal.close()
    got = [(t.key, t.payload) for t in WriteAheadLog(tmp_path).recover()]
    assert got == [("a", b"2"), ("b", b"v"), ("c", b"v")]
