"""Functions and calls on a real cluster: idempotent registration, delete_function,
per-function limits (time, memory), calls whose worker or scheduler dies.

One private cluster for the module (its config sets the limit defaults and a short
result expiry); tests that kill processes use it, never the session cluster.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudburst.client.client import CloudburstConnection
from cloudburst.local import alive
from cloudburst.shared import errors
from cloudburst.shared.processes import ProcessGroup, free_port, port_open, wait_until
from cloudburst.shared.proto.cloudburst_pb2 import DAG_ALREADY_EXISTS
from tests.integration.conftest import Cluster, running, start_cluster

pytestmark = pytest.mark.integration

WORKERS = 3
DEFAULT_TIMEOUT_S = 6.0
DEFAULT_MEMORY = 2 << 30
RESULT_TTL_S = 1.0


def start_private_cluster(run_dir: Path, **executor: Any) -> Cluster:
    # A loaded machine may take a while to start workers again: calls wait for them.
    return start_cluster(run_dir, WORKERS, scheduler={"no_executor_wait_s": 8.0}, executor=executor)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running(
        start_private_cluster(
            tmp_path_factory.mktemp("calls"),
            default_function_timeout_s=DEFAULT_TIMEOUT_S,
            default_function_memory_bytes=DEFAULT_MEMORY,
            result_ttl_s=RESULT_TTL_S,
        )
    ) as c:
        yield c


@pytest.fixture(scope="module")
def spare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A second cluster for the tests that kill every worker or must count the KVS's
    ``results/`` keys from zero (the first of them in this file, so it starts fresh):
    one start-up for the three of them instead of one each."""
    with running(start_private_cluster(tmp_path_factory.mktemp("spare"), result_ttl_s=300.0)) as c:
        yield c


@pytest.fixture
def conn(limited: Cluster) -> Iterator[CloudburstConnection]:
    c = limited.connect()
    try:
        yield c
    finally:
        c.close()


def _workers(conn: CloudburstConnection) -> dict[str, int]:
    return {e["address"]: e["pid"] for e in conn.status()["executor_list"]}


def _wait_whole(conn: CloudburstConnection, gone: str = "", within: float = 30) -> None:
    """Until the node replaced every worker that died: the scheduler lists ``WORKERS``
    workers, every one of them a live process (and ``gone`` is not listed)."""

    def whole() -> bool:
        w = _workers(conn)
        return len(w) == WORKERS and gone not in w and all(map(alive, w.values()))

    wait_until(whole, within, "the node to replace its worker")


def test_registering_the_same_dag_again_is_an_idempotent_success(
    conn: CloudburstConnection,
) -> None:
    for _ in range(2):  # what a user's script does on every run
        sq = conn.register(lambda _, x: x * x, "idem_sq")
        assert sq(3).get(timeout=20) == 9
        assert conn.register_dag("idem_dag", ["idem_sq"], []) == (True, 0)
        assert conn.call_dag("idem_dag", {"idem_sq": 4}).get(timeout=20) == 16
    conn.register(lambda _, x: x + 1, "idem_inc")
    other = conn.register_dag("idem_dag", ["idem_sq", "idem_inc"], [("idem_sq", "idem_inc")])
    assert other == (False, DAG_ALREADY_EXISTS)
    assert "different DAG" in other.message and "idem_dag" in other.message
    # The same functions and links, listed in another order: the same DAG.
    assert conn.register_dag("idem_two", ["idem_sq", "idem_inc"], [("idem_sq", "idem_inc")])
    again = conn.register_dag("idem_two", ["idem_inc", "idem_sq"], [("idem_sq", "idem_inc")])
    assert again == (True, 0)


