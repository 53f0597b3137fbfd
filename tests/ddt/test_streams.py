"""DDT streams end to end over real node caches (``python -m cache.server``).

Writers run in separate processes (or threads of the test), readers in the test; data
flows writer -> its node cache -> (the reader's node cache) -> reader. Free ports,
every process stopped by the ``procs`` fixture.
"""

from __future__ import annotations

import json
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
import zmq

from cache import protocol
from cache.streams import OP_STAT, R_STAT
from cloudburst.ddt import (
    DCounter,
    DdtSession,
    DLog,
    DMap,
    DRegister,
    DSet,
    DTensor,
    Stream,
    StreamWriterFailed,
)
from cloudburst.shared.errors import CloudburstTimeoutError
from cloudburst.shared.processes import ProcessGroup, free_port, wait_until

pytestmark = pytest.mark.integration


@dataclass
class Node:
    node_id: str
    ipc: str
    peer: str


@dataclass
class Env:
    procs: ProcessGroup
    cfg_path: Path
    nodes: dict[str, Node]

    def session(self, node: str, scope: str, peers: tuple[str, ...] = ()) -> DdtSession:
        return DdtSession(self.nodes[node].ipc, scope, peers=[self.nodes[p].peer for p in peers])

    def spawn(self, name: str, code: str) -> None:
        """Run ``code`` in a fresh interpreter (``ENV`` = this env as JSON)."""
        env = {n: {"ipc": v.ipc, "peer": v.peer} for n, v in self.nodes.items()}
        prelude = f"import json\nENV = json.loads({json.dumps(json.dumps(env))})\n"
        self.procs.start(name, [sys.executable, "-c", prelude + textwrap.dedent(code)])

    def stat(self, node: str, sid: str) -> dict[str, object]:
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.connect(self.nodes[node].ipc)
            sock.send_multipart([OP_STAT, sid.encode()])
            assert sock.poll(5000), "cache did not answer stream.stat"
            frames = sock.recv_multipart()
            assert frames[0] == R_STAT
            out: dict[str, object] = json.loads(frames[2])
            return out
        finally:
            sock.close(0)


def start_env(procs: ProcessGroup, tmp_path: Path, nodes: int, **ddt: object) -> Env:
    cfg = {
        "ip": "127.0.0.1",
        "run_dir": str(tmp_path / "run"),
        "cache": {"ipc_dir": str(tmp_path / "ipc")},
        "ddt": {"batch_bytes": 16384, "batch_ms": 5, **ddt},
    }
    cfg_path = tmp_path / "ddt.yml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    out: dict[str, Node] = {}
    for i in range(nodes):
        node_id = f"n{i}"
        port = free_port()
        procs.python(
            f"cache-{node_id}",
            "cache.server",
            "--config",
            str(cfg_path),
            "--node-id",
            node_id,
            "--kvs",
            "127.0.0.1:1",  # streams need no KVS
            "--peer-port",
            str(port),
        )
        out[node_id] = Node(
            node_id,
            protocol.ipc_address(str(tmp_path / "ipc"), node_id),
            f"tcp://127.0.0.1:{port}",
        )
    env = Env(procs, cfg_path, out)
    for node_id in out:
        wait_until(lambda n=node_id: _ping(env, n), timeout=30, what=f"cache {node_id}")
    return env


def _ping(env: Env, node: str) -> bool:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(env.nodes[node].ipc)
        sock.send_multipart([b"ping", b"1"])
        return bool(sock.poll(300))
    finally:
        sock.close(0)


@pytest.fixture
def env(procs: ProcessGroup, tmp_path: Path) -> Iterator[Env]:
    yield start_env(procs, tmp_path, nodes=2)


WRITER = """
from cloudburst.ddt import DdtSession, DLog, DMap
import sys, time
s = DdtSession(ENV[{node!r}]["ipc"], {scope!r}, peers=[ENV[p]["peer"] for p in {peers!r}])
"""


def test_log_stream_between_processes_in_order(env: Env) -> None:
    env.spawn(
        "writer",
        WRITER.format(node="n0", scope="c1", peers=())
        + """
out = s.stream("nums", DLog, writers=1)
for i in range(5000):
    out.append(i)
out.seal()
""",
    )
    inp = env.session("n0", "c1").stream("nums", DLog)
    got = list(inp.items(timeout=30))
    assert got == list(range(5000))
    assert inp.final and inp.value() == list(range(5000))


