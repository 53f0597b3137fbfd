"""kvs.allow_insecure_clients: Anna's own NULL clients on a CURVE cluster, opt-in only.

The pure policy (anna.insecure), then a CURVE ``ZmtpServer`` open to NULL peers of
listed networks (in process): NULL and CURVE on one port, NULL answers back over NULL,
everyone else refused as without the opt-in.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

import pytest

from anna import insecure, zmtp
from anna.proto import anna_pb2 as pb
from cloudburst.shared import security
from cloudburst.shared.config import load_config

from .test_zmtp_curve import CLIENT_CURVE, IP, SERVER_CURVE, dl, in_thread, poll_until

LOOPBACK = insecure.parse_networks("127.0.0.0/8")
ELSEWHERE = insecure.parse_networks("10.0.0.0/8")


def key_request(address: str, key: str = "k") -> bytes:
    req = pb.KeyRequest(type=pb.GET, response_address=address, request_id="r1")
    req.tuples.add(key=key)
    return req.SerializeToString()


def address_request(address: str) -> bytes:
    return pb.KeyAddressRequest(response_address=address, keys=["k"]).SerializeToString()


# ---- the policy, pure ---------------------------------------------------------------------


def test_parse_networks():
    nets = insecure.parse_networks(" 127.0.0.0/8, 10.1.2.3 ;192.168.0.0/16,")
    assert [str(n) for n in nets] == ["127.0.0.0/8", "10.1.2.3/32", "192.168.0.0/16"]
    assert insecure.parse_networks("") == ()
    with pytest.raises(ValueError, match="'10.0.0.0/33' is not a network"):
        insecure.parse_networks("127.0.0.0/8,10.0.0.0/33")


def test_peer_allowed_only_from_the_networks():
    policy = insecure.InsecureClients(LOOPBACK)
    assert policy.peer_allowed("127.0.0.1") and policy.peer_allowed("127.9.9.9")
    assert policy.peer_allowed("::ffff:127.0.0.1")  # IPv4-mapped
    assert not policy.peer_allowed("10.0.0.5")
    assert not policy.peer_allowed("localhost")  # names are not resolved
    assert not policy.peer_allowed("")
    other = insecure.InsecureClients(ELSEWHERE)
    assert not other.peer_allowed("127.0.0.1") and other.peer_allowed("10.200.0.1")


def test_reply_address_only_for_client_requests_answered_inside_the_networks():
    policy = insecure.InsecureClients(LOOPBACK)
    assert policy.reply_address([key_request("tcp://127.0.0.1:7000")]) == "tcp://127.0.0.1:7000"
    # The answer would leave the allowed networks, or is not a plain tcp address.
    assert policy.reply_address([key_request("tcp://10.0.0.5:7000")]) is None
    assert policy.reply_address([key_request("tcp://example.com:7000")]) is None
    assert policy.reply_address([key_request("ipc:///tmp/x")]) is None
    assert policy.reply_address([key_request("tcp://127.0.0.1:")]) is None
    assert policy.reply_address([key_request("")]) is None
    # Internal (two-frame) messages and garbage are never taken from a NULL peer.
    assert policy.reply_address([b"heartbeat", key_request("tcp://127.0.0.1:7000")]) is None
    assert policy.reply_address([b"\xff\xff\xff"]) is None
    routing = insecure.InsecureClients(LOOPBACK, insecure.address_request_address)
    assert routing.reply_address([address_request("tcp://127.0.0.2:9")]) == "tcp://127.0.0.2:9"
    assert routing.reply_address([address_request("tcp://10.0.0.1:9")]) is None
    assert routing.reply_address([b"join", b"x"]) is None


def test_from_config_and_environment(monkeypatch, caplog):
    cfg = load_config(None)
    assert cfg.kvs.allow_insecure_clients is False
    assert cfg.kvs.insecure_client_networks == "127.0.0.0/8"
    assert insecure.from_config(cfg.kvs, True, insecure.key_request_address) is None
    monkeypatch.setenv("CLOUDBURST_KVS__ALLOW_INSECURE_CLIENTS", "true")
    monkeypatch.setenv("CLOUDBURST_KVS__INSECURE_CLIENT_NETWORKS", "10.0.0.0/8,127.0.0.1")
    cfg = load_config(None)
    assert cfg.kvs.allow_insecure_clients is True
    # Without CURVE the option means nothing: every peer speaks NULL already.
    assert insecure.from_config(cfg.kvs, False, insecure.key_request_address) is None
    sec = object()  # any non-None security: CURVE on
    with caplog.at_level(logging.WARNING):
        policy = security.insecure_clients(cfg, sec, "shard 0", insecure.key_request_address)  # type: ignore[arg-type]
    assert policy is not None and policy.peer_allowed("10.1.1.1")
    assert "kvs.allow_insecure_clients is ON" in caplog.text and "10.0.0.0/8" in caplog.text
    monkeypatch.setenv("CLOUDBURST_KVS__INSECURE_CLIENT_NETWORKS", " ")
    with pytest.raises(security.SecurityError, match="insecure_client_networks is empty"):
        security.insecure_clients(load_config(None), sec, "x", insecure.key_request_address)  # type: ignore[arg-type]
    monkeypatch.setenv("CLOUDBURST_KVS__INSECURE_CLIENT_NETWORKS", "nonsense")
    with pytest.raises(security.SecurityError, match="'nonsense' is not a network"):
        security.insecure_clients(load_config(None), sec, "x", insecure.key_request_address)  # type: ignore[arg-type]


# ---- a CURVE server open to NULL peers (in process) ----------------------------------------


def open_server(networks: tuple[insecure.Network, ...]) -> zmtp.ZmtpServer:
    stats: Counter[str] = Counter()
    policy = insecure.InsecureClients(networks)
    srv = zmtp.ZmtpServer(
        IP, 0, stats, curve=SERVER_CURVE, handshake_timeout=2.0, null_peers=policy
    )
    srv.port = srv.lsock.getsockname()[1]  # type: ignore[attr-defined]
    srv.address = f"tcp://{IP}:{srv.port}"  # type: ignore[attr-defined]
    return srv


def answer(srv: zmtp.ZmtpServer, listener: zmtp.PullListener, data: bytes) -> list | None:
    srv.send(listener.address, data)
    end = dl(5)
    got = None
    while got is None and time.monotonic() < end:
        srv.poll(0.01)
        got = listener.recv(dl(0.02))
    return got


def test_null_and_curve_clients_on_one_port_each_answered_in_its_mechanism():
    srv = open_server(LOOPBACK)
    plain_listener = zmtp.PullListener(IP, 0)  # Anna's client: NULL, no keys
    curve_listener = zmtp.PullListener(IP, 0, CLIENT_CURVE)
    conns: list[zmtp.PushConnection] = []
    try:
        plain = in_thread(srv, lambda: zmtp.PushConnection(srv.address, dl(5)))
        secure = in_thread(srv, lambda: zmtp.PushConnection(srv.address, dl(5), CLIENT_CURVE))
        conns += [plain, secure]
        plain.send(key_request(plain_listener.address))
        secure.send(key_request(curve_listener.address, "s"))
        got = poll_until(srv, 2)
        assert sorted(got) == sorted(
            [[key_request(plain_listener.address)], [key_request(curve_listener.address, "s")]]
        )
        assert srv.stats["null_requests"] == 1
        # Each answer goes back in the mechanism of the request that named its address.
        assert answer(srv, plain_listener, b"plain answer") == [b"plain answer"]
        assert answer(srv, curve_listener, b"sealed answer") == [b"sealed answer"]
        assert set(srv.outbound) == {"null|" + plain_listener.address, curve_listener.address}
        assert srv.outbound[curve_listener.address].secure
        assert plain_listener.refusals == 0 and curve_listener.refusals == 0
    finally:
        for c in conns:
            c.close()
        plain_listener.close()
        curve_listener.close()
        srv.close()


def test_null_peer_may_not_send_internal_messages_or_point_answers_elsewhere():
    srv = open_server(LOOPBACK)
    try:
        plain = in_thread(srv, lambda: zmtp.PushConnection(srv.address, dl(5)))
        plain.send_multipart([b"depart", b"x"])  # cluster-internal: never from NULL
        plain.send(key_request("tcp://10.0.0.5:7000"))  # answer outside the networks
        plain.send(b"\x00garbage")
        plain.send(key_request("tcp://127.0.0.1:7001"))
        assert poll_until(srv, 1) == [[key_request("tcp://127.0.0.1:7001")]]
        assert poll_until(srv, seconds=0.3) == []
        assert srv.stats["null_refused"] == 3
        assert list(srv.plain) == ["tcp://127.0.0.1:7001"]
        plain.close()
    finally:
        srv.close()


def test_null_peer_outside_the_networks_is_refused_as_without_the_opt_in():
    srv = open_server(ELSEWHERE)  # only 10.0.0.0/8 may speak NULL; we are 127.0.0.1
    try:
        with pytest.raises(zmtp.ZmtpRefused, match="mechanism CURVE"):
            in_thread(srv, lambda: zmtp.PushConnection(srv.address, dl(5)))
        assert srv.stats["null_requests"] == 0
        # CURVE clients are served as always.
        conn = in_thread(srv, lambda: zmtp.PushConnection(srv.address, dl(5), CLIENT_CURVE))
        conn.send(b"sealed")
        assert poll_until(srv) == [[b"sealed"]]
        conn.close()
    finally:
        srv.close()


def test_without_the_opt_in_a_null_peer_is_refused():
    stats: Counter[str] = Counter()
    srv = zmtp.ZmtpServer(IP, 0, stats, curve=SERVER_CURVE, handshake_timeout=2.0)
    address = f"tcp://{IP}:{srv.lsock.getsockname()[1]}"
    try:
        with pytest.raises(zmtp.ZmtpRefused, match="no keys configured"):
            in_thread(srv, lambda: zmtp.PushConnection(address, dl(5)))
    finally:
        srv.close()


def test_a_null_mark_is_dropped_when_a_curve_listener_answers_there():
    srv = open_server(LOOPBACK)
    listener = zmtp.PullListener(IP, 0, CLIENT_CURVE)
    try:
        srv.plain[listener.address] = None  # as if a NULL request had named it
        srv.send(listener.address, b"never in plain text")
        end = dl(5)
        while listener.address in srv.plain and time.monotonic() < end:
            srv.poll(0.01)
            assert listener.recv(dl(0.01)) is None
        assert listener.address not in srv.plain
        assert answer(srv, listener, b"sealed") == [b"sealed"]
    finally:
        listener.close()
        srv.close()


# ---- a real KVS (routing + 2 shards) with CURVE on and the opt-in --------------------------


def test_anna_null_client_on_a_curve_kvs_with_the_opt_in(procs, tmp_path):
    """Anna's client without keys (NULL) PUTs and GETs through routing and both shards
    of a CURVE KVS that opts in for loopback; a client with keys works beside it."""
    import sys

    import yaml

    from cloudburst.shared.security import Security, generate_keys
    from lattices import LWWPairLattice

    from .conftest import KvsCluster, wait_ready, write_config

    keys = generate_keys(tmp_path / "keys")
    path, cfg = write_config(
        tmp_path, "kvs", shards=2, allow_insecure_clients=True, routing_threads=2
    )
    cfg["security"] = {"curve": "true", "keys_dir": str(keys)}
    path.write_text(yaml.safe_dump(cfg))
    procs.start("kvs", [sys.executable, "-m", "anna.local", "--config", str(path)])
    cluster = KvsCluster(procs, path, cfg, "kvs")
    wait_ready(cluster)  # a NULL client: it works only through the opt-in
    plain = cluster.client()
    sealed = cluster.client(curve=Security.from_dir(keys, role="client").zmtp_client())
    try:
        names = [f"n{i}" for i in range(16)]  # over both shards
        assert plain.put(names, [LWWPairLattice(1, b"plain %d" % i) for i in range(16)]) == {
            n: True for n in names
        }
        got = sealed.get(names)
        assert {k: v.reveal() for k, v in got.items()} == {  # type: ignore[union-attr]
            n: b"plain %d" % i for i, n in enumerate(names)
        }
        assert sealed.put("s", LWWPairLattice(2, b"sealed")) is True
        assert plain.get("s")["s"].reveal() == b"sealed"  # type: ignore[union-attr]
        # The second routing port serves NULL too.
        other = cluster.client(timeout=10.0)
        other.routing_address = f"tcp://{cluster.ip}:{cluster.routing_port + 1}"
        assert other.get("s")["s"].reveal() == b"sealed"  # type: ignore[union-attr]
        other.close()
    finally:
        plain.close()
        sealed.close()
    log = (tmp_path / "logs").glob("kvs*")
    text = "".join(p.read_text(errors="replace") for p in log)
    assert "kvs.allow_insecure_clients is ON" in text
