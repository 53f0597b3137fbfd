"""Per-call limits (executor/limits.py): the watchdog, RLIMIT_AS and the expiry book.

RLIMIT_AS is set in a child process (never in the test runner's)."""

from __future__ import annotations

import multiprocessing
import resource
import threading
import time
from typing import Any

import pytest

from executor.limits import (
    CallLimits,
    Limits,
    ResultExpiry,
    Watchdog,
    address_space,
    effective_limits,
)


def test_effective_limits_prefer_the_function_over_the_config() -> None:
    assert effective_limits(0.0, 0, 5.0, 1 << 30) == Limits(5.0, 1 << 30)
    assert effective_limits(1.0, 1 << 20, 5.0, 1 << 30) == Limits(1.0, 1 << 20)
    assert effective_limits(0.0, 0, 0.0, 0) == Limits()


def test_the_watchdog_fires_only_for_a_call_past_its_deadline() -> None:
    fired: list[Any] = []
    done = threading.Event()

    def on_expiry(info: Any) -> None:
        fired.append(info)
        done.set()

    dog = Watchdog(on_expiry)
    dog.start("quick", 0.2)
    dog.stop()  # finished in time
    dog.start("slow", 0.1)
    assert done.wait(5.0)
    assert fired == ["slow"]
    # It keeps serving later calls.
    done.clear()
    dog.start("again", 0.05)
    assert done.wait(5.0) and fired == ["slow", "again"]
    dog.start("quick2", 0.3)
    dog.stop()
    time.sleep(0.5)
    assert fired == ["slow", "again"]


def _alloc_under_limit(queue: Any) -> None:
    limits = CallLimits(lambda info: None)
    before = resource.getrlimit(resource.RLIMIT_AS)
    out = []
    with limits.apply(Limits(memory_bytes=64 << 20), "call") as applied:
        out.append(applied.memory_limited)
        try:
            bytearray(1 << 30)
            out.append("allocated")
        except MemoryError:
            out.append("MemoryError")
        small = bytearray(1 << 20)  # within the allowance
        out.append(len(small))
    out.append(resource.getrlimit(resource.RLIMIT_AS) == before)
    out.append(len(bytearray(256 << 20)))  # the limit is lifted after the call
    queue.put(out)


def test_memory_limit_raises_memory_error_inside_the_call_only() -> None:
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_alloc_under_limit, args=(queue,))
    proc.start()
    try:
        out = queue.get(timeout=30)
    finally:
        proc.join(timeout=30)
    assert out == [True, "MemoryError", 1 << 20, True, 256 << 20]


def test_time_limit_sets_and_restores_the_cpu_backstop() -> None:
    fired: list[Any] = []
    limits = CallLimits(fired.append)
    before = resource.getrlimit(resource.RLIMIT_CPU)
    with limits.apply(Limits(timeout_s=30.0), "call"):
        soft = resource.getrlimit(resource.RLIMIT_CPU)[0]
        assert soft != resource.RLIM_INFINITY and soft > 30
    assert resource.getrlimit(resource.RLIMIT_CPU) == before
    assert fired == []
    with limits.apply(Limits(), "unlimited"):
        assert resource.getrlimit(resource.RLIMIT_CPU) == before


def test_address_space_is_known_on_linux() -> None:
    assert address_space() > 1 << 20


def test_result_expiry_hands_out_keys_in_order_and_in_batches() -> None:
    e = ResultExpiry(ttl=10.0, batch=2)
    for i, t in enumerate([0.0, 1.0, 2.0, 3.0]):
        e.add(f"k{i}", t)
    assert e.next_due() == 10.0 and len(e) == 4
    assert e.due(9.0) == []
    assert e.due(20.0) == ["k0", "k1"]  # a batch at a time
    assert e.due(20.0) == ["k2", "k3"]
    assert e.due(20.0) == [] and e.next_due() == float("inf")
    off = ResultExpiry(ttl=0.0)
    off.add("k", 0.0)
    assert len(off) == 0


@pytest.mark.parametrize("data", [b"", b"\x80\x05junk"])
def test_function_records_decode_old_and_deleted_forms(data: bytes) -> None:
    from scheduler.registry import FunctionRecord, decode_function

    rec = decode_function(data)
    assert rec == (None if not data else FunctionRecord(data))


def test_limit_errors_reach_the_client_as_typed_exceptions() -> None:
    from cloudburst.shared import errors, wire
    from cloudburst.shared.proto import cloudburst_pb2 as pb

    t = wire.exception_for(wire.limit_error(pb.FUNCTION_TIMEOUT, "f", 1.5, "f ran 1.5s"))
    assert isinstance(t, errors.FunctionTimeout) and isinstance(t, TimeoutError)
    assert (t.function, t.limit, str(t)) == ("f", 1.5, "f ran 1.5s")
    m = wire.exception_for(wire.limit_error(pb.FUNCTION_MEMORY_EXCEEDED, "g", 1 << 20, "g big"))
    assert isinstance(m, errors.FunctionMemoryExceeded) and isinstance(m, MemoryError)
    assert (m.function, m.limit) == ("g", 1 << 20)