def test_delete_function(conn: CloudburstConnection, limited: Cluster) -> None:
    f = conn.register(lambda _, x: x - 1, "gone_fn")
    for i in range(4):  # loaded in workers, placement cached by the client
        assert f(i).get(timeout=20) == i - 1
    conn.register(lambda _, x: x, "gone_used")
    assert conn.register_dag("gone_dag", ["gone_used"], []) == (True, 0)
    with pytest.raises(errors.InvalidArgument, match="gone_dag"):
        conn.delete_function("gone_used")  # a DAG uses it
    conn.delete_function("gone_fn")
    with pytest.raises(errors.FunctionNotFound, match="gone_fn"):
        f(1).get(timeout=20)
    with pytest.raises(errors.FunctionNotFound, match="gone_fn"):
        conn.get_function("gone_fn")
    with pytest.raises(errors.FunctionNotFound, match="gone_fn"):
        conn.delete_function("gone_fn")
    assert "gone_fn" not in conn.list("gone_")
    # Another client (its own placement cache) sees it gone too.
    with limited.connect(direct=False) as other:
        with pytest.raises(errors.FunctionNotFound):
            other.exec_func("gone_fn", [1]).get(timeout=20)
    # The name can be used again; the used one can go once its DAG went.
    g = conn.register(lambda _, x: x * 100, "gone_fn")
    assert g(2).get(timeout=20) == 200
    assert conn.delete_dag("gone_dag") == (True, 0)
    conn.delete_function("gone_used")
    assert "gone_used" not in conn.list("gone_")


def test_bad_limits_are_refused_at_registration(conn: CloudburstConnection) -> None:
    for kw in ({"timeout": 0}, {"timeout": -1.0}, {"memory": 0}, {"timeout": True}):
        with pytest.raises(errors.InvalidArgument, match="positive"):
            conn.register(lambda _, x: x, "bad_limits", **kw)
    with pytest.raises(errors.InvalidArgument, match="timeout"):
        conn.register(lambda _, x: x, "bad_limits", timeout=float("inf"))  # the scheduler's
    with pytest.raises(errors.InvalidArgument, match="below 1 MiB"):
        conn.register(lambda _, x: x, "bad_limits", memory=1000)
    with pytest.raises(errors.FunctionNotFound):
        conn.get_function("bad_limits")


def test_a_call_over_its_time_limit_raises_function_timeout(conn: CloudburstConnection) -> None:
    def spin(_: Any, x: int) -> int:
        while True:  # an infinite loop in user code
            x += 1

    def sleepy(_: Any) -> None:
        time.sleep(3600)

    quick = conn.register(lambda _, x: x + 1, "limit_quick")
    assert quick(1).get(timeout=20) == 2
    before = _workers(conn)
    conn.register(spin, "limit_spin", timeout=1.0)
    t0 = time.monotonic()
    fut = conn.exec_func("limit_spin", [0])
    with pytest.raises(errors.FunctionTimeout) as info:
        fut.get(timeout=30)
    took = time.monotonic() - t0
    assert info.value.function == "limit_spin" and info.value.limit == 1.0
    assert "limit_spin" in str(info.value) and "1s" in str(info.value)
    assert 1.0 <= took < 15.0, took
    # The other workers serve right away; the node replaces the stopped one.
    for i in range(3):
        assert quick(i).get(timeout=20) == i + 1
    victim = next(iter(set(fut.executors) & set(before)), "")
    _wait_whole(conn, victim)

    # No per-function limit: the config default applies (to a call sleeping in C).
    conn.register(sleepy, "limit_sleepy")
    t0 = time.monotonic()
    with pytest.raises(errors.FunctionTimeout) as info:
        conn.exec_func("limit_sleepy", []).get(timeout=60)
    assert info.value.limit == DEFAULT_TIMEOUT_S
    assert DEFAULT_TIMEOUT_S <= time.monotonic() - t0 < DEFAULT_TIMEOUT_S + 20
    assert quick(5).get(timeout=20) == 6
    _wait_whole(conn)


