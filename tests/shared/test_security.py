"""cloudburst.shared.security: keys, the allowlist, config policy, libzmq sockets."""

from __future__ import annotations

import logging
import os
import shutil
import time

import pytest
import zmq

from cloudburst.shared import security
from cloudburst.shared.config import load_config
from cloudburst.shared.security import (
    KeyPolicy,
    Security,
    SecurityError,
    client_security,
    client_socket,
    generate_keys,
    server_security,
    server_socket,
)


@pytest.fixture
def keys(tmp_path):
    return generate_keys(tmp_path / "keys", clients=("client", "alice"))


def test_generate_writes_certificates_and_allowlist(keys):
    names = sorted(p.name for p in keys.iterdir())
    assert names == [
        "alice.key",
        "alice.key_secret",
        "authorized_clients",
        "client.key",
        "client.key_secret",
        "cluster.key",
        "cluster.key_secret",
    ]
    assert sorted(p.name for p in (keys / "authorized_clients").iterdir()) == [
        "alice.key",
        "client.key",
    ]
    for name in ("cluster", "client", "alice"):
        assert (keys / f"{name}.key_secret").stat().st_mode & 0o777 == 0o600
    # zmq's own loader reads them.
    import zmq.auth

    pub, sec = zmq.auth.load_certificate(str(keys / "cluster.key_secret"))
    assert len(pub) == 40 and len(sec) == 40
    before = (keys / "cluster.key_secret").read_bytes()
    generate_keys(keys)  # again: nothing replaced
    assert (keys / "cluster.key_secret").read_bytes() == before


def test_secret_key_readable_by_others_is_refused(keys):
    os.chmod(keys / "cluster.key_secret", 0o644)
    with pytest.raises(SecurityError, match="cluster.key_secret.*readable"):
        Security.from_dir(keys, role="server")
    os.chmod(keys / "client.key_secret", 0o640)
    with pytest.raises(SecurityError, match="client.key_secret"):
        Security.from_dir(keys, role="client")


def test_missing_keys_are_named(tmp_path):
    with pytest.raises(SecurityError, match="keys generate"):
        Security.from_dir(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SecurityError, match="cluster.key_secret"):
        Security.from_dir(tmp_path / "empty")


def test_policy_reloads_within_seconds(keys, tmp_path, monkeypatch):
    monkeypatch.setattr(security, "RELOAD_S", 0.1)
    server = Security.from_dir(keys)
    client = Security.from_dir(keys, role="client")
    policy = server.policy
    assert policy is not None
    assert policy.allowed(client.public)
    assert policy.allowed(server.public)  # the cluster's own key
    extra = generate_keys(tmp_path / "other")
    stranger = Security.from_dir(extra, role="client").public
    assert not policy.allowed(stranger)
    shutil.copy(extra / "client.key", keys / "authorized_clients" / "bob.key")
    end = time.monotonic() + 5
    while not policy.allowed(stranger) and time.monotonic() < end:
        time.sleep(0.05)
    assert policy.allowed(stranger)
    (keys / "authorized_clients" / "client.key").unlink()
    end = time.monotonic() + 5
    while policy.allowed(client.public) and time.monotonic() < end:
        time.sleep(0.05)
    assert not policy.allowed(client.public)


def test_policy_skips_garbage_files(keys, caplog):
    (keys / "authorized_clients" / "junk.key").write_text("not a certificate")
    with caplog.at_level(logging.WARNING):
        policy = KeyPolicy(keys / "authorized_clients")
    assert len(policy._keys) == 2
    assert "junk.key" in caplog.text


def test_config_policy(keys, monkeypatch, caplog):
    assert server_security(load_config(env={})) is None  # loopback, auto: off
    with pytest.raises(SecurityError, match="refusing to listen on 10.1.2.3"):
        server_security(load_config(env={}, ip="10.1.2.3"))
    with caplog.at_level(logging.WARNING):
        assert (
            server_security(load_config(env={}, ip="10.1.2.3", security={"curve": False})) is None
        )
    assert "CURVE is OFF" in caplog.text
    cfg = load_config(
        env={"CLOUDBURST_SECURITY__CURVE": "true", "CLOUDBURST_SECURITY__KEYS_DIR": str(keys)}
    )
    sec = server_security(cfg)
    assert sec is not None and sec.policy is not None
    assert sec.max_frame == 2 << 30  # 2 x 1.5 GiB, capped at the transport's 2 GiB
    small = load_config(env={}, kvs={"max_value_bytes": 1 << 20})
    assert security.max_frame_bytes(small) == 65 << 20
    assert security.max_frame_bytes(load_config(env={}, security={"max_frame_bytes": 4096})) == 4096
    monkeypatch.delenv(security.KEYS_ENV, raising=False)
    assert client_security() is None
    monkeypatch.setenv(security.KEYS_ENV, str(keys))
    client = client_security()
    assert client is not None and client.server_public == sec.public


def test_libzmq_sockets_admit_only_the_allowlist(keys, tmp_path, monkeypatch):
    monkeypatch.setattr(security, "RELOAD_S", 0.1)
    server = Security.from_dir(keys)
    client = Security.from_dir(keys, role="client")
    other_dir = generate_keys(tmp_path / "other")
    stranger = Security(
        Security.from_dir(other_dir, role="client").public,
        Security.from_dir(other_dir, role="client").secret,
        server.public,
    )
    ctx = zmq.Context()
    socks = []
    try:
        pull = server_socket(ctx, zmq.PULL, server)
        socks.append(pull)
        pull.rcvtimeo = 300
        port = pull.bind_to_random_port("tcp://127.0.0.1")

        def push_from(sec):
            s = client_socket(ctx, zmq.PUSH, sec)
            s.linger = 0
            socks.append(s)
            s.connect(f"tcp://127.0.0.1:{port}")
            return s

        push_from(client).send(b"admitted")
        assert pull.recv() == b"admitted"
        push_from(stranger).send(b"refused")
        push_from(None).send(b"plain")
        with pytest.raises(zmq.Again):
            pull.recv()
        # Admit the stranger by adding its key: a new connection gets through.
        shutil.copy(other_dir / "client.key", keys / "authorized_clients" / "other.key")
        time.sleep(0.3)
        push_from(stranger).send(b"now admitted")
        pull.rcvtimeo = 5000
        assert pull.recv() == b"now admitted"
    finally:
        for s in socks:
            s.close(0)
        security.term(ctx)
