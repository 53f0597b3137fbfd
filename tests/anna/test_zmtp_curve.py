"""anna.zmtp with CURVE: interop with libzmq (pyzmq) both ways, and refusals.

Every refusal test ends by checking that the server still serves an authorized client.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections import Counter

import pytest
import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from anna import zmtp
from anna.curve import CurveClient, keypair

IP = "127.0.0.1"

SERVER = keypair()
CLIENT = keypair()
STRANGER = keypair()


def dl(seconds: float) -> float:
    return time.monotonic() + seconds


def zk(key: bytes) -> bytes:
    return z85.encode(key)


CLIENT_CURVE = zmtp.Curve(CLIENT[0], CLIENT[1], server_public=SERVER[0])
SERVER_CURVE = zmtp.Curve(SERVER[0], SERVER[1], authorize=lambda k: k == CLIENT[0])


@pytest.fixture
def ctx():
    c = zmq.Context()
    auth = ThreadAuthenticator(c)
    auth.start()
    # libzmq servers in these tests admit exactly CLIENT's key.
    auth.configure_curve_callback("*", credentials_provider=_Only(CLIENT[0]))
    socks: list[zmq.Socket] = []

    def make(kind: int, role: str, keys=CLIENT, server_key=SERVER[0]) -> zmq.Socket:
        s = c.socket(kind)
        s.linger = 0
        s.rcvtimeo = 5000
        s.sndtimeo = 5000
        if role == "server":
            s.curve_server = True
            s.curve_secretkey, s.curve_publickey = zk(SERVER[1]), zk(SERVER[0])
        elif role == "client":
            s.curve_serverkey = zk(server_key)
            s.curve_publickey, s.curve_secretkey = zk(keys[0]), zk(keys[1])
        socks.append(s)
        return s

    yield make
    for s in socks:
        s.close(0)
    auth.stop()
    c.term()


class _Only:
    def __init__(self, key: bytes) -> None:
        self.key = key

    def callback(self, domain: str, key: bytes) -> bool:
        return key == z85.encode(self.key)  # pyzmq passes the key in Z85


@pytest.fixture
def server():
    stats: Counter[str] = Counter()
    srv = zmtp.ZmtpServer(IP, 0, stats, curve=SERVER_CURVE, handshake_timeout=1.0)
    srv.port = srv.lsock.getsockname()[1]
    srv.address = f"tcp://{IP}:{srv.port}"
    yield srv
    srv.close()


def poll_until(srv: zmtp.ZmtpServer, n: int = 1, seconds: float = 5.0) -> list:
    got: list = []
    end = dl(seconds)
    while len(got) < n and time.monotonic() < end:
        got.extend(srv.poll(0.05))
    return got


def in_thread(srv: zmtp.ZmtpServer, fn):
    """Run ``fn()`` (a blocking handshake) while this thread polls ``srv``; its result
    or the exception it raised."""
    result: dict = {}

    def run() -> None:
        try:
            result["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            result["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    end = dl(10)
    while t.is_alive() and time.monotonic() < end:
        srv.poll(0.01)
    t.join(5)
    if "error" in result:
        raise result["error"]
    return result["value"]


def connect(srv: zmtp.ZmtpServer, curve: zmtp.Curve | None = CLIENT_CURVE) -> zmtp.PushConnection:
    return in_thread(srv, lambda: zmtp.PushConnection(srv.address, dl(5), curve))


def assert_serves(srv: zmtp.ZmtpServer, payload: bytes = b"still-serving") -> None:
    conn = connect(srv)
    try:
        conn.send(payload)
        assert poll_until(srv) == [[payload]]
    finally:
        conn.close()


# ---- interop: our side against libzmq ----------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 255, 300, 70000, 1 << 20])
def test_our_client_to_libzmq_curve_server(ctx, size):
    pull = ctx(zmq.PULL, "server")
    port = pull.bind_to_random_port(f"tcp://{IP}")
    conn = zmtp.PushConnection(f"tcp://{IP}:{port}", dl(5), CLIENT_CURVE)
    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    conn.send(payload)
    conn.send_parts([b"a", payload])
    conn.send_multipart([b"f1", payload, b""])
    conn.send_many([b"m1", b"m2"])
    assert pull.recv() == payload
    assert pull.recv() == b"a" + payload
    assert pull.recv_multipart() == [b"f1", payload, b""]
    assert pull.recv() == b"m1" and pull.recv() == b"m2"
    conn.close()


def test_libzmq_curve_client_to_our_server_and_back(ctx, server):
    push = ctx(zmq.PUSH, "client")
    push.connect(server.address)
    for i in range(3):
        push.send_multipart([b"req", b"%d" % i])
    assert poll_until(server, 3) == [[b"req", b"%d" % i] for i in range(3)]
    # Replies: our server pushes (CURVE server) to a libzmq PULL that is CURVE client.
    reply = ctx(zmq.PULL, "client")
    rport = reply.bind_to_random_port(f"tcp://{IP}")
    for i in range(3):
        server.send(f"tcp://{IP}:{rport}", b"answer %d" % i)
    server.send_parts(f"tcp://{IP}:{rport}", [b"big ", b"y" * 100_000])
    got = []
    end = dl(5)
    reply.rcvtimeo = 50
    while len(got) < 4 and time.monotonic() < end:
        server.poll(0.02)
        try:
            got.append(reply.recv())
        except zmq.Again:
            pass
    assert got == [b"answer 0", b"answer 1", b"answer 2", b"big " + b"y" * 100_000]


def test_libzmq_curve_server_push_to_our_listener(ctx):
    listener = zmtp.PullListener(IP, 0, CLIENT_CURVE)
    try:
        push = ctx(zmq.PUSH, "server")
        push.connect(listener.address)
        push.send(b"one")
        push.send_multipart([b"two", b"parts"])
        assert listener.recv(dl(5)) == [b"one"]
        assert listener.recv(dl(5)) == [b"two", b"parts"]
    finally:
        listener.close()


def test_our_client_to_our_server(server):
    conn = connect(server)
    conn.send_multipart([b"x", b"y" * 200_000])
    assert poll_until(server) == [[b"x", b"y" * 200_000]]
    # And our server's replies reach our listener.
    listener = zmtp.PullListener(IP, 0, CLIENT_CURVE)
    try:
        server.send(listener.address, b"reply")
        end = dl(5)
        got = None
        while got is None and time.monotonic() < end:
            server.poll(0.01)
            got = listener.recv(dl(0.02))
        assert got == [b"reply"]
    finally:
        listener.close()
        conn.close()


# ---- refusals by libzmq servers, seen by our client ----------------------------------------


def test_our_client_wrong_server_key_against_libzmq(ctx):
    pull = ctx(zmq.PULL, "server")
    port = pull.bind_to_random_port(f"tcp://{IP}")
    wrong = zmtp.Curve(CLIENT[0], CLIENT[1], server_public=STRANGER[0])
    t0 = time.monotonic()
    with pytest.raises(zmtp.ZmtpRefused, match="server key"):
        zmtp.PushConnection(f"tcp://{IP}:{port}", dl(5), wrong)
    assert time.monotonic() - t0 < 5


def test_our_client_unknown_key_against_libzmq(ctx):
    pull = ctx(zmq.PULL, "server")
    port = pull.bind_to_random_port(f"tcp://{IP}")
    stranger = zmtp.Curve(STRANGER[0], STRANGER[1], server_public=SERVER[0])
    with pytest.raises(zmtp.ZmtpRefused, match="400"):
        zmtp.PushConnection(f"tcp://{IP}:{port}", dl(5), stranger)


def test_our_null_client_against_curve_server_and_back(ctx, server):
    pull = ctx(zmq.PULL, "server")
    port = pull.bind_to_random_port(f"tcp://{IP}")
    with pytest.raises(zmtp.ZmtpError):
        zmtp.PushConnection(f"tcp://{IP}:{port}", dl(2))
    # Our CURVE client against a NULL server: refused with a clear message.
    plain = ctx(zmq.PULL, "null")
    port = plain.bind_to_random_port(f"tcp://{IP}")
    with pytest.raises(zmtp.ZmtpRefused, match="not speak CURVE|NULL mechanism"):
        zmtp.PushConnection(f"tcp://{IP}:{port}", dl(5), CLIENT_CURVE)


# ---- refusals by our server ---------------------------------------------------------------


def test_wrong_server_key_refused(server, ctx):
    wrong = zmtp.Curve(CLIENT[0], CLIENT[1], server_public=STRANGER[0])
    with pytest.raises(zmtp.ZmtpRefused, match="400"):
        connect(server, wrong)
    # A libzmq client with the wrong server key delivers nothing.
    push = ctx(zmq.PUSH, "client", server_key=STRANGER[0])
    push.connect(server.address)
    push.send(b"must not arrive")
    assert poll_until(server, seconds=0.5) == []
    assert server.stats["curve_refused"] >= 2
    assert_serves(server)


def test_unknown_client_key_refused(server, ctx):
    stranger = zmtp.Curve(STRANGER[0], STRANGER[1], server_public=SERVER[0])
    with pytest.raises(zmtp.ZmtpRefused, match="400"):
        connect(server, stranger)
    push = ctx(zmq.PUSH, "client", keys=STRANGER)
    push.connect(server.address)
    push.send(b"must not arrive")
    assert poll_until(server, seconds=0.5) == []
    assert_serves(server)


def test_null_peer_refused(server, ctx):
    push = ctx(zmq.PUSH, "null")
    push.connect(server.address)
    push.send(b"plain text")
    with pytest.raises(zmtp.ZmtpError):
        connect(server, None)  # our own NULL client
    assert poll_until(server, seconds=0.5) == []
    assert_serves(server)


def raw_session(srv: zmtp.ZmtpServer) -> tuple[socket.socket, zmtp.CurveCodec]:
    sock = socket.create_connection((IP, srv.port), timeout=5)
    _props, codec = in_thread(srv, lambda: zmtp.curve_handshake(sock, b"PUSH", dl(5), CLIENT_CURVE))
    return sock, codec


def test_tampered_box_closes_that_connection_only(server):
    sock, codec = raw_session(server)
    good = codec.seal(b"fine")
    sock.sendall(zmtp.frame_header(len(good)) + good)
    assert poll_until(server) == [[b"fine"]]
    bad = bytearray(codec.seal(b"evil"))
    bad[20] ^= 0x40
    sock.sendall(zmtp.frame_header(len(bad)) + bytes(bad))
    assert poll_until(server, seconds=0.5) == []
    sock.settimeout(5)
    assert sock.recv(100) == b""  # the server hung up
    sock.close()
    assert_serves(server)


def test_replayed_and_decreasing_nonce(server):
    sock, codec = raw_session(server)
    one = codec.seal(b"one")
    two = codec.seal(b"two")
    sock.sendall(zmtp.frame_header(len(two)) + two)
    assert poll_until(server) == [[b"two"]]
    sock.sendall(zmtp.frame_header(len(one)) + one)  # an older nonce
    sock.sendall(zmtp.frame_header(len(two)) + two)  # a replay
    assert poll_until(server, seconds=0.5) == []
    sock.settimeout(5)
    assert sock.recv(100) == b""
    sock.close()
    assert_serves(server)


def greeting_then(srv: zmtp.ZmtpServer, data: bytes) -> socket.socket:
    sock = socket.create_connection((IP, srv.port), timeout=5)
    sock.sendall(zmtp.CURVE_GREETING_CLIENT + data)
    return sock


@pytest.mark.parametrize("cut", [1, 2, 50, 150, 201])
def test_truncated_or_bad_hello(server, cut):
    hello = zmtp.command_frame(CurveClient(SERVER[0], *CLIENT, {}).hello())
    data = hello[:cut] if cut <= len(hello) else zmtp.command_frame(b"\x05HELLO" + bytes(300))
    sock = greeting_then(server, data)
    if cut < len(hello):
        sock.shutdown(socket.SHUT_WR)  # truncated: the peer stops mid-command
    end = dl(5)
    while time.monotonic() < end and not server.inbound:
        server.poll(0.02)
    poll_until(server, seconds=0.3)
    sock.close()
    assert_serves(server)


def test_truncated_initiate_gets_error(server):
    sock = socket.create_connection((IP, server.port), timeout=5)
    client = CurveClient(SERVER[0], *CLIENT, {b"Socket-Type": b"PUSH"})
    sock.sendall(zmtp.CURVE_GREETING_CLIENT + zmtp.command_frame(client.hello()))
    buf = b""
    end = dl(5)
    while len(buf) < 64 + 2 + 168 and time.monotonic() < end:
        server.poll(0.01)
        sock.settimeout(0.05)
        try:
            buf += sock.recv(1000)
        except TimeoutError:
            pass
    initiate = client.welcome(buf[66 : 66 + 168])
    sock.sendall(zmtp.command_frame(initiate[:200]))
    sock.settimeout(0.05)
    rest = b""
    while time.monotonic() < end and b"ERROR" not in rest:
        server.poll(0.01)
        try:
            rest += sock.recv(100)
        except TimeoutError:
            pass
    assert b"\x05ERROR" in rest
    sock.close()
    assert_serves(server)


def test_handshake_timeout_drops_silent_peers(server):
    socks = [socket.create_connection((IP, server.port), timeout=5) for _ in range(5)]
    end = dl(10)
    while time.monotonic() < end and server.stats["handshake_timeouts"] < 5:
        server.poll(0.05)
    assert server.stats["handshake_timeouts"] == 5
    assert not server.inbound
    for s in socks:
        s.close()
    assert_serves(server)


def test_huge_size_header_is_cut_off(server):
    # Unauthenticated: a 4 GB command or message header is refused at once.
    for flags in (0x06, 0x02):
        sock = greeting_then(server, bytes((flags,)) + struct.pack(">Q", 4 << 30))
        sock.settimeout(5)
        end = dl(5)
        closed = False
        while time.monotonic() < end and not closed:
            server.poll(0.02)
            try:
                sock.setblocking(False)
                closed = sock.recv(1000) == b""
            except BlockingIOError:
                pass
        assert closed
        sock.close()
    # Authenticated, over max_frame: cut off too.
    stats: Counter[str] = Counter()
    small = zmtp.ZmtpServer(IP, 0, stats, curve=SERVER_CURVE, max_frame=1000)
    small.port = small.lsock.getsockname()[1]
    small.address = f"tcp://{IP}:{small.port}"
    try:
        sock, codec = raw_session(small)
        big = codec.seal(b"z" * 5000)
        sock.sendall(zmtp.frame_header(len(big)) + big)
        assert poll_until(small, seconds=0.5) == []
        sock.settimeout(5)
        assert sock.recv(100) == b""
        sock.close()
        assert_serves(small)
    finally:
        small.close()


def test_many_connections_are_cut_off_and_clients_still_served(server):
    """10,000 connections from one host: beyond the per-peer limit they are closed on
    accept; the authorized client connected before keeps being answered."""
    conn = connect(server)
    conn.send(b"before")
    assert poll_until(server) == [[b"before"]]
    server.max_per_peer = 100
    flood: list[socket.socket] = []
    got: list = []
    try:
        for i in range(10_000):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex((IP, server.port))
            flood.append(s)
            if i % 200 == 0:
                got.extend(server.poll(0))
                conn.send(b"during %d" % i)
        got.extend(poll_until(server, 50 - len(got), seconds=20))
        assert [b"during %d" % i for i in range(0, 10_000, 200)] == [m[0] for m in got]
        end = dl(10)
        while time.monotonic() < end and server.stats["conn_over_limit"] < 9_000:
            server.poll(0.02)
        assert len(server.inbound) <= 100
        assert server.stats["conn_over_limit"] >= 9_000
    finally:
        for s in flood:
            s.close()
        conn.close()
    # Once the flood's connections are gone, new ones from that host are taken again.
    end = dl(10)
    while time.monotonic() < end and len(server.inbound) > 0:
        server.poll(0.02)
    assert_serves(server)


def test_listener_refuses_null_and_wrong_keys_when_polled(ctx):
    listener = zmtp.PullListener(IP, 0, CLIENT_CURVE)
    try:
        null = ctx(zmq.PUSH, "null")
        null.connect(listener.address)
        null.send(b"plain")
        impostor = ctx(zmq.PUSH, "client", keys=STRANGER, server_key=SERVER[0])
        impostor.curve_server = True  # claims to be the server, with another key
        impostor.curve_secretkey, impostor.curve_publickey = zk(STRANGER[1]), zk(STRANGER[0])
        impostor.connect(listener.address)
        impostor.send(b"forged")
        assert listener.recv(dl(1.5)) is None
        assert listener.refusals >= 1
        good = ctx(zmq.PUSH, "server")
        good.connect(listener.address)
        good.send(b"genuine")
        assert listener.recv(dl(5)) == [b"genuine"]
    finally:
        listener.close()


def test_replies_to_new_listeners_while_the_server_loops(server):
    """The server's WELCOME must follow its own greeting even when the listener's HELLO
    arrives in the same poll as the connection becoming writable (it used to go first
    and the listener hung up: the reply was lost)."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            server.cork()
            for m in server.poll(0.01):
                server.send(bytes(m[0]).decode(), b"reply")
            server.uncork()

    t = threading.Thread(target=loop)
    t.start()
    try:
        for _ in range(5):
            listener = zmtp.PullListener(IP, 0, CLIENT_CURVE)
            conn = zmtp.PushConnection(server.address, dl(5), CLIENT_CURVE)
            try:
                conn.send(listener.address.encode())
                assert listener.recv(dl(5)) == [b"reply"]
            finally:
                conn.close()
                listener.close()
    finally:
        stop.set()
        t.join(5)
    assert server.stats["send_dropped"] == 0


def test_spin_windows_are_wider_under_curve():
    """Under CURVE both spin windows grow by CURVE_SPIN_EXTRA_US (the boxes lengthen
    each side's turnaround); 0 still means never spin."""
    extra = zmtp.CURVE_SPIN_EXTRA_US
    assert zmtp.spin_window_s(100, False) == pytest.approx(100e-6)
    assert zmtp.spin_window_s(100, True) == pytest.approx((100 + extra) * 1e-6)
    assert zmtp.spin_window_s(0, True) == 0.0
    assert zmtp.spin_window_s(-5, True) == 0.0
    from anna.client import AnnaTcpClient

    keys = zmtp.Curve(*keypair(), server_public=keypair()[0])
    plain = AnnaTcpClient("127.0.0.1", local=True, routing_port=1, spin_us=100)
    sealed = AnnaTcpClient("127.0.0.1", local=True, routing_port=1, spin_us=100, curve=keys)
    off = AnnaTcpClient("127.0.0.1", local=True, routing_port=1, spin_us=0, curve=keys)
    try:
        assert sealed.spin == pytest.approx(plain.spin + extra * 1e-6)
        assert off.spin == 0.0
    finally:
        for c in (plain, sealed, off):
            c.close()
