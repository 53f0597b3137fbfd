"""The stream hub's pure logic: no sockets, no processes, the clock passed in.

A tiny in-memory network delivers ``SendPeer`` actions to the hub with that address
and collects ``Reply`` actions per client identity.
"""

from __future__ import annotations

import json
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from cache.actions import Reply, SendPeer
from cache.streams import (
    DELTA,
    FAIL,
    HEADER,
    OP_FREE,
    OP_HB,
    OP_OPEN,
    OP_READ,
    OP_STAT,
    OP_WRITE,
    R_DATA,
    R_OPENED,
    R_WACK,
    SEAL,
    StreamHub,
    from_u64,
    u64,
)
from lattices.ddt import DCounter, DLog, DMap, decode_delta, encode_delta


def cfg(buffer_max: int = 1 << 20) -> Any:
    return SimpleNamespace(ddt=SimpleNamespace(buffer_max_bytes=buffer_max))


class Net:
    """Hubs by peer address; replies collected per (hub, identity)."""

    def __init__(self, *addrs: str, buffer_max: int = 1 << 20) -> None:
        self.hubs = {a: StreamHub(a, a, cfg(buffer_max)) for a in addrs}
        self.inbox: dict[bytes, list[list[bytes]]] = defaultdict(list)
        self.peer_msgs = 0
        self.now = 0.0
        self.rid = 0

    def run(self, actions: list[Any]) -> None:
        queue = list(actions)
        while queue:
            act = queue.pop(0)
            if isinstance(act, Reply):
                self.inbox[act.identity].append(act.frames)
            else:
                assert isinstance(act, SendPeer)
                self.peer_msgs += 1
                hub = self.hubs[act.address]
                queue += hub.handle(None, act.frames[0], act.frames[1:], self.now)

    def op(self, hub: str, ident: bytes, op: bytes, *frames: bytes) -> None:
        self.run(self.hubs[hub].handle(ident, op, list(frames), self.now))

    def tick(self, hub: str) -> None:
        self.run(self.hubs[hub].tick(self.now))

    def take(self, ident: bytes) -> list[list[bytes]]:
        out = self.inbox.pop(ident, [])
        return out

    # -- client helpers -------------------------------------------------------

    def open(self, hub: str, ident: bytes, sid: bytes, role: str, member: str, **meta: Any) -> None:
        self.op(
            hub, ident, OP_OPEN, sid, json.dumps({"role": role, "member": member, **meta}).encode()
        )
        assert self.take(ident)[-1][0] == R_OPENED

    def write(
        self,
        hub: str,
        ident: bytes,
        sid: bytes,
        writer: str,
        seq: int,
        delta: Any = None,
        flags: int = DELTA,
        writers: int = 1,
    ) -> None:
        self.rid += 1
        payload = encode_delta(delta) if delta is not None else b""
        self.op(
            hub,
            ident,
            OP_WRITE,
            sid,
            writer.encode(),
            u64(self.rid),
            HEADER.pack(seq, flags, writers),
            payload,
        )

    def read(
        self, hub: str, ident: bytes, sid: bytes, reader: str, cursor: int, max_bytes: int = 1 << 20
    ) -> None:
        self.rid += 1
        self.op(
            hub, ident, OP_READ, sid, reader.encode(), u64(self.rid), u64(cursor), u64(max_bytes)
        )


def entries(reply: list[bytes]) -> tuple[int, list[tuple[bytes, int, int, bytes]]]:
    assert reply[0] == R_DATA and reply[4] == b"", reply[:5]
    body = reply[5:]
    out = []
    for i in range(0, len(body), 3):
        seq, flags, _ = HEADER.unpack(body[i + 1])
        out.append((body[i], seq, flags, body[i + 2]))
    return from_u64(reply[3]), out


def acks(replies: list[list[bytes]]) -> int:
    return sum(1 for r in replies if r[0] == R_WACK)


SID = b"call1/s"