def test_two_writers_merge_into_one_map(env: Env) -> None:
    for w in range(2):
        env.spawn(
            f"mapper{w}",
            WRITER.format(node="n0", scope="wc", peers=())
            + f"""
out = s.stream("counts", DMap, writers=2)
for word in ("apple banana apple " * 300).split():
    out.update(word + "{w}" if word == "banana" else word, 1)
out.seal()
""",
        )
    counts = env.session("n0", "wc").stream("counts", DMap).wait(timeout=30)
    assert counts == {"apple": 1200, "banana0": 300, "banana1": 300}


def test_late_reader_gets_snapshot_then_rest_nothing_twice(env: Env) -> None:
    w = env.session("n0", "late").stream("log", DLog, writers=1)
    w.extend(range(100))
    w.flush()
    time.sleep(0.1)
    r = env.session("n0", "late").stream("log", DLog)
    first = r.value()
    assert first == list(range(100))  # the snapshot
    w.extend(range(100, 150))
    w.seal()
    assert r.wait(timeout=10) == list(range(150))  # then the rest, nothing twice
    w.close()
    r.close()


def test_cross_node_reader_pulls_through_its_own_cache(env: Env) -> None:
    env.spawn(
        "writer",
        WRITER.format(node="n0", scope="x", peers=())
        + """
out = s.stream("nums", DLog, writers=1)
for i in range(3000):
    out.append(("item", i))
out.seal()
""",
    )
    inp = env.session("n1", "x", peers=("n0",)).stream("nums", DLog)
    got = list(inp.items(timeout=30))
    assert got == [("item", i) for i in range(3000)]
    # The data went n0 -> n1: n1's hub holds it, forwarded from n0's.
    stat = env.stat("n1", "x/nums")
    assert stat["exists"] and stat["end"] >= 2
    inp.close()  # everything consumed: n1 acknowledges all of it to n0
    wait_until(
        lambda: env.stat("n0", "x/nums")["subs"] == {env.nodes["n1"].peer: stat["end"]},
        timeout=5,
        what="n1 to acknowledge n0's entries",
    )


def test_writer_pushes_to_reader_node_and_types_round_trip(env: Env) -> None:
    import numpy as np

    ws = env.session("n0", "types", peers=("n1",))
    rs = env.session("n1", "types")
    c = ws.stream("c", DCounter, writers=1)
    c.add(3)
    c.add(4)
    c.seal()
    st = ws.stream("s", DSet, writers=1)
    st.add("a")
    st.add("b")
    st.add("a")
    st.seal()
    reg = ws.stream("r", DRegister, writers=1)
    reg.set("first")
    reg.set("final")
    reg.seal()
    t = ws.stream("t", DTensor, writers=2, mode="mean")
    t.contribute(np.ones(3))
    t.seal()
    t2 = env.session("n0", "types", peers=("n1",)).stream("t", DTensor, writers=2, mode="mean")
    t2.contribute(np.full(3, 3.0))
    t2.seal()
    assert rs.stream("c", DCounter).wait(timeout=10) == 7
    assert rs.stream("s", DSet).wait(timeout=10) == frozenset({"a", "b"})
    assert rs.stream("r", DRegister).wait(timeout=10) == "final"
    tensor = rs.stream("t", DTensor)
    assert tensor.wait(timeout=10).tolist() == [2.0, 2.0, 2.0]
    assert tensor.lattice().complete  # type: ignore[attr-defined]
    ws.finish()
    rs.finish()
    t2.close()


def test_killed_writer_makes_reader_raise(env: Env) -> None:
    env.spawn(
        "doomed",
        WRITER.format(node="n0", scope="k", peers=())
        + """
out = s.stream("log", DLog, writers=1)
out.extend(range(10))
out.flush()
time.sleep(600)
""",
    )
    inp = env.session("n0", "k").stream("log", DLog)
    seen: list[int] = []
    it = inp.items(timeout=30)
    while len(seen) < 10:
        seen.append(next(it))
    env.procs.kill("doomed", signal.SIGKILL)
    started = time.monotonic()
    with pytest.raises(StreamWriterFailed, match="stopped heartbeating"):
        for x in it:
            seen.append(x)
    assert seen == list(range(10))
    assert time.monotonic() - started < 20


def test_aborted_writer_and_session_finish(env: Env) -> None:
    s = env.session("n0", "ab")
    out = s.stream("log", DLog, writers=1)
    out.append(1)
    s.finish(error=RuntimeError("boom"))
    with pytest.raises(StreamWriterFailed, match="boom"):
        env.session("n0", "ab").stream("log", DLog).wait(timeout=10)
    ok = env.session("n0", "fin")
    ok.stream("log", DLog, writers=1).append(5)
    ok.finish()  # returning without sealing seals
    assert env.session("n0", "fin").stream("log", DLog).wait(timeout=10) == [5]