def test_a_call_over_its_memory_limit_raises_and_the_node_survives(
    conn: CloudburstConnection, limited: Cluster
) -> None:
    def hog(_: Any, gigabytes: int) -> int:
        return len(bytearray(gigabytes << 30))  # a 50 GB allocation

    def creep(_: Any) -> int:
        chunks = []
        while True:  # small allocations up to the limit
            chunks.append(bytearray(16 << 20))

    node_pid = limited.group.procs["executor"].pid
    quick = conn.register(lambda _, x: x * 2, "mem_quick")
    conn.register(hog, "mem_hog", memory=256 << 20)
    with pytest.raises(errors.FunctionMemoryExceeded) as info:
        conn.exec_func("mem_hog", [50]).get(timeout=30)
    assert info.value.function == "mem_hog" and info.value.limit == 256 << 20
    assert isinstance(info.value, MemoryError) and "mem_hog" in str(info.value)
    assert quick(4).get(timeout=20) == 8
    _wait_whole(conn)

    conn.register(creep, "mem_creep", memory=256 << 20)
    with pytest.raises(errors.FunctionMemoryExceeded):
        conn.exec_func("mem_creep", []).get(timeout=30)
    assert quick(5).get(timeout=20) == 10
    _wait_whole(conn)

    # No per-function limit: the config default (2 GiB) stops 50 GB as well.
    conn.register(hog, "mem_hog_default")
    with pytest.raises(errors.FunctionMemoryExceeded) as info:
        conn.exec_func("mem_hog_default", [50]).get(timeout=30)
    assert info.value.limit == DEFAULT_MEMORY
    # A function within its limit is unaffected, before and after.
    conn.register(hog, "mem_ok", memory=1 << 30)
    assert conn.exec_func("mem_ok", [0]).get(timeout=20) == 0
    assert limited.group.procs["executor"].alive() and node_pid == (
        limited.group.procs["executor"].pid
    )
    _wait_whole(conn)


def test_a_call_whose_worker_is_killed_resolves_within_seconds(
    conn: CloudburstConnection, tmp_path: Path
) -> None:
    def once_slow(_: Any, marker: str) -> str:
        import os
        import time

        if os.path.exists(marker):  # the retry
            return f"retried by {os.getpid()}"
        open(marker, "w").close()
        time.sleep(5)  # killed long before (the default limit is 6 s)
        return "first"

    f = conn.register(once_slow, "inflight_slow")
    results = []
    for round in range(2):  # the second round: the retry's result is the answer
        marker = str(tmp_path / f"marker{round}")
        fut = f(marker)
        wait_until(lambda m=marker: os.path.exists(m), 20, "the call to start")  # type: ignore[misc]
        pids = _workers(conn)
        victim = fut.executors[0]
        os.kill(pids[victim], signal.SIGKILL)
        killed = time.monotonic()
        try:
            results.append(fut.get(timeout=30))
        except errors.ExecutorFailed as exc:  # a clear error is the other allowed outcome
            assert victim in str(exc)
            results.append("failed")
        took = time.monotonic() - killed
        print(f"round {round}: resolved {took:.2f}s after the kill: {results[-1]}")
        # 5 s from the issue, plus slack for a loaded machine.
        assert took < 8.0, f"the call resolved {took:.1f}s after its worker died"
        _wait_whole(conn, victim)
    assert any(r.startswith("retried by") for r in results), results


