"""The pieces behind large values, without processes: GIL-free copies, zero-copy
request decoding, the worker thread, and the WAL's background compaction (rotation)
including a crash at each step."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from anna import wire
from anna.membership import make_node
from anna.proto import anna_pb2 as pb
from anna.shard.biglane import BigLane
from anna.shard.bigvalue import MIN_BIG, copy_bytes, join
from anna.shard.logic import ShardState
from anna.shard.server import decode_big
from anna.shard.wal import WriteAheadLog, read_records, write_pieces, write_records
from lattices import LWWPairLattice, SetLattice, to_payload

ADDR = wire.string_field(3, "tcp://127.0.0.1:1")


@pytest.mark.parametrize("size", [0, 5, MIN_BIG - 1, MIN_BIG, 3 * MIN_BIG + 7])
def test_copy_bytes_and_join_equal_the_plain_copies(size: int) -> None:
    src = bytes(range(256)) * (size // 256 + 1)
    src = src[:size]
    for obj in (src, bytearray(src)):
        for start, end in ((0, None), (3, size - 2), (size // 2, size)):
            if end is not None and end < start:
                continue
            got = copy_bytes(obj, start, end)
            assert type(got) is bytes and got == bytes(obj[start:end])
    pieces = [b"head", src, b"", b"x" * 10, src[: size // 3]]
    assert join(pieces) == b"".join(pieces)


def test_large_copies_let_other_threads_run() -> None:
    src = bytearray(b"q" * (256 << 20))
    ticks: list[float] = []
    stop = threading.Event()

    def ticker() -> None:
        while not stop.is_set():
            time.sleep(0.001)
            ticks.append(time.monotonic())

    th = threading.Thread(target=ticker)
    th.start()
    time.sleep(0.05)
    try:
        t0 = time.monotonic()
        out = copy_bytes(src, 1)
        t1 = time.monotonic()
    finally:
        stop.set()
        th.join()
    assert len(out) == len(src) - 1 and out[:1] == b"q"
    # The other thread kept running during the copy (a GIL-holding copy would stop it
    # for the whole copy: no tick inside).
    inside = [t for t in ticks if t0 < t < t1]
    if t1 - t0 > 0.1:
        assert len(inside) >= 2, (len(inside), t1 - t0)


def _request(rtype: int, key: str, lt: int, payload: bytes, rid: str = "r") -> bytes:
    return b"".join(
        wire.key_request_parts(rtype, key, lt, [payload] if payload else [], 2, ADDR, rid)
    )


def test_request_span_agrees_with_the_copying_parser() -> None:
    lww = to_payload(LWWPairLattice(7, b"v" * 70000))
    cases = [
        _request(pb.PUT, "k", *lww),
        _request(pb.GET, "k", 0, b""),
        _request(pb.PUT, "ключ", pb.SET, SetLattice({b"a"}).serialize(), rid=""),
        _request(pb.DELETE, "d", 0, b""),
    ]
    for data in cases:
        buf = bytearray(data)
        one = wire.parse_single_key_request(memoryview(buf))
        span = wire.single_key_request_span(buf)
        assert one is not None and span is not None
        rtype, key, lt, start, end, cache, addr, rid = span
        assert (rtype, key, lt, bytes(buf[start:end]), cache, addr, rid) == one
    # anything the fast parser refuses, the span refuses too
    two = pb.KeyRequest(type=pb.GET, tuples=[pb.KeyTuple(key="a"), pb.KeyTuple(key="b")])
    assert wire.single_key_request_span(bytearray(two.SerializeToString())) is None
    assert wire.single_key_request_span(bytearray(b"\x12\xff")) is None
    payload = lww[1]
    ts, vs, ve = wire.lww_span(payload, 0, len(payload))  # type: ignore[misc]
    assert (ts, payload[vs:ve]) == wire.parse_lww_payload(payload)
    assert wire.lww_span(b"\x08\x05", 0, 2) == (5, 2, 2)
    assert wire.lww_span(b"\x12\x00", 0, 2) is None


def test_decode_big_gives_the_lattice_and_leaves_oversized_payloads_uncopied() -> None:
    value = LWWPairLattice(9, b"z" * (2 * MIN_BIG))
    buf = bytearray(_request(pb.PUT, "big", *to_payload(value)))
    span = wire.single_key_request_span(buf)
    assert span is not None
    payload, decoded = decode_big(buf, span, 1 << 30)
    assert payload == value.serialize() and decoded == value
    over, none = decode_big(buf, span, MIN_BIG)
    assert isinstance(over, memoryview) and none is None
    sets = bytearray(_request(pb.PUT, "s", *to_payload(SetLattice({b"a" * MIN_BIG}))))
    sspan = wire.single_key_request_span(sets)
    assert sspan is not None
    assert decode_big(sets, sspan, 1 << 30)[1] == SetLattice({b"a" * MIN_BIG})
    # and the state machine takes the decoded lattice as it would the payload
    st = ShardState(
        "127.0.0.1:6200", 0, pb.Membership(nodes=[make_node("127.0.0.1", 6200, 6250, 1, 1)]), 8
    )
    acts = st.handle_single(pb.PUT, "big", pb.LWW, payload, 0, "", "", decoded)
    assert acts and st.store["big"].lattice == value


def test_big_lane_runs_jobs_in_order_off_the_calling_thread() -> None:
    lane = BigLane()
    seen: list[object] = []
    try:
        main = threading.get_ident()
        for i in range(5):
            lane.submit(lambda i=i: (i, threading.get_ident() != main), (), seen.append)
        lane.submit(lambda: 1 / 0, (), seen.append)
        assert lane.wait_idle(10.0)
    finally:
        lane.close()
    assert seen[:5] == [(i, True) for i in range(5)]
    assert isinstance(seen[5], ZeroDivisionError)


def test_write_pieces_resumes_after_a_partial_write(tmp_path: Path) -> None:
    parts = [bytes([i % 251]) * (i % 5 + 1) for i in range(2500)]  # > IOV_MAX pieces
    total = sum(map(len, parts))
    for done in (0, 1, 3, total // 2, total):
        path = tmp_path / f"f{done}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT)
        try:
            write_pieces(fd, parts, total, done)
        finally:
            os.close(fd)
        assert path.read_bytes() == b"".join(parts)[done:]


def _replayed(directory: Path) -> dict[str, bytes]:
    wal = WriteAheadLog(directory)
    st = ShardState("x", 0, pb.Membership(), 8)
    st.store.clear()
    st.replay(wal.recover())
    return {k: e.get_payload() for k, e in st.store.items()}


def _lww(v: bytes, ts: int = 1) -> bytes:
    return LWWPairLattice(ts, v).serialize()


def test_background_compaction_recovers_after_a_crash_at_every_step(tmp_path: Path) -> None:
    d = tmp_path / "shard"
    wal = WriteAheadLog(d, "always")
    list(wal.recover())
    wal.open()
    wal.append([("a", pb.LWW, _lww(b"1")), ("b", pb.LWW, _lww(b"2"))])
    wal.append([("b", pb.NONE, b"")])  # b handed off
    wal.append([("b", pb.LWW, _lww(b"3", 2))])  # and back
    wal.commit(0.0)
    want = {"a": _lww(b"1"), "b": _lww(b"3", 2)}
    state = [("a", pb.LWW, _lww(b"1")), ("b", pb.LWW, _lww(b"3", 2))]
    old_fd = wal.rotate()
    # a write in flight on the old descriptor still lands in wal.old
    write_records(old_fd, [("c", pb.LWW, _lww(b"c"))], True)
    state.append(("c", pb.LWW, _lww(b"c")))
    want["c"] = _lww(b"c")
    wal.append([("d", pb.LWW, _lww(b"4"))])  # after the rotation: the new log
    wal.commit(0.0)
    want["d"] = _lww(b"4")
    # crash before the snapshot: old snapshot (none) + wal.old + wal.log
    assert (d / "wal.old").exists() and _replayed(d) == want
    # crash after the snapshot was renamed but before wal.old was removed
    snapshot_copy = (d / "wal.old").read_bytes()
    wal.write_snapshot(iter(state), old_fd)
    assert not (d / "wal.old").exists()
    assert _replayed(d) == want
    (d / "wal.old").write_bytes(snapshot_copy)
    assert _replayed(d) == want
    # a synchronous compaction removes a leftover wal.old
    wal.compact(
        pb.KeyTuple(key=k, lattice_type=lt, payload=p)
        for k, lt, p in state + [("d", pb.LWW, _lww(b"4"))]
    )  # type: ignore[arg-type]
    assert not (d / "wal.old").exists() and _replayed(d) == want
    wal.close()
    assert [t.key for t in read_records(d / "snapshot")[0]] == ["a", "b", "c", "d"]


def test_server_send_parts_in_order_with_send_before_and_after_the_handshake() -> None:
    import zmq

    from anna.zmtp import ZmtpServer
    from cloudburst.shared.processes import free_port

    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    paddr = f"tcp://127.0.0.1:{pull.bind_to_random_port('tcp://127.0.0.1')}"
    stats: dict[str, int] = {}
    from collections import Counter

    stats = Counter()
    srv = ZmtpServer("127.0.0.1", free_port("127.0.0.1"), stats, max_pending=1 << 20)
    big = bytes(range(256)) * (20 << 12)  # 20 MB, far over the queue bound
    try:
        srv.send(paddr, b"first")  # queued until the peer's READY
        srv.send_parts(paddr, [b"a", b"", b"bc"])
        srv.send_parts(paddr, [b"head:", big, b":tail"])  # a large answer is not dropped
        srv.send(paddr, b"last")
        got: list[bytes] = []
        end = time.monotonic() + 20
        while len(got) < 4 and time.monotonic() < end:
            srv.poll(0.005)
            while pull.poll(0):
                got.append(pull.recv())
        assert got[:2] == [b"first", b"abc"] and got[3:] == [b"last"]
        assert len(got[2]) == len(big) + 10 and got[2] == b"head:" + big + b":tail"
        srv.cork()
        srv.send_parts(paddr, [b"x", b"y"])
        srv.uncork()
        end = time.monotonic() + 10
        while pull.poll(0) == 0 and time.monotonic() < end:
            srv.poll(0.005)
        assert pull.recv() == b"xy"
        assert stats["send_dropped"] == 0
    finally:
        srv.close()
        pull.close(0)
        ctx.term()


def test_anti_entropy_hash_of_a_large_lww_value_samples_it() -> None:
    from anna.shard.logic import AE_SAMPLE_ABOVE, ae_hash

    size = AE_SAMPLE_ABOVE + 10
    a = LWWPairLattice(5, b"a" * size).serialize()
    assert ae_hash("k", pb.LWW, a) == ae_hash("k", pb.LWW, bytes(a))
    for other in (
        LWWPairLattice(6, b"a" * size).serialize(),  # another timestamp
        LWWPairLattice(5, b"a" * (size + 1)).serialize(),  # another length
        LWWPairLattice(5, b"b" + b"a" * (size - 1)).serialize(),  # another first MiB
        LWWPairLattice(5, b"a" * (size - 1) + b"b").serialize(),  # another last MiB
    ):
        assert ae_hash("k", pb.LWW, other) != ae_hash("k", pb.LWW, a)
    assert ae_hash("j", pb.LWW, a) != ae_hash("k", pb.LWW, a)
    # other types and small values are hashed whole
    small = LWWPairLattice(5, b"a" * 100).serialize()
    assert ae_hash("k", pb.LWW, small) != ae_hash("k", pb.LWW, small[:-1] + b"b")