def test_reader_timeout_when_writer_is_slow(env: Env) -> None:
    w = env.session("n0", "slow").stream("log", DLog, writers=1)
    w.append(1)
    w.flush()
    r = env.session("n0", "slow").stream("log", DLog)
    it = r.items(timeout=0.5)
    assert next(it) == 1
    with pytest.raises(CloudburstTimeoutError):
        next(it)
    w.seal()
    w.close()
    r.close()


def test_back_pressure_bounds_the_writer(procs: ProcessGroup, tmp_path: Path) -> None:
    env = start_env(procs, tmp_path, nodes=1, buffer_max_bytes=256 * 1024)
    blob = b"b" * 16000
    w = env.session("n0", "bp").stream("log", DLog, writers=1, readers=1, retain=False)
    r = env.session("n0", "bp").stream("log", DLog)
    r.value()  # registers the reader, reads nothing yet
    written = [0]
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            for i in range(400):  # 6.4 MB (distinct objects: pickle would share one)
                w.append(b"%06d" % i + blob)
                written[0] += 1
            w.seal()
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            errors.append(exc)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    time.sleep(1.5)
    # The writer is held once the reader is ~256 KB (+ a few batches in flight) behind.
    assert written[0] < 80, written[0]
    stat = env.stat("n0", "bp/log")
    assert isinstance(stat["backlog"], int) and stat["backlog"] < 1024 * 1024
    got = sum(1 for _ in r.items(timeout=30))
    thread.join(timeout=30)
    assert not errors and not thread.is_alive()
    assert got == 400  # every blob once
    assert written[0] == 400
    w.close()
    r.close()


def test_free_releases_a_calls_streams(env: Env) -> None:
    w = env.session("n0", "gone").stream("log", DLog, writers=1)
    w.append(1)
    w.seal()
    assert env.stat("n0", "gone/log")["exists"]
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 1000)
    sock.connect(env.nodes["n0"].ipc)
    sock.send_multipart([b"stream.free", b"gone/"])
    sock.close()
    wait_until(lambda: not env.stat("n0", "gone/log")["exists"], timeout=5, what="free")
    w.close()


def test_stream_handle_misuse_is_a_clear_error(env: Env) -> None:
    s = env.session("n0", "misuse")
    log = s.stream("log", DLog, writers=1)
    with pytest.raises(Exception, match=r"add\(\) is for DCounter and DSet streams, not DLog"):
        log.add(1)
    with pytest.raises(Exception, match="is a DLog"):
        s.stream("log", DMap)
    log.seal()
    with pytest.raises(Exception, match="sealed"):
        log.append(2)
    assert isinstance(log, Stream)
    s.finish()


def test_map_update_many_and_inner_sets(env: Env) -> None:
    from cloudburst.ddt import DSet as _DSet

    s = env.session("n0", "many")
    counts = s.stream("counts", DMap, writers=1)
    counts.update_many({"a": 2, "b": 1})
    counts.update_many([("a", 3)])
    counts.seal()
    tags = s.stream("tags", DMap, writers=1, inner=_DSet)
    tags.update("x", 1)
    tags.update_many([("x", 2), ("y", 3)])
    tags.seal()
    r = env.session("n0", "many")
    assert r.stream("counts", DMap).wait(timeout=10) == {"a": 5, "b": 1}
    assert r.stream("tags", DMap).wait(timeout=10) == {
        "x": frozenset({1, 2}),
        "y": frozenset({3}),
    }
    s.finish()
    r.finish()


def test_reader_finishing_in_one_read_releases_a_held_writer(
    procs: ProcessGroup, tmp_path: Path
) -> None:
    # The writer's acknowledgements are held (backlog > 64 KB) while nobody reads; the
    # reader then takes everything, seal included, in one read larger than the bound.
    # Its final cursor must still reach the hub, or the writer's seal waits forever.
    env = start_env(procs, tmp_path, nodes=1, buffer_max_bytes=64 * 1024)
    w = env.session("n0", "one").stream("log", DLog, writers=1, readers=1, retain=False)
    r = env.session("n0", "one").stream("log", DLog)
    r.value()  # registers the reader at cursor 0
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            for i in range(10):  # 160 KB
                w.append(b"%03d" % i + b"x" * 16000)
            w.seal(timeout=20)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            errors.append(exc)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    wait_until(lambda: env.stat("n0", "one/log")["held_acks"] > 0, 20, "held writer")
    assert sum(1 for _ in r.items(timeout=20)) == 10
    thread.join(timeout=30)
    assert not thread.is_alive(), "the writer's seal never returned"
    assert not errors, errors
    w.close()
    r.close()