def test_a_dag_call_whose_worker_is_killed_resolves_within_seconds(
    conn: CloudburstConnection, tmp_path: Path
) -> None:
    def first(_: Any, x: int) -> int:
        return x + 1

    def slow_sink(_: Any, marker: str, x: int) -> str:
        import os
        import time

        if os.path.exists(marker):  # the retry (the whole DAG runs again)
            return f"retried {x}"
        with open(marker + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename(marker + ".tmp", marker)
        time.sleep(5)
        return "first"

    conn.register(first, "inflight_first")
    conn.register(slow_sink, "inflight_sink")
    links = [("inflight_first", "inflight_sink")]
    assert conn.register_dag("inflight_dag", ["inflight_first", "inflight_sink"], links)
    marker = tmp_path / "dag-marker"
    fut = conn.call_dag("inflight_dag", {"inflight_first": 1, "inflight_sink": str(marker)})
    wait_until(marker.exists, 20, "the sink to start")
    pid = int(marker.read_text())  # the worker running the sink (maybe inline after first)
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    try:
        result = fut.get(timeout=30)
    except errors.ExecutorFailed as exc:
        result = f"failed: {exc}"
    took = time.monotonic() - killed
    print(f"DAG call resolved {took:.2f}s after the kill: {result}")
    assert took < 8.0
    assert result == "retried 2"
    _wait_whole(conn)


def test_a_call_whose_scheduler_dies_after_the_ack_still_gets_its_result(
    limited: Cluster, procs: ProcessGroup
) -> None:
    port = free_port()
    argv = ("scheduler.server", "--config", str(limited.config_path), "--port", str(port))
    procs.python("sched_x", *argv)
    wait_until(lambda: port_open(limited.cfg.ip, port), 15, "the extra scheduler")
    ip = limited.cfg.ip
    with CloudburstConnection(ip, ip, port=port, direct=False, timeout=2.0) as c:
        wait_until(lambda: c.status()["executors"] >= WORKERS, 20, "executors on it")
        slow = c.register(lambda _, x: (__import__("time").sleep(1.5), x)[1], "sched_slow")
        fut = slow(7)  # acknowledged: the scheduler has placed it
        procs.kill("sched_x")
        t0 = time.monotonic()
        assert fut.get(timeout=30) == 7  # the executor answers the client directly
        assert time.monotonic() - t0 < 10

        # Scheduler and executor both gone: a clear error, not a hang (no timeout).
        procs.python("sched_y", *argv)
        wait_until(lambda: port_open(ip, port), 15, "the scheduler again")
        wait_until(lambda: c.status()["executors"] >= WORKERS, 20, "executors")
        stuck = c.register(lambda _, x: __import__("time").sleep(x), "sched_stuck", timeout=300)
        fut = stuck(120)
        time.sleep(0.5)
        victim = fut.executors[0]
        pid = {e["address"]: e["pid"] for e in c.status()["executor_list"]}[victim]
        procs.kill("sched_y")
        os.kill(pid, signal.SIGKILL)
        t0 = time.monotonic()
        # The client probes the executor itself (it accepts no connection any more);
        # the retry finds no scheduler: a clear error, within seconds.
        with pytest.raises(errors.ExecutorFailed, match="died") as info:
            fut.get()
        assert victim in str(info.value)
        assert time.monotonic() - t0 < 60
    with limited.connect() as main:
        _wait_whole(main)


def live_keys(data_dir: Path) -> set[str]:
    """Keys the KVS holds, read from its shards' snapshots and write-ahead logs (the
    last record of a key decides: a drop or a delete tombstone means gone). Read-only;
    a compaction racing with the read can only make the count smaller."""
    from anna.proto import anna_pb2
    from anna.shard.wal import read_records

    gone = {anna_pb2.NONE}
    if "TOMBSTONE" in anna_pb2.LatticeType.keys():
        gone.add(anna_pb2.LatticeType.Value("TOMBSTONE"))
    last: dict[str, int] = {}
    for shard in sorted({p.parent for p in data_dir.rglob("wal.log")}):
        for name in ("snapshot", "wal.log"):
            records, _ = read_records(shard / name)
            for rec in records:
                last[rec.key] = rec.lattice_type
    return {k for k, t in last.items() if t not in gone}


@pytest.mark.timeout(600)
def test_call_results_and_stream_directory_keys_are_reclaimed(
    conn: CloudburstConnection, limited: Cluster
) -> None:
    from cloudburst.ddt import DMap

    data_dir = Path(limited.cfg.kvs.data_dir)
    inc = conn.register(lambda _, x: x + 1, "leak_inc")
    assert inc(0).get(timeout=20) == 1
    # exec_func results are stored only on demand (obj_id read), by the client, and
    # deleted result_ttl_s later like the executors' (issue 16).
    conn.result_ttl_s = RESULT_TTL_S
    calls, batch = 10_000, 250
    seen_results = 0
    t0 = time.monotonic()
    futures_kept = []
    for start in range(0, calls, batch):
        futs = [inc(i) for i in range(start, start + batch)]
        assert [f.get(timeout=60) for f in futs] == [i + 1 for i in range(start, start + batch)]
        futures_kept.append(futs[0])
        assert futs[0].obj_id  # asks for this one to be stored
        if start % 2500 == 0:
            seen_results = max(
                seen_results, sum(k.startswith("results/") for k in live_keys(data_dir))
            )
    took = time.monotonic() - t0
    print(f"{calls} exec_func calls in {took:.1f}s")
    assert seen_results > 0, "the key count sees stored results at all"

    # A DAG call with a named stream announces its writer's cache under ddt-peers/.
    def mapper(cb: Any, text: str) -> int:
        out = cb.stream("words", DMap, writers=1)
        for w in text.split():
            out.update(w, 1)
        out.seal()
        return 0

    def reducer(cb: Any, _: int) -> dict[str, int]:
        return dict(cb.stream("words", DMap).wait(timeout=30))

    conn.register(mapper, "leak_mapper")
    conn.register(reducer, "leak_reducer")
    links = [("leak_mapper", "leak_reducer")]
    assert conn.register_dag("leak_dag", ["leak_mapper", "leak_reducer"], links)
    fut = conn.call_dag("leak_dag", {"leak_mapper": ["a b a"]})
    assert fut.get(timeout=60) == {"a": 2, "b": 1}
    peers_key = f"ddt-peers/{fut.request_id}/words"
    assert conn.get_object(peers_key, deserialize=False) is not None

    def reclaimed() -> bool:
        keys = live_keys(data_dir)
        gone = peers_key not in keys  # (few results/ keys now: do not race its expiry)
        return gone and sum(k.startswith(("results/", "ddt-peers/")) for k in keys) <= 10

    wait_until(reclaimed, 60, "expired results and directory keys to be deleted")
    keys = live_keys(data_dir)
    print(f"{len(keys)} live keys after {calls} calls (max results/ seen: {seen_results})")
    assert len(keys) < 200, sorted(keys)[:20]
    assert conn.get_object(peers_key, deserialize=False) is None
    for f in futures_kept:
        assert conn.get_object(f.obj_id) is None


def test_results_are_stored_on_demand_and_deleted_at_close(spare: Cluster) -> None:
    """exec_func results are not written to the KVS unless asked for (issue 16); those
    the client stored on demand are deleted when it closes (or after result_ttl_s)."""
    data_dir = Path(spare.cfg.kvs.data_dir)
    # The first test on ``spare``: no call stored a result there before.
    assert sum(k.startswith("results/") for k in live_keys(data_dir)) == 0
    with spare.connect() as conn:
        f = conn.register(lambda _, x: x * 3, "stop_f")
        futs = [f(i) for i in range(60)]
        assert [x.get(timeout=20) for x in futs] == [3 * i for i in range(60)]
        assert sum(k.startswith("results/") for k in live_keys(data_dir)) == 0
        keys = [x.obj_id for x in futs[:10]]  # stored now, by the client
        assert conn.get_object(keys[0]) == 0
        assert sum(k.startswith("results/") for k in live_keys(data_dir)) == 10
    assert sum(k.startswith("results/") for k in live_keys(data_dir)) == 0


def test_a_call_while_every_worker_restarts_waits_for_one(spare: Cluster) -> None:
    with spare.connect() as conn:
        _wait_whole(conn)  # every worker up, as on a fresh cluster
        f = conn.register(lambda _, x: x + 5, "restart_all_f")
        assert f(1).get(timeout=20) == 6
        pids = _workers(conn)
        assert len(pids) == WORKERS
        for pid in pids.values():
            os.kill(pid, signal.SIGKILL)
        t0 = time.monotonic()
        # The scheduler knows at once that none is left; the call waits for the
        # node's new workers instead of failing with "no live executor".
        assert f(2).get(timeout=30) == 7
        print(f"served {time.monotonic() - t0:.2f}s after every worker was killed")
        assert not set(_workers(conn)) & set(pids)


@pytest.mark.timeout(400)
def test_a_call_holding_the_gil_past_its_limit_is_killed_by_the_cpu_backstop(
    spare: Cluster,
) -> None:
    # sum() over a range runs in C without releasing the GIL: the watchdog thread
    # never runs, so RLIMIT_CPU (timeout * cpus + 2 more CPU seconds) ends the worker.
    with spare.connect() as conn:
        _wait_whole(conn, within=60)  # the workers the test before killed are back
        conn.register(lambda _, n: sum(range(n)), "gil_hog", timeout=1.0)
        t0 = time.monotonic()
        with pytest.raises(errors.ExecutorFailed, match="died"):
            conn.exec_func("gil_hog", [10**13]).get(timeout=120)
        print(f"the GIL-holding call failed after {time.monotonic() - t0:.1f}s")
        quick = conn.register(lambda _, x: -x, "gil_quick")
        assert quick(3).get(timeout=30) == -3
        # The hogs burn their CPU allowance first (slow on a busy machine).
        _wait_whole(conn, within=240)
