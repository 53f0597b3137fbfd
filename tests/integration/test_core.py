"""End-to-end behaviour of the client, scheduler and executors on a real cluster."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import numpy as np
import pytest
import zmq

from cloudburst.client.client import CloudburstConnection
from cloudburst.shared import errors
from cloudburst.shared.processes import free_port, wait_until
from cloudburst.shared.proto.cloudburst_pb2 import (
    DAG_ALREADY_EXISTS,
    FUNC_NOT_FOUND,
    INVALID_ARGUMENT,
    NO_SUCH_DAG,
)
from cloudburst.shared.reference import CloudburstReference

pytestmark = pytest.mark.integration


def test_readme_example(cluster: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # The README's lines verbatim; only the scheduler port comes from the environment.
    monkeypatch.setenv("CLOUDBURST_SCHEDULER__PORT", str(cluster.cfg.scheduler.port))
    local_cloud = CloudburstConnection("127.0.0.1", "127.0.0.1", local=True)
    try:
        cloud_sq = local_cloud.register(lambda _, x: x * x, "square")
        assert cloud_sq(2).get() == 4
        assert local_cloud.register_dag("dag", ["square"], []) == (True, 0)
        assert local_cloud.call_dag("dag", {"square": [2]}).get() == 4
        assert local_cloud.call_dag("dag", {"square": 5}).get() == 25  # scalar argument
        assert local_cloud.call_dag("dag", {"square": [3]}, direct_response=True) == 9
    finally:
        local_cloud.close()


def test_repeated_calls_and_chained_dag(cloud: CloudburstConnection) -> None:
    cloud.register(lambda _, x: x + 1, "chain_incr")
    cloud.register(lambda _, x: x * x, "chain_square")
    links = [("chain_incr", "chain_square")]
    assert cloud.register_dag("chain", ["chain_incr", "chain_square"], links)
    for i in range(50):  # crosses placement-lease renewals and the direct path
        assert cloud.call_dag("chain", {"chain_incr": i}).get(timeout=10) == (i + 1) ** 2


class Counter:
    def __init__(self, lib: Any, start: int) -> None:
        self.n = start

    def run(self, lib: Any, step: int) -> tuple[str, int]:
        self.n += step
        return lib.getid(), self.n


def test_class_state_persists_between_calls(cloud: CloudburstConnection) -> None:
    counter = cloud.register((Counter, (100,)), "counter")
    per_worker: dict[str, list[int]] = {}
    for _ in range(12):
        worker, n = counter(1).get(timeout=10)
        per_worker.setdefault(worker, []).append(n)
    for values in per_worker.values():  # one instance per worker, built once
        assert values == list(range(101, 101 + len(values)))


def test_send_and_recv_between_two_functions(cloud: CloudburstConnection) -> None:
    def receiver(lib: Any) -> bytes:
        lib.put("sr-receiver-id", lib.getid())
        got = lib.recv(timeout=15)
        return got[0][1] if got else b"nothing"

    def sender(lib: Any, dest: str) -> str:
        lib.send(dest, b"hello over zmq")
        return lib.getid()

    recv_fn = cloud.register(receiver, "sr_receiver")
    send_fn = cloud.register(sender, "sr_sender")
    fut = recv_fn()
    wait_until(lambda: cloud.get_object("sr-receiver-id") is not None, 15, "the receiver's id")
    dest = cloud.get_object("sr-receiver-id")
    # Let a heartbeat report the receiver's worker busy so the sender goes elsewhere.
    wait_until(lambda: any(e["load"] > 0 for e in cloud.status()["executor_list"]), 10, "busy")
    sender_id = send_fn(dest).get(timeout=15)
    assert sender_id != dest
    assert fut.get(timeout=20) == b"hello over zmq"


def test_reference_to_a_numpy_array(cloud: CloudburstConnection) -> None:
    arr = np.arange(200_000, dtype=np.float64)
    assert cloud.put_object("ref-array", arr) is True
    total = cloud.register(lambda _, a: float(a.sum()), "ref_sum")
    assert total(CloudburstReference("ref-array")).get(timeout=10) == float(arr.sum())
    raw = cloud.register(lambda _, lat: type(lat).__name__, "ref_raw")
    assert (
        raw(CloudburstReference("ref-array", deserialize=False)).get(timeout=10) == "LWWPairLattice"
    )
    assert np.array_equal(cloud.get_object("ref-array"), arr)


def test_reference_to_missing_key_is_a_clear_error(cloud: CloudburstConnection) -> None:
    ident = cloud.register(lambda _, x: x, "ref_ident")
    with pytest.raises(errors.InvalidArgument, match="no-such-key"):
        ident(CloudburstReference("no-such-key")).get(timeout=10)


def test_future_as_argument_and_result_in_kvs(cloud: CloudburstConnection) -> None:
    sq = cloud.register(lambda _, x: x * x, "fa_square")
    slow = cloud.register(lambda _, x: (time.sleep(0.5), x)[1], "fa_slow")
    first = slow(3)
    second = sq(first)  # a reference to a result that is not there yet
    assert second.get(timeout=15) == 9
    assert cloud.get_object(first.obj_id) == 3
    assert sq(sq(2)).get(timeout=10) == 16


def test_put_and_get_objects(cloud: CloudburstConnection) -> None:
    assert cloud.put_object("obj-set", {1, 2, 3})
    assert cloud.get_object("obj-set") == {1, 2, 3}
    assert cloud.put_object("obj-set", {4})
    assert cloud.get_object("obj-set") == {1, 2, 3, 4}  # a set lattice merges
    assert cloud.put_object("obj-dict", {"a": [1, 2]})
    assert cloud.get_object("obj-dict") == {"a": [1, 2]}
    assert cloud.get_object("obj-never-written") is None

    def uses_kvs(lib: Any, key: str) -> Any:
        lib.put(key + "-copy", lib.get(key))
        return lib.get([key, key + "-copy"])

    f = cloud.register(uses_kvs, "obj_lib")
    got = f("obj-dict").get(timeout=10)
    assert got == {"obj-dict": {"a": [1, 2]}, "obj-dict-copy": {"a": [1, 2]}}


def test_list_with_prefix_and_get_function(cloud: CloudburstConnection) -> None:
    for name in ("lst_a", "lst_b", "other_lst"):
        cloud.register(lambda _, n=name: n, name)
    assert cloud.list("lst_") == ["lst_a", "lst_b"]
    assert {"lst_a", "lst_b", "other_lst"} <= set(cloud.list())
    assert cloud.get_function("lst_a")().get(timeout=10) == "lst_a"
    with pytest.raises(errors.FunctionNotFound, match="nope_fn"):
        cloud.get_function("nope_fn")


def test_delete_then_call_fails(cloud: CloudburstConnection) -> None:
    cloud.register(lambda _, x: -x, "del_neg")
    assert cloud.register_dag("del_dag", ["del_neg"], []) == (True, 0)
    assert cloud.call_dag("del_dag", {"del_neg": 1}).get(timeout=10) == -1
    assert cloud.delete_dag("del_dag") == (True, 0)
    with pytest.raises(errors.DagNotFound, match="del_dag"):
        cloud.call_dag("del_dag", {"del_neg": 1})
    assert cloud.delete_dag("del_dag") == (False, NO_SUCH_DAG)
    assert cloud.register_dag("del_dag", ["del_neg"], []) == (True, 0)  # the name is free again


def test_duplicate_and_bad_dags(cloud: CloudburstConnection) -> None:
    cloud.register(lambda _, x: x, "dup_f")
    assert cloud.register_dag("dup", ["dup_f"], []) == (True, 0)
    assert cloud.register_dag("dup", ["dup_f"], []) == (True, 0)  # the same again: idempotent
    cloud.register(lambda _, x: x, "dup_g")
    again = cloud.register_dag("dup", ["dup_f", "dup_g"], [("dup_f", "dup_g")])
    assert again == (False, DAG_ALREADY_EXISTS) and not again and "dup" in again.message
    missing = cloud.register_dag(
        "dup2", ["dup_f", "never_registered"], [("dup_f", "never_registered")]
    )
    assert missing == (False, FUNC_NOT_FOUND) and "never_registered" in missing.message
    cyclic = cloud.register_dag("dup3", ["dup_f"], [("dup_f", "dup_f")])
    assert cyclic == (False, INVALID_ARGUMENT) and "cycle" in cyclic.message


def test_unknown_function_and_bad_arguments(cloud: CloudburstConnection) -> None:
    with pytest.raises(errors.FunctionNotFound, match="ghost"):
        cloud.exec_func("ghost", [1])
    with pytest.raises(errors.InvalidArgument):
        cloud.register(42, "not_callable")
    cloud.register(lambda _, x: x, "badarg_f")
    cloud.register_dag("badarg", ["badarg_f"], [])
    with pytest.raises(errors.InvalidArgument, match="zzz"):
        cloud.call_dag("badarg", {"zzz": [1]})
    with pytest.raises(errors.InvalidArgument):
        cloud.call_dag("badarg", [1])  # type: ignore[arg-type]
    two = cloud.register(lambda _, x, y: x + y, "badarg_two")
    with pytest.raises(errors.RemoteExecutionError, match="TypeError"):
        two(1).get(timeout=10)  # wrong arity is the function's own TypeError


def test_function_raising_keeps_the_executor_serving(
    cloud: CloudburstConnection, cluster: Any
) -> None:
    def boom(_: Any, x: int) -> int:
        raise ValueError(f"bad value {x}")

    f = cloud.register(boom, "raise_boom")
    ok = cloud.register(lambda _, x: x + 1, "raise_ok")
    for i in range(4):
        with pytest.raises(errors.RemoteExecutionError) as info:
            f(i).get(timeout=10)
        err = info.value
        assert err.exc_type == "ValueError" and f"bad value {i}" in err.remote_message
        assert "raise ValueError" in err.remote_traceback and "boom" in err.remote_traceback
        assert isinstance(err, ValueError) and isinstance(err.remote_exception, ValueError)
    exiting = cloud.register(lambda _: exit(3), "raise_exit")
    with pytest.raises(errors.RemoteExecutionError, match="SystemExit"):
        exiting().get(timeout=10)
    assert ok(1).get(timeout=10) == 2
    assert cloud.status()["executors"] == cluster.cfg.executor.workers
    # In a DAG: the error comes back from the failing function, the sink never runs.
    cloud.register_dag("raise_dag", ["raise_ok", "raise_boom"], [("raise_ok", "raise_boom")])
    with pytest.raises(errors.RemoteExecutionError, match="bad value 6") as info:
        cloud.call_dag("raise_dag", {"raise_ok": 5}).get(timeout=10)
    assert "raise_boom" in str(info.value)


def test_fan_in_order_and_tuple_spreading(cloud: CloudburstConnection) -> None:
    cloud.register(lambda _: "a", "fan_a")
    cloud.register(lambda _: (time.sleep(0.3), "b")[1], "fan_b")  # arrives last
    cloud.register(lambda _: ("c1", "c2"), "fan_c")  # a tuple spreads into 2 arguments
    cloud.register(lambda _, *args: list(args), "fan_sink")
    links = [("fan_c", "fan_sink"), ("fan_b", "fan_sink"), ("fan_a", "fan_sink")]
    assert cloud.register_dag("fan", ["fan_a", "fan_b", "fan_c", "fan_sink"], links)
    for _ in range(3):
        got = cloud.call_dag("fan", {"fan_sink": ["own"]}).get(timeout=15)
        assert got == ["own", "c1", "c2", "b", "a"]


def test_output_key_stores_the_result(cloud: CloudburstConnection) -> None:
    cloud.register(lambda _, x: {"v": x}, "out_f")
    cloud.register_dag("out_dag", ["out_f"], [])
    assert cloud.call_dag("out_dag", {"out_f": 7}, output_key="out-key-1").get(timeout=10) == {
        "v": 7
    }
    assert cloud.get_object("out-key-1") == {"v": 7}


def test_output_key_is_durable_when_the_call_returns_and_caches_follow(
    cloud: CloudburstConnection,
) -> None:
    """The executor writes ``output_key`` straight to the KVS and tells its node cache
    afterwards (``CacheClient.put_direct``): when the call returns the KVS has the value;
    a function reading the key through the node cache, which held an older value,
    sees the new one."""
    cloud.register(lambda _, x: x, "okey_id")
    read = cloud.register(lambda lib, k: lib.get(k), "okey_read")
    cloud.register_dag("okey_store", ["okey_id"], [])
    for i in range(8):
        value = {"i": i, "pad": "x" * 100}
        assert (
            cloud.call_dag("okey_store", {"okey_id": value}, output_key="okey/k").get(timeout=15)
            == value
        )
        assert cloud.get_object("okey/k") == value  # durable before the call returned
        # Read through the node cache (held since the first read; eventually current
        # for the other worker, right away for the writer).
        wait_until(lambda v=value: read("okey/k").get(timeout=15) == v, 10, f"cached value {i}")


def test_get_timeout_raises_then_the_result_still_comes(cloud: CloudburstConnection) -> None:
    slow = cloud.register(lambda _: (time.sleep(1.5), "late")[1], "to_slow")
    fut = slow()
    t0 = time.monotonic()
    with pytest.raises(errors.CloudburstTimeoutError) as info:
        fut.get(timeout=0.2)
    assert isinstance(info.value, TimeoutError) and time.monotonic() - t0 < 1.0
    assert fut.get(timeout=15) == "late"


def test_connecting_to_nothing_fails_fast() -> None:
    port = free_port()
    t0 = time.monotonic()
    with pytest.raises(errors.ConnectionFailed, match=f"127.0.0.1:{port}"):
        CloudburstConnection("127.0.0.1", "127.0.0.1", port=port, timeout=10.0)
    assert time.monotonic() - t0 < 5.0


def test_connecting_to_something_silent_fails_within_seconds() -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)  # accepts connections, never answers
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    try:
        t0 = time.monotonic()
        with pytest.raises(errors.ConnectionFailed, match="did not answer"):
            CloudburstConnection(f"127.0.0.1:{port}", "127.0.0.1", connect_timeout=1.5)
        assert time.monotonic() - t0 < 5.0
    finally:
        sock.close(0)
        ctx.term()


def test_malformed_messages_do_not_crash_servers(cloud: CloudburstConnection, cluster: Any) -> None:
    ctx = zmq.Context()
    targets = [f"tcp://127.0.0.1:{cluster.cfg.scheduler.port}"]
    targets += [e["address"] for e in cloud.status()["executor_list"]]
    try:
        for addr in targets:
            sock = ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.LINGER, 1000)
            sock.connect(addr)
            for junk in (b"", b"\xff" * 64, b"\x0a\x02zz", os.urandom(300)):
                sock.send(junk)
            sock.close()
    finally:
        ctx.term()
    f = cloud.register(lambda _, x: x * 3, "junk_after")
    for i in range(6):
        assert f(i).get(timeout=10) == 3 * i
    assert cloud.status()["executors"] == cluster.cfg.executor.workers


def test_executor_killed_mid_call_is_retried_or_reported(
    cloud: CloudburstConnection, cluster: Any
) -> None:
    slow = cloud.register(lambda _, x: (time.sleep(2.0), x * 10)[1], "kill_slow")
    workers = cluster.cfg.executor.workers
    fut = slow(4)
    assert fut.executors, "the call's placement is known to the future"
    victim = fut.executors[0]
    pids = {e["address"]: e["pid"] for e in cloud.status()["executor_list"]}
    time.sleep(0.3)  # the call is running now
    os.kill(pids[victim], signal.SIGKILL)
    t0 = time.monotonic()
    try:
        assert fut.get(timeout=30) == 40  # retried once on another executor
    except errors.ExecutorFailed as exc:  # or a clear error
        assert victim in str(exc)
    assert time.monotonic() - t0 < 30
    assert victim not in fut.executors
    # The node restarts the worker; the cluster is whole again for the other tests.
    _wait_for_restart(cloud, victim, workers)
    assert slow(1).get(timeout=15) == 10


def test_re_registering_a_function_replaces_it_everywhere(cloud: CloudburstConnection) -> None:
    f = cloud.register(lambda _, x: ("v1", x), "rereg")
    cloud.register_dag("rereg_dag", ["rereg"], [])
    for i in range(6):  # load v1 into every worker
        assert f(i).get(timeout=10) == ("v1", i)
        assert cloud.call_dag("rereg_dag", {"rereg": i}).get(timeout=10) == ("v1", i)
    f = cloud.register(lambda _, x: ("v2", x), "rereg")
    for i in range(6):
        assert f(i).get(timeout=10) == ("v2", i)
        assert cloud.call_dag("rereg_dag", {"rereg": i}).get(timeout=10) == ("v2", i)


def test_many_outstanding_calls_and_concurrent_clients(
    cloud: CloudburstConnection, cluster: Any
) -> None:
    import threading

    cloud.register(lambda _, x: x + 1, "conc_incr")
    cloud.register(lambda _, x: x * 2, "conc_double")
    cloud.register_dag("conc", ["conc_incr", "conc_double"], [("conc_incr", "conc_double")])
    futures = [cloud.call_dag("conc", {"conc_incr": i}) for i in range(150)]
    assert [f.get(timeout=30) for f in reversed(futures)] == [
        2 * (i + 1) for i in reversed(range(150))
    ]
    errors_seen: list[BaseException] = []

    def client(k: int) -> None:
        try:
            with cluster.connect() as conn:
                for i in range(40):
                    assert conn.call_dag("conc", {"conc_incr": k * 1000 + i}).get(
                        timeout=30
                    ) == 2 * (k * 1000 + i + 1)
        except BaseException as exc:  # reported below
            errors_seen.append(exc)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors_seen and not any(t.is_alive() for t in threads)


def test_unserializable_argument_is_a_clear_error(cloud: CloudburstConnection) -> None:
    import threading

    f = cloud.register(lambda _, x: x, "unser_ident")
    with pytest.raises(errors.SerializationError, match="lock"):
        f(threading.Lock())
    g = cloud.register(lambda _: threading.Lock(), "unser_result")
    with pytest.raises(errors.CloudburstException, match="lock"):
        g().get(timeout=10)


def test_cached_placement_on_a_dead_executor_falls_back(
    cloud: CloudburstConnection, cluster: Any
) -> None:
    f = cloud.register(lambda _, x: x + 5, "dead_cached")
    first = f(1)
    assert first.get(timeout=10) == 6
    victim = first.executors[0]
    assert f(2).get(timeout=10) == 7  # the direct path, on the cached placement
    pids = {e["address"]: e["pid"] for e in cloud.status()["executor_list"]}
    os.kill(pids[victim], signal.SIGKILL)
    t0 = time.monotonic()
    assert f(3).get(timeout=30) == 8
    assert time.monotonic() - t0 < 15
    _wait_for_restart(cloud, victim, cluster.cfg.executor.workers)


def _wait_for_restart(cloud: CloudburstConnection, victim: str, workers: int) -> None:
    """Until the scheduler dropped ``victim`` and sees the restarted worker."""

    def whole() -> bool:
        addresses = [e["address"] for e in cloud.status()["executor_list"]]
        return victim not in addresses and len(addresses) >= workers

    wait_until(whole, 20, "the restarted worker")
