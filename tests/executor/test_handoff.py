"""Shared-memory handoffs between functions (executor/handoff.py), without a cluster:
layouts, the producer's book, files written, mapped read-only and cleaned up."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from cloudburst.shared import serializer, wire
from cloudburst.shared.errors import InvalidArgument
from cloudburst.shared.proto import cloudburst_pb2 as pb
from executor.handoff import Handoff, LinkBook, encode_for, same_host


@pytest.mark.parametrize(
    "obj",
    [
        np.arange(20_000, dtype=np.float64),
        np.arange(30_000, dtype=np.int32).reshape(100, 300)[:, ::2],  # not contiguous
        b"x" * 100_000,
        {"w": np.ones(50_000), "tag": "t", "n": 3},
    ],
)
def test_layout_writes_exactly_what_dumps_gives(obj: object) -> None:
    lay = serializer.layout(obj, 1024)
    assert lay is not None
    buf = bytearray(lay.length)
    lay.write_into(memoryview(buf))
    kind, body = serializer.dumps(obj)
    assert lay.kind == kind
    if isinstance(obj, dict):  # CBP5: same layout, the pickle may differ byte-wise
        back = serializer.loads(kind, bytes(buf))
        assert back["tag"] == "t" and np.array_equal(back["w"], obj["w"])
    else:
        assert bytes(buf) == body


def test_layout_is_none_for_small_or_plain_values() -> None:
    assert serializer.layout(np.ones(10), 1024) is None
    assert serializer.layout(b"abc", 1024) is None
    assert serializer.layout({"a": 1}, 0) is None  # no out-of-band buffer
    assert serializer.layout("s" * 10_000, 0) is None
    assert serializer.layout(3, 0) is None


def test_same_host() -> None:
    assert same_host("10.0.0.5", "tcp://10.0.0.5:7000")
    assert not same_host("10.0.0.5", "tcp://10.0.0.6:7000")
    assert same_host("127.0.0.1", "tcp://127.0.0.2:7000")  # local nodes on 127.0.0.x
    assert not same_host("10.0.0.5", "tcp://127.0.0.1:7000")


def test_link_book_deadlines() -> None:
    b = LinkBook(ttl=5.0)
    b.add(["a"], 0.0)
    b.add(["b", "c"], 1.0)
    assert b.due(4.9) == [] and b.due(5.0) == ["a"] and len(b) == 2
    assert b.drain() == ["b", "c"] and len(b) == 0


def handoff(d: Path, now: list[float] | None = None, ttl: float = 30.0) -> Handoff:
    clock = (lambda: now[0]) if now is not None else time.monotonic
    return Handoff("127.0.0.1", str(d), "ipc:///tmp/x", 64 * 1024, ttl, clock)


def roundtrip(h: Handoff, value: object, consumers: int, k: int) -> list[object]:
    handles = h.share(value, consumers)
    out = pb.Arguments()
    encode_for((value, 7), [handles, None], k, out)
    return wire.decode_args(out)


def names(d: Path) -> set[str]:
    return {p.name for p in d.iterdir()}


def test_a_large_array_is_mapped_read_only_and_its_link_unlinked(shm_dir: Path) -> None:
    h = handoff(shm_dir)
    arr = np.arange(100_000, dtype=np.float64)
    args = roundtrip(h, arr, 1, 0)
    assert isinstance(args[0], wire.SharedArgument) and args[1] == 7
    assert len(names(shm_dir)) == 2  # the producer's pooled file and the consumer's link
    got = h.open_all(args)
    assert np.array_equal(got[0], arr) and got[1] == 7
    assert not got[0].flags.writeable and got[0].ctypes.data % 64 == 0
    with pytest.raises(ValueError, match="read-only"):
        got[0][0] = 1.0
    assert h.open(args[0]) is got[0]  # a parked call's retry gets the same value
    h.forget()
    assert args[0].segment in names(shm_dir)  # a view is alive: the link stays
    del got
    h.expire(time.monotonic())
    assert names(shm_dir) == {h.files[0].name}  # views gone: link unlinked, file pooled
    with pytest.raises(InvalidArgument, match="gone"):
        h.open(args[0])
    h.close()
    assert names(shm_dir) == set()


def test_a_file_is_reused_only_once_its_reader_is_done(shm_dir: Path) -> None:
    h = handoff(shm_dir)
    a = np.full(100_000, 1.0)
    (x,) = h.share(a, 1) or []
    held = h.open(wire.decode_argument(pb.Argument(shared=x)))
    h.forget()  # the call ended but `held` is still alive
    (y,) = h.share(np.full(100_000, 2.0), 1) or []  # so this goes to another file
    assert h.reused == 0 and len(h.files) == 2
    assert np.all(held == 1.0)  # never rewritten under its reader
    second = h.open(wire.decode_argument(pb.Argument(shared=y)))
    assert np.all(second == 2.0)
    del held, second
    h.forget()
    (z,) = h.share(np.full(100_000, 3.0), 1) or []
    assert h.reused == 1
    assert np.all(h.open(wire.decode_argument(pb.Argument(shared=z))) == 3.0)
    h.forget()
    h.close()
    assert names(shm_dir) == set()


def test_fan_out_links_one_file_per_consumer(shm_dir: Path) -> None:
    h = handoff(shm_dir)
    value = {"w": np.ones(100_000), "tag": "x"}
    handles = h.share(value, 3)
    assert handles is not None and len({x.segment for x in handles}) == 3
    inodes = {os.stat(shm_dir / x.segment).st_ino for x in handles}
    assert len(inodes) == 1  # hard links: one copy of the data
    for x in handles:
        a = wire.decode_argument(pb.Argument(shared=x))
        got = h.open(a)
        assert got["tag"] == "x" and not got["w"].flags.writeable and got["w"].sum() == 100_000
    del got
    h.forget()
    assert names(shm_dir) == {h.files[0].name}


def test_remote_consumers_and_small_values_go_inline(shm_dir: Path) -> None:
    h = handoff(shm_dir)
    arr = np.arange(100_000, dtype=np.float64)
    args = roundtrip(h, arr, 1, -1)  # k < 0: a consumer on another host
    assert isinstance(args[0], np.ndarray) and np.array_equal(args[0], arr)
    assert h.share(np.ones(10), 1) is None  # under the threshold
    h.close()
    assert names(shm_dir) == set()


def test_unconsumed_links_expire_and_close_removes_the_rest(shm_dir: Path) -> None:
    now = [100.0]
    h = handoff(shm_dir, now, ttl=10.0)
    h.share(np.ones(100_000), 2)
    now[0] = 105.0
    h.share(np.ones(100_000), 1)  # the first file is busy: a second one
    assert len(names(shm_dir)) == 5  # 2 files, 3 links
    h.expire(109.9)
    assert len(names(shm_dir)) == 5
    h.expire(110.0)  # the first file's links outlived the ttl: given up
    assert len(names(shm_dir)) == 2
    h.close()
    assert names(shm_dir) == set()


def test_a_full_pool_sends_one_shot_files(shm_dir: Path) -> None:
    now = [0.0]
    h = handoff(shm_dir, now, ttl=10.0)
    for _ in range(3):  # POOL_FILES = 2 busy files, then a one-shot one
        h.share(np.ones(100_000), 1)
    assert len(h.files) == 2 and len(h.book) == 1
    assert len(names(shm_dir)) == 5
    h.expire(10.0)
    assert names(shm_dir) == set()


def test_a_handle_from_another_host_is_refused(shm_dir: Path) -> None:
    h = handoff(shm_dir)
    (x,) = h.share(np.ones(100_000), 1) or []
    x.host = "some-other-boot-id/1"
    with pytest.raises(InvalidArgument, match="another host"):
        h.open(wire.decode_argument(pb.Argument(shared=x)))
    h.close()
