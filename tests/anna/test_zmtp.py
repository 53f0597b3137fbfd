"""anna.zmtp against real libzmq peers (pyzmq) and raw TCP garbage on 127.0.0.1."""

from __future__ import annotations

import gc
import random
import select
import socket
import struct
import threading
import time
import traceback
import warnings
from collections import Counter

import pytest
import zmq

from anna.zmtp import (
    BIG_FRAME,
    GREETING,
    PullListener,
    PushConnection,
    ZmtpError,
    ZmtpServer,
    frame_header,
    parse_ready,
    parse_tcp,
    ready_command,
)
from cloudburst.shared.processes import free_port

IP = "127.0.0.1"
SIZES = [0, 1, 255, 256, 65535, 65536, 1 << 20]


def dl(seconds: float) -> float:
    return time.monotonic() + seconds


def blob(n: int, seed: int = 0) -> bytes:
    return random.Random(seed * 1_000_003 + n).randbytes(n)


class Zmq:
    """A pyzmq context whose sockets stay referenced until teardown closes them."""

    def __init__(self) -> None:
        self.ctx, self.socks = zmq.Context(), []

    def socket(self, kind: int, bind: str | None = None, connect: str | None = None):
        s = self.ctx.socket(kind)
        self.socks.append(s)
        for opt in (zmq.RCVTIMEO, zmq.SNDTIMEO):
            s.setsockopt(opt, 5000)
        s.setsockopt(zmq.LINGER, 0)
        if bind:
            s.bind(bind)
        if connect:
            s.connect(connect)
        return s

    def bound(self, kind: int, port: int | str = "*") -> tuple[zmq.Socket, str]:
        s = self.socket(kind, bind=f"tcp://{IP}:{port}")
        return s, s.getsockopt_string(zmq.LAST_ENDPOINT)

    def push_to(self, address: str) -> zmq.Socket:
        return self.socket(zmq.PUSH, connect=address)


@pytest.fixture
def ctx():
    z = Zmq()
    yield z
    for s in z.socks:
        s.close(linger=0)
    z.ctx.term()


@pytest.fixture
def server():
    port = free_port(IP)
    stats: Counter = Counter()
    srv = ZmtpServer(IP, port, stats)
    try:
        yield srv, f"tcp://{IP}:{port}", stats
    finally:
        srv.close()


def drain(srv: ZmtpServer, want: int, timeout: float = 5.0) -> list:
    got: list = []
    end = dl(timeout)
    while len(got) < want and time.monotonic() < end:
        got.extend(srv.poll(0.02))
    return got


def pump(srv: ZmtpServer, pull: zmq.Socket, want: int, timeout: float = 10.0) -> list[bytes]:
    """Drive the server while a pyzmq PULL collects ``want`` messages."""
    got: list[bytes] = []
    end = dl(timeout)
    while len(got) < want and time.monotonic() < end:
        srv.poll(0.005)
        while len(got) < want:
            try:
                got.append(pull.recv(zmq.NOBLOCK))
            except zmq.Again:
                break
    return got


def wait_for(cond, srv: ZmtpServer, timeout: float = 5.0) -> bool:
    end = dl(timeout)
    while not cond():
        if time.monotonic() > end:
            return False
        srv.poll(0.01)
    return True


# ---- 1. PushConnection -> pyzmq PULL -----------------------------------------------------