def test_writer_reader_seal_and_late_reader_gets_snapshot_then_rest() -> None:
    net = Net("A")
    net.open("A", b"W", SID, "w", "w1", writers=1, type="DLog")
    net.write("A", b"W", SID, "w1", 0, DLog.batch("w1", 0, [1, 2]))
    net.write("A", b"W", SID, "w1", 1, DLog.batch("w1", 1, [3]))
    assert acks(net.take(b"W")) == 2
    # A late reader: the snapshot first (everything so far).
    net.open("A", b"R", SID, "r", "r1")
    net.read("A", b"R", SID, "r1", 0)
    cursor, got = entries(net.take(b"R")[0])
    assert cursor == 2 and [e[1] for e in got] == [0, 1]
    # Caught up: the next read parks, then is answered by the next write only.
    net.read("A", b"R", SID, "r1", cursor)
    assert net.take(b"R") == []
    net.write("A", b"W", SID, "w1", 2, DLog.batch("w1", 2, [4]))
    net.write("A", b"W", SID, "w1", 3, flags=SEAL)
    cursor2, got2 = entries(net.take(b"R")[0])
    assert [e[1] for e in got2] == [2]  # nothing twice
    net.read("A", b"R", SID, "r1", cursor2)
    _, got3 = entries(net.take(b"R")[0])
    assert got3[0][2] == SEAL
    log = DLog.join(decode_delta(e[3]) for e in got + got2)  # type: ignore[misc]
    assert log.reveal() == [1, 2, 3, 4]
    stat = net.hubs["A"].status(SID)
    assert stat["sealed"] == ["w1"] and stat["writers"] == 1


def test_duplicates_dropped_and_two_writers_merge() -> None:
    net = Net("A")
    for w in ("m1", "m2"):
        net.open("A", w.encode(), SID, "w", w, writers=2, type="DMap")
    net.write("A", b"m1", SID, "m1", 0, DMap({"apple": DCounter({"m1": 2})}), writers=2)
    net.write("A", b"m1", SID, "m1", 0, DMap({"apple": DCounter({"m1": 2})}), writers=2)
    net.write(
        "A",
        b"m2",
        SID,
        "m2",
        0,
        DMap({"apple": DCounter({"m2": 3}), "kiwi": DCounter({"m2": 1})}),
        writers=2,
    )
    net.write("A", b"m1", SID, "m1", 1, flags=SEAL, writers=2)
    net.write("A", b"m2", SID, "m2", 1, flags=SEAL, writers=2)
    assert net.hubs["A"].stats["duplicates"] == 1
    net.read("A", b"R", SID, "r", 0)
    _, got = entries(net.take(b"R")[0])
    deltas = [decode_delta(e[3]) for e in got if e[2] == DELTA]
    assert DMap.join(deltas).reveal() == {"apple": 5, "kiwi": 1}  # type: ignore[arg-type]
    assert sorted(net.hubs["A"].status(SID)["sealed"]) == ["m1", "m2"]


def test_back_pressure_holds_writer_until_reader_catches_up() -> None:
    net = Net("A", buffer_max=10_000)
    net.open("A", b"W", SID, "w", "w1", type="DLog")
    net.open("A", b"R", SID, "r", "r1")
    blob = b"x" * 3000
    for seq in range(6):
        net.write("A", b"W", SID, "w1", seq, DLog.batch("w1", seq, [blob]))
    # ~18 KB written, the reader read nothing: the writes past 10 KB are not acked.
    assert acks(net.take(b"W")) == 3
    net.read("A", b"R", SID, "r1", 0, max_bytes=1)  # one entry
    cursor, got = entries(net.take(b"R")[0])
    assert len(got) == 1
    net.read("A", b"R", SID, "r1", 6)  # consumed everything
    assert acks(net.take(b"W")) == 3
    assert net.hubs["A"].stats["held"] == 3


def test_no_reader_means_no_back_pressure_unless_readers_expected() -> None:
    net = Net("A", buffer_max=1000)
    net.open("A", b"W", SID, "w", "w1", type="DLog")
    for seq in range(5):
        net.write("A", b"W", SID, "w1", seq, DLog.batch("w1", seq, [b"y" * 600]))
    assert acks(net.take(b"W")) == 5  # retained for late readers
    sid2 = b"call1/edge"
    net.open("A", b"W", sid2, "w", "w1", type="DLog", readers=1, retain=False)
    for seq in range(5):
        net.write("A", b"W", sid2, "w1", seq, DLog.batch("w1", seq, [b"y" * 600]))
    assert acks(net.take(b"W")) == 1  # the 2nd write passes 1000 unconsumed bytes


