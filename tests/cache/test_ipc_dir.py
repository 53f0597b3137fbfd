"""cache.protocol.socket_dir: a run directory too deep for a Unix socket path (a long
home or test directory) still gives every process the same, bindable ipc address, in an
owner-only directory under /tmp."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from cache import protocol


def test_a_short_dir_is_used_as_it_is(tmp_path):
    assert protocol.socket_dir(str(tmp_path)) == str(tmp_path)
    assert protocol.ipc_address(str(tmp_path), "n1") == f"ipc://{tmp_path}/cache-n1.sock"


@pytest.fixture
def short_root(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A short stand-in for /tmp (pytest's tmp_path is itself too deep), given the way
    a deployment gives it (``CLOUDBURST_SOCKET_ROOT``)."""
    root = tempfile.mkdtemp(prefix="cbipc", dir="/tmp")
    monkeypatch.setenv(protocol.SOCKET_ROOT_ENV, root)
    try:
        yield Path(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_long_dir_moves_to_a_short_owner_only_one(short_root):
    tmp_path = short_root
    deep = "/work/" + "/".join(["a-rather-long-directory-name"] * 4) + "/run/ipc"
    other = deep.replace("/run/", "/run2/")
    short = protocol.socket_dir(deep)
    assert short != deep and short.startswith(f"{tmp_path}/cloudburst-{os.getuid()}/")
    assert protocol.socket_dir(deep) == short  # every process derives the same one
    assert protocol.socket_dir(other) != short  # and another run another one
    made = protocol.make_socket_dir(deep)
    assert made == short
    for path in (made, os.path.dirname(made)):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    address = protocol.ipc_address(deep, "127.0.0.1:a-node-name")
    assert len(address) - len("ipc://") <= 107
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.ROUTER)
        sock.linger = 0
        sock.bind(address)  # fits in sockaddr_un
        sock.close(0)
    finally:
        ctx.term()


def test_without_the_variable_the_fallback_is_under_tmp(monkeypatch):
    monkeypatch.delenv(protocol.SOCKET_ROOT_ENV, raising=False)
    assert protocol.socket_dir("/x" + "/y" * 60).startswith(f"/tmp/cloudburst-{os.getuid()}/")


def test_a_fallback_parent_that_is_not_ours_is_refused(short_root):
    tmp_path = short_root
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / f"cloudburst-{os.getuid()}").symlink_to(target)
    with pytest.raises(PermissionError, match="refusing"):
        protocol.make_socket_dir("/x" + "/y" * 60)