def test_push_connection_to_libzmq_pull(ctx):
    pull, addr = ctx.bound(zmq.PULL)
    conn = PushConnection(addr, dl(5))
    try:
        for n in SIZES:
            data = blob(n)
            conn.send(data)
            assert pull.recv() == data
            conn.send(bytearray(data))
            assert pull.recv() == data
            conn.send(memoryview(data))
            assert pull.recv() == data
            conn.send_parts([data[: n // 3], b"", data[n // 3 :]])
            assert pull.recv() == data
            conn.send_parts([])
            assert pull.recv() == b""
        frames = [b"a", b"", blob(1 << 20, 1), b"z" * 300, blob(70000, 2)]
        conn.send_multipart(frames)
        assert pull.recv_multipart() == frames
        conn.send_multipart([b"only"])
        assert pull.recv_multipart() == [b"only"]
        for i in range(2000):
            conn.send(b"m%d" % i)
        assert [pull.recv() for _ in range(2000)] == [b"m%d" % i for i in range(2000)]
    finally:
        conn.close()
        conn.close()  # idempotent
    with pytest.raises(ZmtpError):
        conn.send(b"after close")
    with pytest.raises(ZmtpError):
        conn.send_parts([b"x"])
    with pytest.raises(ZmtpError):
        conn.send_multipart([b"x"])


# ---- 2. pyzmq PUSH -> PullListener -------------------------------------------------------


@pytest.fixture
def listener():
    lst = PullListener(IP)
    try:
        yield lst
    finally:
        lst.close()
        lst.close()


def test_pull_listener_sizes_and_multipart(ctx, listener):
    push = ctx.push_to(listener.address)
    for n in [*SIZES, 5 << 20]:
        data = blob(n)
        push.send(data)
        msg = listener.recv(dl(5))
        assert msg is not None and len(msg) == 1
        assert len(msg[0]) == n and msg[0] == data
        if n >= 1 << 20:
            assert isinstance(msg[0], bytearray)  # received in place
    frames = [blob(1 << 20, 3), b"", b"x", blob(BIG_FRAME, 4), b"y" * 256]
    push.send_multipart(frames)
    assert listener.recv(dl(5)) == frames
    for i in range(500):
        push.send_multipart([b"k%d" % i, b"v" * (i % 300)])
    for i in range(500):
        assert listener.recv(dl(5)) == [b"k%d" % i, b"v" * (i % 300)]


def test_pull_listener_several_peers(ctx, listener):
    pushes = [ctx.push_to(listener.address) for _ in range(3)]
    per_peer = 300
    for i in range(per_peer):
        for p, push in enumerate(pushes):
            push.send(b"%d:%d" % (p, i) + b"." * (i * 37 % 2000))
    seen: dict[int, list[int]] = {0: [], 1: [], 2: []}
    for _ in range(3 * per_peer):
        msg = listener.recv(dl(5))
        assert msg is not None and len(msg) == 1
        p, i = bytes(msg[0]).split(b".")[0].split(b":")
        seen[int(p)].append(int(i))
    assert all(seen[p] == list(range(per_peer)) for p in seen)
    assert listener.recv(dl(0.1)) is None


def test_pull_listener_deadline_and_spin(ctx, listener):
    for spin in (0.0, 0.1, 5.0):
        t0 = time.monotonic()
        assert listener.recv(t0 + 0.3, spin=spin) is None
        assert 0.29 <= time.monotonic() - t0 < 0.8
    t0 = time.monotonic()
    assert listener.recv(t0 - 1) is None  # past deadline: one look, no wait
    assert time.monotonic() - t0 < 0.2
    # A silent raw connection must not stall a real peer.
    silent = socket.create_connection((IP, listener.port), timeout=5)
    try:
        push = ctx.push_to(listener.address)
        push.send(b"spun")
        assert listener.recv(dl(5), spin=2.0) == [b"spun"]
        push.send(b"slept")
        assert listener.recv(dl(5)) == [b"slept"]
    finally:
        silent.close()


# ---- 3. ZmtpServer ----------------------------------------------------------------------


def test_server_receives_from_libzmq_push(ctx, server):
    srv, addr, stats = server
    a, b = ctx.push_to(addr), ctx.push_to(addr)
    big = blob(1 << 20, 5)
    a.send(b"from-a")
    b.send_multipart([b"from-b", b"", big])
    a.send(big)
    got = drain(srv, 3)
    assert sorted(got, key=len) == sorted([[b"from-a"], [b"from-b", b"", big], [big]], key=len)
    assert stats["zmtp_accepted"] == 2
    for i in range(300):
        a.send(b"%d" % i)
    assert [m[0] for m in drain(srv, 300)] == [b"%d" % i for i in range(300)]


def test_server_send_before_handshake_keeps_order(ctx, server):
    srv, _, stats = server
    pull, paddr = ctx.bound(zmq.PULL)
    early = [b"r%d" % i for i in range(101)] + [blob(1 << 20, 8), b"after-big"]
    for m in early:  # nothing polled: all of it waits for the peer's READY
        srv.send(paddr, m)
    assert pump(srv, pull, len(early)) == early
    big, huge = blob(1 << 20, 6), bytearray(blob(5 << 20, 7))
    srv.send(paddr, big)
    srv.send(paddr, huge)  # more than the socket buffer: the rest is queued
    srv.send(paddr, b"tail")
    srv.flush_all(0.2)
    assert pump(srv, pull, 3) == [big, huge, b"tail"]
    srv.send(paddr, memoryview(b"mv" * 200))
    assert pump(srv, pull, 1) == [b"mv" * 200]
    assert stats["send_dropped"] == 0


def test_server_send_to_nobody_does_not_block(server):
    srv, _, stats = server
    dead = f"tcp://{IP}:{free_port(IP)}"
    t0 = time.monotonic()
    for _ in range(20):
        srv.send(dead, b"x" * 1000)
    assert time.monotonic() - t0 < 0.5
    assert wait_for(lambda: stats["send_dropped"] >= 1, srv, 3)
    assert dead not in srv.outbound or wait_for(lambda: dead not in srv.outbound, srv, 3)
    for bad in ("ipc:///tmp/x", "tcp://127.0.0.1", "tcp://:5", "tcp://h:port"):
        srv.send(bad, b"x")
    assert stats["bad_address"] == 4


def test_server_send_to_out_of_range_port_is_a_bad_address(server):
    srv, _, stats = server
    try:
        srv.send("tcp://127.0.0.1:99999", b"x")  # a reply address comes from the request
    except OverflowError as exc:
        # The socket _connect created leaks with the traceback: close it quietly here.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            traceback.clear_frames(exc.__traceback__)
            gc.collect()
        pytest.fail(f"send raised {exc!r}")
    assert stats["bad_address"] == 1


def test_server_counts_messages_lost_before_handshake(ctx, server):
    srv, _, stats = server
    _, paddr = ctx.bound(zmq.PUSH)  # not a PULL: libzmq hangs up during the handshake
    for _ in range(3):
        srv.send(paddr, b"lost")  # queued in oc.waiting until the peer's READY
    assert wait_for(lambda: paddr not in srv.outbound, srv, 3)
    assert stats["send_dropped"] >= 1  # 3 messages vanished without a trace


@pytest.mark.parametrize("poll_between", [True, False])
def test_server_peer_goes_away_and_comes_back(ctx, server, poll_between):
    srv, _, stats = server
    port = free_port(IP)
    pull, paddr = ctx.bound(zmq.PULL, port)
    srv.send(paddr, b"first")
    assert pump(srv, pull, 1) == [b"first"]
    pull.close()
    if poll_between:
        assert wait_for(lambda: paddr not in srv.outbound, srv, 3)  # EOF noticed by poll
    else:
        time.sleep(0.1)
        for i in range(5):  # send finds out by itself (EPIPE) and does not raise
            srv.send(paddr, b"lost-%d" % i)
    pull2, _ = ctx.bound(zmq.PULL, port)
    got: list[bytes] = []
    end = dl(5)
    while not got and time.monotonic() < end:
        srv.send(paddr, b"again")
        got = pump(srv, pull2, 1, timeout=0.05)
    assert got == [b"again"]


def test_server_fileno_readable_on_message(ctx, server):
    srv, addr, _ = server
    push = ctx.push_to(addr)
    push.send(b"one")
    assert select.select([srv.fileno()], [], [], 5)[0] == [srv.fileno()]
    assert drain(srv, 1) == [[b"one"]]
    for _ in range(20):  # quiet again once everything is handled
        srv.poll(0.01)
    assert select.select([srv.fileno()], [], [], 0.05)[0] == []
    push.send(b"two")
    assert select.select([srv.fileno()], [], [], 5)[0] == [srv.fileno()]
    assert drain(srv, 1) == [[b"two"]]


# ---- 4. ZmtpServer robustness -----------------------------------------------------------


def _greeting(version: int = 3, mechanism: bytes = b"NULL", sig0: int = 0xFF) -> bytes:
    g = bytearray(GREETING)
    g[0] = sig0
    g[10] = version
    g[12:32] = mechanism.ljust(20, b"\x00")
    return bytes(g)


GARBAGE = {
    "random": b"\x00" + random.Random(1).randbytes(4095),
    "http": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b" " * 64,
    "truncated-greeting": GREETING[:30],
    "bad-signature": _greeting(sig0=0xFE),
    "zmtp2": _greeting(version=2),
    "curve": _greeting(mechanism=b"CURVE"),
    "frame-2**40": GREETING + ready_command(b"PUSH") + b"\x02" + struct.pack(">Q", 1 << 40),
    "frame-2**63": GREETING + b"\x03" + b"\xff" * 8,
}


@pytest.mark.parametrize("close", [True, False], ids=["then-close", "keep-open"])
@pytest.mark.parametrize("kind", list(GARBAGE))
def test_server_survives_garbage(ctx, server, kind, close):
    srv, addr, stats = server
    push = ctx.push_to(addr)
    push.send(b"before")
    assert drain(srv, 1) == [[b"before"]]
    silent = socket.create_connection((IP, int(addr.rsplit(":", 1)[1])), timeout=5)
    bad = socket.create_connection((IP, int(addr.rsplit(":", 1)[1])), timeout=5)
    try:
        bad.sendall(GARBAGE[kind])
        if close:
            bad.close()
        assert wait_for(lambda: stats["zmtp_accepted"] == 3, srv)
        if not close and kind == "truncated-greeting":
            assert len(srv.inbound) == 3  # still waiting for the rest of the greeting
            bad.close()
        assert wait_for(lambda: len(srv.inbound) == 2, srv)  # the silent one stays
        if bad.fileno() != -1:  # the server hung up on it
            bad.settimeout(5)
            try:
                while bad.recv(65536):
                    pass
            except ConnectionResetError:
                pass
        push.send(b"after")
        assert drain(srv, 1) == [[b"after"]]
    finally:
        bad.close()
        silent.close()
    assert wait_for(lambda: len(srv.inbound) == 1, srv)


def test_server_reassembles_byte_by_byte(server):
    srv, addr, _ = server
    big = blob(BIG_FRAME + 5000, 9)
    stream = GREETING + ready_command(b"PUSH")
    stream += frame_header(5) + b"hello"
    stream += frame_header(3, more=True) + b"abc" + b"\x02" + struct.pack(">Q", 300) + b"L" * 300
    stream += b"\x04\x05PING\x00"  # a command between messages: ignored
    stream += frame_header(len(big)) + big
    stream += frame_header(0)
    raw = socket.create_connection((IP, int(addr.rsplit(":", 1)[1])), timeout=5)
    got: list = []
    try:
        head = len(stream) - len(big) - 2
        for i in range(head):  # header part: one byte per segment
            raw.sendall(stream[i : i + 1])
            got.extend(srv.poll(0.002))
        for i in range(head, len(stream), 997):
            raw.sendall(stream[i : i + 997])
            got.extend(srv.poll(0.001))
        got.extend(drain(srv, 4 - len(got)))
    finally:
        raw.close()
    assert got == [[b"hello"], [b"abc", b"L" * 300], [big], [b""]]


def test_pull_listener_drops_garbage_peers(ctx, listener):
    push = ctx.push_to(listener.address)
    push.send(b"before")
    assert listener.recv(dl(5)) == [b"before"]
    bad = [socket.create_connection((IP, listener.port), timeout=5) for _ in GARBAGE]
    try:
        for sock, data in zip(bad, GARBAGE.values(), strict=True):
            sock.sendall(data)
        bad[list(GARBAGE).index("truncated-greeting")].close()
        assert listener.recv(dl(0.3)) is None
        assert len(listener.conns) == 1  # only the real peer is left
        push.send(b"after")
        assert listener.recv(dl(5)) == [b"after"]
    finally:
        for sock in bad:
            sock.close()


# ---- 5. PushConnection failures ---------------------------------------------------------


def test_push_connection_nothing_listening_times_out():
    addr = f"tcp://{IP}:{free_port(IP)}"
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        PushConnection(addr, t0 + 0.5)
    assert 0.45 <= time.monotonic() - t0 < 1.5


def test_push_connection_to_wrong_socket_type(ctx):
    _, addr = ctx.bound(zmq.PUSH)
    t0 = time.monotonic()
    with pytest.raises((ZmtpError, TimeoutError)):
        PushConnection(addr, t0 + 2)
    assert time.monotonic() - t0 < 3


def _fake_peer(reply: bytes | None, hang_up: bool):
    """A listener whose one connection gets ``reply``, then EOF (``hang_up``) or silence."""
    lsock = socket.create_server((IP, 0))
    lsock.settimeout(5)

    def run() -> None:
        try:
            conn, _ = lsock.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(3)
            if reply is not None:
                conn.sendall(reply)
            got, hello = 0, len(GREETING + ready_command(b"PUSH"))
            try:  # hang up only after reading the client's hello: a clean EOF, not a reset
                while chunk := conn.recv(4096):
                    got += len(chunk)
                    if hang_up and got >= hello:
                        break
            except OSError:
                pass

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return lsock, t, f"tcp://{IP}:{lsock.getsockname()[1]}"


P = pytest.param
BAD_HANDSHAKES = [
    P(None, False, TimeoutError, id="silent"),
    P(GREETING[:40], False, TimeoutError, id="half-greeting"),
    P(GREETING[:40], True, ZmtpError, id="half-greeting-eof"),
    P(GREETING, True, ZmtpError, id="eof-instead-of-ready"),
    P(b"HTTP/1.1 400 Bad Request\r\n\r\n" + b" " * 64, False, ZmtpError, id="http"),
    P(_greeting(version=2), False, ZmtpError, id="zmtp2"),
    P(_greeting(mechanism=b"CURVE"), False, ZmtpError, id="curve"),
    P(GREETING + frame_header(5) + b"hello", False, ZmtpError, id="message-first"),
    P(GREETING + b"\x06" + struct.pack(">Q", 1 << 20), False, ZmtpError, id="huge-ready"),
    P(GREETING + ready_command(b"PUB"), False, ZmtpError, id="pub"),
]


@pytest.mark.parametrize("reply,hang_up,error", BAD_HANDSHAKES)
def test_push_connection_bad_handshakes(reply, hang_up, error):
    lsock, t, addr = _fake_peer(reply, hang_up)
    try:
        t0 = time.monotonic()
        with pytest.raises(error):
            PushConnection(addr, t0 + 0.5)
        assert time.monotonic() - t0 < 1.5
    finally:
        lsock.close()
        t.join(5)


def test_push_connection_peer_goes_away(ctx):
    pull, addr = ctx.bound(zmq.PULL)
    conn = PushConnection(addr, dl(5))
    try:
        conn.send(b"hello")
        assert pull.recv() == b"hello"
        pull.close()
        time.sleep(0.05)
        with pytest.raises(ZmtpError):
            for _ in range(50):
                conn.send(b"x" * 100)
                time.sleep(0.02)
        assert conn.sock is None
        with pytest.raises(ZmtpError):
            conn.send(b"again")
    finally:
        conn.close()


# ---- 6. pure helpers --------------------------------------------------------------------


def test_ready_roundtrip():
    cmd = ready_command(b"PUSH")
    assert cmd[0] == 0x04 and cmd[1] == len(cmd) - 2
    assert parse_ready(cmd[2:]) == {b"socket-type": b"PUSH"}
    body = b"\x05READY" + b"\x08Identity" + struct.pack(">I", 0) + b"\x01X" + b"\x00\x00\x00\x02ab"
    assert parse_ready(body) == {b"identity": b"", b"x": b"ab"}
    for bad in (b"", b"\x05READ", b"\x05HELLO", b"\x05READY\x0bSocket-Type\x00\x00", cmd[2:-1]):
        with pytest.raises(ZmtpError):
            parse_ready(bad)


def test_frame_header():
    assert frame_header(0) == b"\x00\x00"
    assert frame_header(0, more=True) == b"\x01\x00"
    assert frame_header(255) == b"\x00\xff"
    assert frame_header(256) == b"\x02" + b"\x00" * 6 + b"\x01\x00"
    assert frame_header(256, more=True) == b"\x03" + b"\x00" * 6 + b"\x01\x00"
    assert frame_header(2**33) == b"\x02\x00\x00\x00\x02\x00\x00\x00\x00"
    assert len(GREETING) == 64 and GREETING[:10] == b"\xff" + bytes(8) + b"\x7f"


def test_parse_tcp():
    assert parse_tcp("tcp://127.0.0.1:5555") == ("127.0.0.1", 5555)
    assert parse_tcp("tcp://host.example:1") == ("host.example", 1)
    assert parse_tcp("tcp://::1:80") == ("::1", 80)
    for bad in ("udp://h:1", "tcp://h", "tcp://:5", "tcp://h:", "tcp://h:x1", "tcp://h:-1", "h:1"):
        with pytest.raises(ValueError):
            parse_tcp(bad)


OUT_OF_FDS_SERVER = """
import resource, sys, time
from collections import Counter
from anna.zmtp import ZmtpServer

stats = Counter()
srv = ZmtpServer("127.0.0.1", int(sys.argv[1]), stats)
resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))
print("ready", flush=True)
got = []
start_cpu, end = time.process_time(), time.monotonic() + float(sys.argv[2])
while time.monotonic() < end and not got:
    got = srv.poll(0.05)
cpu = time.process_time() - start_cpu
print("got", got, "exhausted", stats["accept_exhausted"], "cpu", round(cpu, 3), flush=True)
"""


def test_server_out_of_descriptors_neither_spins_nor_stops_accepting(tmp_path):
    """More connections than descriptors: the listener is paused, not spun on, and a
    peer that comes once descriptors are free again gets its message through."""
    import subprocess
    import sys

    port = free_port(IP)
    proc = subprocess.Popen(
        [sys.executable, "-c", OUT_OF_FDS_SERVER, str(port), "20"],
        stdout=subprocess.PIPE,
        text=True,
    )
    hogs: list[socket.socket] = []
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        for _ in range(80):  # well past the server's 48 descriptors
            hogs.append(socket.create_connection((IP, port), timeout=5))
        time.sleep(1.5)  # the server meets EMFILE and pauses its listener meanwhile
        for s in hogs:
            s.close()
        hogs.clear()
        push.connect(f"tcp://{IP}:{port}")
        push.send(b"after the storm")
        out, _ = proc.communicate(timeout=30)
    finally:
        for s in hogs:
            s.close()
        push.close(0)
        ctx.term()
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert "got [[b'after the storm']]" in out, out
    fields = out.split()
    assert int(fields[fields.index("exhausted") + 1]) >= 1, out
    # ~2 s of wall time in poll: a listener spun on would burn most of it.
    assert float(fields[fields.index("cpu") + 1]) < 1.0, out
