"""``cloudburst local start`` fails fast and says why, leaving nothing running."""

from __future__ import annotations

import os
import re
import socket
import tempfile
import time
from pathlib import Path

import pytest

from cloudburst import local
from tests.integration.localcluster import cleanup, cli, launcher_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_a_busy_port_is_named_with_the_program_holding_it(tmp_path: Path) -> None:
    cfg, path = launcher_config(tmp_path / "run")
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((cfg.ip, cfg.kvs.routing_port))
        sock.listen()
        began = time.monotonic()
        done = cli("start", "--config", str(path), timeout=60)
        took = time.monotonic() - began
    print(f"busy port: start failed after {took:.2f}s")
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"port {cfg.kvs.routing_port} (KVS routing)" in done.stderr
    assert f"in use by pid {os.getpid()}" in done.stderr
    assert not local.cluster_pids(cfg)
    assert not (Path(cfg.run_dir) / "cluster.json").exists()


def test_a_process_that_exits_during_start_is_named_with_its_log(tmp_path: Path) -> None:
    # A regular file where the cache's socket directory should be: the cache exits. Its
    # path is short: a deeper one would move the sockets to /tmp (cache.protocol.socket_dir).
    fd, name = tempfile.mkstemp(prefix="cb-not-a-dir-", dir="/tmp")
    os.close(fd)
    blocker = Path(name)
    cfg, path = launcher_config(tmp_path / "run", cache={"ipc_dir": str(blocker)})
    try:
        began = time.monotonic()
        done = cli("start", "--config", str(path), timeout=90)
        took = time.monotonic() - began
        print(f"exit during start: start failed after {took:.2f}s")
        assert done.returncode == 1, done.stdout + done.stderr
        # The node's own pool socket lives in the same directory: whichever of the node
        # or its cache meets the blocker first is named.
        assert re.search(r"executor(/cache)? \(pid \d+\)", done.stderr), done.stderr
        assert "exited during start: exit status 1" in done.stderr
        assert f"last lines of {cfg.run_dir}/logs/executor.log" in done.stderr
        assert "FileExistsError" in done.stderr  # the failing process's own traceback
        assert not local.cluster_pids(cfg), "a failed start left processes running"
    finally:
        cleanup(cfg)
        blocker.unlink(missing_ok=True)


def test_fresh_wipes_and_a_running_cluster_is_never_started_twice_nor_reset(
    tmp_path: Path,
) -> None:
    cfg, path = launcher_config(tmp_path / "run", workers=1)
    old = Path(cfg.kvs.data_dir) / "shard0" / "from-an-old-run"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"x" * 7)
    try:
        first = cli("start", "--config", str(path), "--fresh")
        assert first.returncode == 0, first.stdout + first.stderr
        assert f"--fresh: deleted {cfg.kvs.data_dir} (7 bytes)" in first.stdout
        assert not old.exists()
        again = cli("start", "--config", str(path), timeout=30)
        assert again.returncode == 1 and "already running" in again.stderr
        reset = cli("reset", "--config", str(path), timeout=30)
        assert reset.returncode == 1 and "is running" in reset.stdout
        assert Path(cfg.kvs.data_dir).exists()
    finally:
        cleanup(cfg)


def test_a_start_that_times_out_leaves_nothing_running(tmp_path: Path) -> None:
    cfg, path = launcher_config(tmp_path / "run", workers=1)
    try:
        done = cli("start", "--config", str(path), "--timeout", "0.5", timeout=60)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "the cluster was not ready within 0.5s" in done.stderr
        assert not local.cluster_pids(cfg)
        assert not (Path(cfg.run_dir) / "cluster.json").exists()
    finally:
        cleanup(cfg)
