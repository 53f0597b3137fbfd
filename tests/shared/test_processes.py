"""The process group always stops what it started, children included."""

from __future__ import annotations

import sys
import time

import pytest

from cloudburst.local import alive
from cloudburst.shared.errors import CloudburstTimeoutError
from cloudburst.shared.processes import (
    ProcessGroup,
    free_port,
    free_port_block,
    port_free,
    port_open,
    wait_until,
)

SERVER = """
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen()
time.sleep(60)
"""

PARENT_WITH_CHILD = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print(child.pid, flush=True)
time.sleep(60)
"""


def test_start_wait_and_stop(tmp_path) -> None:
    port = free_port()
    with ProcessGroup(log_dir=tmp_path) as group:
        proc = group.start("srv", [sys.executable, "-c", SERVER, str(port)])
        wait_until(lambda: port_open("127.0.0.1", port), timeout=20, what="srv")
        assert proc.alive()
        group.check_alive()
    assert not proc.alive()
    wait_until(lambda: port_free("127.0.0.1", port), timeout=5, what="port release")


def test_children_of_children_are_stopped(tmp_path) -> None:
    group = ProcessGroup(log_dir=tmp_path)
    try:
        group.start("parent", [sys.executable, "-c", PARENT_WITH_CHILD])
        log = tmp_path / "parent.log"
        wait_until(lambda: log.exists() and log.read_text().strip() != "", 20, "child pid")
        child = int(log.read_text().split()[0])
        assert alive(child)
    finally:
        group.stop_all()
    wait_until(lambda: not alive(child), timeout=5, what="grandchild exit")


def test_check_alive_reports_exit_with_log(tmp_path) -> None:
    with ProcessGroup(log_dir=tmp_path) as group:
        group.start("dies", [sys.executable, "-c", "print('boom'); raise SystemExit(3)"])
        wait_until(lambda: not group.procs["dies"].alive(), 20, "exit")
        with pytest.raises(RuntimeError, match="exited with 3(.|\n)*boom"):
            group.check_alive()


def test_wait_until_names_what_it_waited_for() -> None:
    start = time.monotonic()
    with pytest.raises(CloudburstTimeoutError, match="the moon"):
        wait_until(lambda: False, timeout=0.2, what="the moon")
    assert time.monotonic() - start < 5


def test_free_port_block() -> None:
    base = free_port_block(5)
    assert all(port_free("127.0.0.1", base + i) for i in range(5))