def test_retain_false_frees_consumed_entries() -> None:
    net = Net("A")
    net.open("A", b"W", SID, "w", "w1", type="DLog", readers=1, retain=False)
    net.open("A", b"R", SID, "r", "r1")
    for seq in range(200):
        net.write("A", b"W", SID, "w1", seq, DLog.batch("w1", seq, [seq]))
    net.read("A", b"R", SID, "r1", 0)
    cursor, got = entries(net.take(b"R")[0])
    assert cursor == 200
    net.read("A", b"R", SID, "r1", cursor)
    st = net.hubs["A"].streams[SID]
    assert st.base == 200 and st.entries == []
    # A reader that comes now cannot get the freed prefix: a clear error.
    net.read("A", b"R2", SID, "late", 0)
    reply = net.take(b"R2")[0]
    assert b"freed" in reply[4]


def test_killed_writer_fails_the_stream_for_readers() -> None:
    net = Net("A")
    net.open("A", b"W", SID, "w", "w1", type="DLog", writers=1)
    net.write("A", b"W", SID, "w1", 0, DLog.batch("w1", 0, [1]))
    net.open("A", b"R", SID, "r", "r1")
    net.read("A", b"R", SID, "r1", 1)  # parks
    net.now = 1.0
    net.op("A", b"HB", OP_HB, SID, b"w1", SID, b"r1")
    net.tick("A")
    assert net.take(b"R") == []
    net.now = 7.0  # 6 s without a heartbeat > 5 s timeout
    net.op("A", b"HB", OP_HB, SID, b"r1")
    net.tick("A")
    _, got = entries(net.take(b"R")[0])
    assert got[0][0] == b"w1" and got[0][2] == FAIL and b"heartbeat" in got[0][3]


def test_sealed_writer_may_stop_heartbeating() -> None:
    net = Net("A")
    net.open("A", b"W", SID, "w", "w1", type="DLog", writers=1)
    net.write("A", b"W", SID, "w1", 0, flags=SEAL)
    net.now = 100.0
    net.tick("A")
    assert net.hubs["A"].status(SID)["failed"] == {}


def test_cross_node_pull_and_back_pressure() -> None:
    net = Net("A", "B", buffer_max=5000)
    net.open("A", b"W", SID, "w", "w1", type="DLog", writers=1)
    net.open("B", b"R", SID, "r", "r1", pull_from=["A"])
    for seq in range(6):
        net.write("A", b"W", SID, "w1", seq, DLog.batch("w1", seq, [b"z" * 2000]))
    # The reader at B has read nothing: A's writer is held once ~5 KB are unconsumed.
    assert 1 <= acks(net.take(b"W")) <= 3
    net.read("B", b"R", SID, "r1", 0)
    cursor, got = entries(net.take(b"R")[0])
    assert [e[1] for e in got] == list(range(len(got)))
    seen = len(got)
    while seen < 6:
        net.read("B", b"R", SID, "r1", cursor)
        cursor, more = entries(net.take(b"R")[0])
        assert [e[1] for e in more] == list(range(seen, seen + len(more)))
        seen += len(more)
    net.read("B", b"R", SID, "r1", cursor)  # consumed all: A releases the writer
    assert acks(net.take(b"W")) >= 3
    net.write("A", b"W", SID, "w1", 6, flags=SEAL)
    _, tail = entries(net.take(b"R")[0])
    assert tail[0][2] == SEAL


def test_cross_node_push_before_reader_opens_and_two_writers_on_two_nodes() -> None:
    net = Net("A", "B", "C")
    # Writers on A and C push to the reader's node B (a DAG knows where readers run).
    net.open("A", b"WA", SID, "w", "wa", type="DMap", writers=2, push_to=["B"])
    net.open("C", b"WC", SID, "w", "wc", type="DMap", writers=2, push_to=["B"])
    net.write("A", b"WA", SID, "wa", 0, DMap({"k": DCounter({"wa": 1})}), writers=2)
    net.write("C", b"WC", SID, "wc", 0, DMap({"k": DCounter({"wc": 2})}), writers=2)
    net.write("A", b"WA", SID, "wa", 1, flags=SEAL, writers=2)
    net.write("C", b"WC", SID, "wc", 1, flags=SEAL, writers=2)
    net.open("B", b"R", SID, "r", "r1")
    net.read("B", b"R", SID, "r1", 0)
    _, got = entries(net.take(b"R")[0])
    assert DMap.join(decode_delta(e[3]) for e in got if e[2] == DELTA).reveal() == {"k": 3}  # type: ignore[misc]
    assert sorted(e[0] for e in got if e[2] == SEAL) == [b"wa", b"wc"]


