"""The connection's finalizer and the future's weak reference, without a cluster."""

from __future__ import annotations

import gc
import os
import threading
from typing import Any

import pytest
import zmq

from cloudburst.client import client as client_mod
from cloudburst.client.future import CloudburstFuture
from cloudburst.shared.errors import CloudburstException


class _Recorder:
    def __init__(self, log: list[str], name: str) -> None:
        self.log, self.name = log, name

    def close(self, linger: int | None = None) -> None:
        self.log.append(f"close {self.name} linger={linger}")

    def destroy(self, linger: int | None = None) -> None:
        self.log.append(f"destroy linger={linger}")


def test_release_closes_sockets_and_clients_before_the_context() -> None:
    log: list[str] = []
    socks: list[Any] = [_Recorder(log, "pull"), _Recorder(log, "push")]
    owned: list[Any] = [_Recorder(log, "kvs")]
    closing = threading.Event()
    client_mod._release(
        _Recorder(log, "ctx"),  # type: ignore[arg-type]
        socks,
        owned,
        os.getpid(),
        (threading.RLock(), threading.Lock()),
        closing,
    )
    assert log == [
        "close kvs linger=None",
        "close pull linger=0",
        "close push linger=0",
        "destroy linger=0",
    ]
    assert closing.is_set() and socks == [] and owned == []


def test_release_in_another_process_touches_nothing() -> None:
    log: list[str] = []
    client_mod._release(
        _Recorder(log, "ctx"),  # type: ignore[arg-type]
        [_Recorder(log, "pull")],
        [],
        os.getpid() + 1,  # "the parent"
        (threading.RLock(), threading.Lock()),
        threading.Event(),
    )
    assert log == []


def test_release_of_a_real_context_with_open_sockets_is_immediate() -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.bind("tcp://127.0.0.1:*")
    push = ctx.socket(zmq.PUSH)
    push.connect("tcp://127.0.0.1:9")  # nobody there: a message stays queued
    push.send(b"queued")
    client_mod._release(
        ctx, [pull, push], [], os.getpid(), (threading.RLock(), threading.Lock()), threading.Event()
    )
    assert ctx.closed and pull.closed and push.closed


class _Conn:
    liveness_interval = 1.0


def test_a_future_does_not_keep_its_connection_alive() -> None:
    conn = _Conn()
    fut = CloudburstFuture(conn, "rid-1")  # type: ignore[arg-type]
    del conn
    gc.collect()
    with pytest.raises(CloudburstException, match="garbage-collected"):
        fut.get(timeout=5)


def test_a_received_result_stays_readable_without_the_connection() -> None:
    conn = _Conn()
    fut = CloudburstFuture(conn, "rid-2")  # type: ignore[arg-type]
    fut._value = 42
    del conn
    gc.collect()
    assert fut.get() == 42
    assert fut.done()


def test_a_connection_cannot_be_pickled_to_another_process() -> None:
    import pickle

    conn = object.__new__(client_mod.CloudburstConnection)
    with pytest.raises(TypeError, match="make a connection in each process"):
        pickle.dumps(conn)


def test_describe_wait_says_running_queued_lost_or_idle() -> None:
    """Pure: the timeout message of a call, from the scheduler's status."""
    from cloudburst.client.future import describe_wait
    from cloudburst.shared.proto import cloudburst_pb2 as pb

    st = pb.ClusterStatus()
    st.executors.add(address="tcp://a:1", current_call="c1", current_call_s=3.2, load=1)
    st.executors.add(address="tcp://b:2", current_call="other", current_call_s=4.0, load=4)
    st.executors.add(address="tcp://c:3", load=0)
    st.dead.append("tcp://d:4")
    assert describe_wait("c1", ["tcp://a:1"], st, 5.0) == "running on executor tcp://a:1 for 3.2s"
    queued = describe_wait("c2", ["tcp://b:2"], st, 1.1)
    assert queued.startswith("queued on executor tcp://b:2 (sent 1.1s ago) behind the call")
    assert "running there for 4.0s (other)" in queued and "about 3 more queued" in queued
    assert describe_wait("c3", ["tcp://d:4"], st, 9.0).startswith(
        "lost: executor(s) tcp://d:4 stopped heartbeating"
    )
    assert "alive and idle" in describe_wait("c4", ["tcp://c:3"], st, 2.0)
    assert "not in the scheduler's view" in describe_wait("c5", ["tcp://e:5"], st, 2.0)