def test_silent_source_hub_fails_remote_stream() -> None:
    net = Net("A", "B")
    net.open("A", b"W", SID, "w", "w1", type="DLog", writers=1, push_to=["B"])
    net.write("A", b"W", SID, "w1", 0, DLog.batch("w1", 0, [1]))
    net.open("B", b"R", SID, "r", "r1")
    net.read("B", b"R", SID, "r1", 0)
    cursor, _ = entries(net.take(b"R")[0])
    net.read("B", b"R", SID, "r1", cursor)  # parks
    net.now = 1.0
    net.op("B", b"HB", OP_HB, SID, b"r1")
    net.tick("A")  # A heartbeats B
    net.tick("B")
    assert net.take(b"R") == []
    del net.hubs["A"]  # node A dies
    net.now = 7.0
    net.op("B", b"HB", OP_HB, SID, b"r1")
    net.tick("B")
    _, got = entries(net.take(b"R")[0])
    assert got[0][2] == FAIL and b"stopped answering" in got[0][3]


def test_free_drops_a_calls_streams_and_releases_held_writers() -> None:
    net = Net("A", "B", buffer_max=100)
    net.open("A", b"W", b"c9/x", "w", "w1", type="DLog", readers=1, push_to=["B"])
    net.open("A", b"W", b"c9/y", "w", "w1", type="DLog")
    net.open("A", b"W", b"c10/x", "w", "w1", type="DLog")
    net.write("A", b"W", b"c9/x", "w1", 0, DLog.batch("w1", 0, [b"q" * 500]))
    net.write("A", b"W", b"c9/x", "w1", 1, DLog.batch("w1", 1, [b"q" * 500]))
    assert acks(net.take(b"W")) == 0  # held: the expected reader has not read
    net.op("A", b"X", OP_FREE, b"c9/")
    assert acks(net.take(b"W")) == 2
    assert set(net.hubs["A"].streams) == {b"c10/x"}
    assert set(net.hubs["B"].streams) == set()
    net.op("A", b"S", OP_STAT, b"c9/x")
    assert json.loads(net.take(b"S")[0][2]) == {"exists": False}


def test_stream_expires_when_idle() -> None:
    net = Net("A")
    net.open("A", b"W", SID, "w", "w1", type="DLog")
    net.write("A", b"W", SID, "w1", 0, flags=SEAL)
    net.now = 10_000.0
    net.tick("A")
    assert SID not in net.hubs["A"].streams


def test_writes_after_free_are_acknowledged_and_dropped() -> None:
    net = Net("A")
    net.open("A", b"W", b"c7/x", "w", "w1", type="DLog")
    net.op("A", b"X", OP_FREE, b"c7/")
    net.write("A", b"W", b"c7/x", "w1", 0, DLog.batch("w1", 0, [1]))
    assert acks(net.take(b"W")) == 1  # a producer still running is not blocked
    assert b"c7/x" not in net.hubs["A"].streams  # and does not re-create the stream


def test_readers_leaving_early_abandon_the_stream() -> None:
    from cache.streams import ABANDONED, OP_CLOSE

    net = Net("A", buffer_max=1000)
    net.open("A", b"W", SID, "w", "w1", type="DLog", readers=1, retain=False)
    for seq in range(3):
        net.write("A", b"W", SID, "w1", seq, DLog.batch("w1", seq, [b"y" * 600]))
    assert acks(net.take(b"W")) == 1  # the expected reader has not come: held
    net.open("A", b"R", SID, "r", "r1")
    net.op("A", b"R", OP_CLOSE, SID, b"r1")  # it came and left before the end
    released = net.take(b"W")
    assert len(released) == 2 and all(r[3] == ABANDONED for r in released)
    net.write("A", b"W", SID, "w1", 3, DLog.batch("w1", 3, [1]))
    assert net.take(b"W")[0][3] == ABANDONED


def test_reader_leaving_after_the_end_is_not_abandonment() -> None:
    from cache.streams import OP_CLOSE

    net = Net("A")
    net.open("A", b"W", SID, "w", "w1", type="DLog", readers=1, writers=1)
    net.open("A", b"R", SID, "r", "r1")
    net.write("A", b"W", SID, "w1", 0, flags=SEAL)
    net.op("A", b"R", OP_CLOSE, SID, b"r1")
    assert not net.hubs["A"].streams[SID].abandoned
