"""The rest of the original DAG surface on a real cluster: ``call_dag(dry_run=...,
continuation=...)``, ``register_dag(colocated=..., gpu_functions=...,
batching_functions=...)`` and MULTIEXEC functions ``(name, [invalid results])``.

One private cluster for the module: node A on 127.0.0.1 (no GPU); the GPU test adds
node B on 127.0.0.2 advertising a GPU (``executor.gpu: true``), which later tests
(colocation) use as a second node. Tests run in file order (the GPU test first checks
the error while no GPU executor exists).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudburst.client.client import CloudburstConnection
from cloudburst.shared import errors
from cloudburst.shared.config import replace
from cloudburst.shared.processes import wait_until
from cloudburst.shared.proto import cloudburst_pb2 as pb
from tests.integration.conftest import Cluster, running, start_cluster

pytestmark = pytest.mark.integration

WORKERS = 2
BATCH_SIZE = 4
BATCH_WAIT_S = 1.0


@dataclasses.dataclass
class Nodes:
    cluster: Cluster
    run_dir: Path
    node_b: bool = False

    def add_gpu_node(self, conn: CloudburstConnection) -> None:
        """Start node B (127.0.0.2, a GPU advertised) once; wait for its workers."""
        if self.node_b:
            return
        cfg = self.cluster.cfg
        cfg_b = replace(
            cfg,
            ip="127.0.0.2",
            kvs={"host": cfg.ip},
            scheduler={"host": cfg.ip},
            executor={"gpu": True},
        )
        path = self.run_dir / "node_b.yml"
        path.write_text(yaml.safe_dump(dataclasses.asdict(cfg_b)))
        self.cluster.group.python("executor_b", "executor.node", "--config", str(path))
        self.node_b = True
        wait_until(lambda: conn.status()["executors"] >= 2 * WORKERS, 60, "node B's workers")


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    run_dir = tmp_path_factory.mktemp("dagopts")
    with running(
        start_cluster(
            run_dir,
            WORKERS,
            scheduler={"no_executor_wait_s": 1.0},
            executor={"batch_max_size": BATCH_SIZE, "batch_max_wait_s": BATCH_WAIT_S},
        )
    ) as c:
        yield Nodes(c, run_dir)


@pytest.fixture
def conn(nodes: Nodes) -> Iterator[CloudburstConnection]:
    c = nodes.cluster.connect(timeout=20.0)
    try:
        yield c
    finally:
        c.close()


def incr(_cb: Any, x: int) -> int:
    return x + 1


def square(_cb: Any, x: int) -> int:
    return x * x


def joined(_cb: Any, *parts: Any) -> str:
    return "|".join(str(p) for p in parts)


def where(_cb: Any, *_args: Any) -> str:
    import os

    return os.environ.get("CB_NODE_CACHE", "") or str(os.getpid())


# --- dry_run and continuation -------------------------------------------------


def test_dry_run_returns_the_call_message_without_sending_it(conn: CloudburstConnection) -> None:
    conn.register(incr, "opt_dry_incr")
    assert conn.register_dag("opt_dry", ["opt_dry_incr"], [])
    msg = conn.call_dag("opt_dry", {"opt_dry_incr": 3}, output_key="opt/dry", dry_run=True)
    assert isinstance(msg, pb.DagCall)
    assert msg.name == "opt_dry" and msg.output_key == "opt/dry"
    assert len(msg.function_args["opt_dry_incr"].values) == 1
    # Not sent: a real call afterwards is the only one that stores its result.
    time.sleep(0.5)
    assert conn.get_object("opt/dry") is None
    assert conn.call_dag("opt_dry", {"opt_dry_incr": 3}, output_key="opt/dry").get() == 4
    assert conn.get_object("opt/dry") == 4


def test_continuation_starts_a_second_dag_with_the_first_result(
    conn: CloudburstConnection,
) -> None:
    conn.register(incr, "opt_c_incr")
    conn.register(square, "opt_c_square")
    conn.register(joined, "opt_c_join")
    conn.register(incr, "opt_c_last")
    assert conn.register_dag(
        "opt_c1", ["opt_c_incr", "opt_c_square"], [("opt_c_incr", "opt_c_square")]
    )
    assert conn.register_dag("opt_c2", ["opt_c_join"], [])
    assert conn.register_dag("opt_c3", ["opt_c_last"], [])
    # The continuation's own arguments first, then the previous result: "a|16".
    then = conn.call_dag("opt_c2", {"opt_c_join": "a"}, dry_run=True)
    assert conn.call_dag("opt_c1", {"opt_c_incr": 3}, continuation=then).get() == "a|16"
    assert conn.call_dag("opt_c1", {"opt_c_incr": 4}, continuation=then, direct_response=True) == (
        "a|25"
    )
    # Chains nest; the last call's output key is where the result is stored.
    last = conn.call_dag("opt_c3", {}, output_key="opt/c3", dry_run=True)
    then = conn.call_dag("opt_c1", {}, dry_run=True, continuation=last)
    fut = conn.call_dag("opt_c3", {"opt_c_last": 1}, continuation=then)
    assert fut.get() == 10  # 1+1=2 -> (2+1)^2=9 -> 9+1=10
    assert fut.obj_id == "opt/c3" and conn.get_object("opt/c3") == 10
    # A continuation naming no DAG fails the call with the usual error.
    bad = conn.call_dag("opt_c_missing", {}, dry_run=True)
    with pytest.raises(errors.DagNotFound):
        conn.call_dag("opt_c3", {"opt_c_last": 1}, continuation=bad).get()
    with pytest.raises(errors.InvalidArgument):
        conn.call_dag("opt_c3", {"opt_c_last": 1}, continuation="opt_c1")  # type: ignore[arg-type]


# --- gpu_functions and colocated ------------------------------------------------


def node_of(_cb: Any, *upstream: Any) -> list[str]:
    import os

    return [*[x for up in upstream for x in up], os.environ.get("CB_NODE_CACHE", "")]


def _nodes_of(conn: CloudburstConnection, fut: Any) -> dict[str, str]:
    """function -> node id, from the call's placement and the cluster status."""
    node = {e["address"]: e["node_id"] for e in conn.status()["executor_list"]}
    return {fn: node[addr] for fn, addr in fut._schedule.locations.items()}


def test_gpu_functions_run_only_where_a_gpu_is_advertised(
    nodes: Nodes, conn: CloudburstConnection
) -> None:
    assert not nodes.node_b, "this test runs before node B exists (file order)"
    conn.register(node_of, "opt_g_pre")
    conn.register(node_of, "opt_g_model")
    dag = ("opt_gpu", ["opt_g_pre", "opt_g_model"], [("opt_g_pre", "opt_g_model")])
    assert conn.register_dag(*dag, gpu_functions=["opt_g_model"])
    # Node A has no GPU: a clear error (after scheduler.no_executor_wait_s).
    with pytest.raises(errors.ExecutorFailed, match=r"must run on a GPU.*executor.gpu: true"):
        conn.call_dag("opt_gpu", {"opt_g_pre": []}).get()
    nodes.add_gpu_node(conn)
    gpu_nodes = {e["node_id"] for e in conn.status()["executor_list"] if e["gpu"]}
    assert len(gpu_nodes) == 1 and next(iter(gpu_nodes)).startswith("127.0.0.2")
    for _ in range(6):
        fut = conn.call_dag("opt_gpu", {"opt_g_pre": []})
        ran = fut.get()
        assert _nodes_of(conn, fut)["opt_g_model"] in gpu_nodes
        assert "127.0.0.2" in ran[-1]  # the model ran in node B's process tree


def test_colocated_functions_run_on_one_node(nodes: Nodes, conn: CloudburstConnection) -> None:
    nodes.add_gpu_node(conn)  # two nodes of 2 workers each
    for fn in ("opt_l_f", "opt_l_g", "opt_l_h"):
        conn.register(node_of, fn)
    fns = ["opt_l_f", "opt_l_g", "opt_l_h"]
    links = [("opt_l_f", "opt_l_h"), ("opt_l_g", "opt_l_h")]
    assert conn.register_dag("opt_spread", fns, links)
    assert conn.register_dag("opt_coloc", fns, links, colocated=fns)
    # Without the option three functions spread over both nodes (a worker each) ...
    fut = conn.call_dag("opt_spread", {"opt_l_f": [], "opt_l_g": []})
    fut.get()
    assert len(set(_nodes_of(conn, fut).values())) == 2
    # ... with it they share one, and really run there.
    for _ in range(6):
        fut = conn.call_dag("opt_coloc", {"opt_l_f": [], "opt_l_g": []})
        ran = fut.get()
        assert len(set(_nodes_of(conn, fut).values())) == 1
        assert len(set(ran)) == 1 and ran[0], ran


# --- MULTIEXEC ------------------------------------------------------------------


def after(_cb: Any, delay: float, value: Any) -> Any:
    import time

    time.sleep(delay)
    return value


def passthrough(_cb: Any, value: Any) -> Any:
    return value


def tagged(_cb: Any, value: Any) -> str:
    return f"got:{value}"


def test_multiexec_first_valid_result_continues(conn: CloudburstConnection) -> None:
    conn.register(after, "opt_m_slow")
    conn.register(after, "opt_m_fast")
    conn.register(passthrough, "opt_m_pick")
    conn.register(tagged, "opt_m_sink")
    fns = ["opt_m_slow", "opt_m_fast", ("opt_m_pick", [None, "bad"]), "opt_m_sink"]
    links = [
        ("opt_m_slow", "opt_m_pick"),
        ("opt_m_fast", "opt_m_pick"),
        ("opt_m_pick", "opt_m_sink"),
    ]
    assert conn.register_dag("opt_multi", fns, links)

    def call(slow: Any, fast: Any, key: str) -> Any:
        args = {"opt_m_slow": [1.0, slow], "opt_m_fast": [0.0, fast]}
        return conn.call_dag("opt_multi", args, output_key=key)

    # A race: the first valid result continues, without waiting for the other branch.
    assert call("slow", "fast", "opt/m1").get() == "got:fast"
    # An invalid result (None, "bad") is dropped: the other branch's continues.
    assert call("slow", None, "opt/m2").get() == "got:slow"
    assert call("slow", "bad", "opt/m3").get() == "got:slow"
    # Once the slow branch surely finished, nothing else reached the sink: the
    # output key still holds the first result.
    time.sleep(2.0)
    assert conn.get_object("opt/m1") == "got:fast"
    # Every result invalid: the call fails instead of hanging.
    with pytest.raises(errors.CloudburstException, match="every result of MULTIEXEC"):
        call(None, "bad", "opt/m4").get()


# --- batching_functions -----------------------------------------------------------


def model(_cb: Any, xs: list[int], scale: list[int]) -> list[tuple[int, int]]:
    return [(x * s, len(xs)) for x, s in zip(xs, scale, strict=True)]


def broken_model(_cb: Any, xs: list[int]) -> list[int]:
    return xs[:1]  # one result for the whole batch: wrong


def test_batching_function_runs_once_over_pending_calls(conn: CloudburstConnection) -> None:
    conn.register(incr, "opt_b_pre")
    conn.register(model, "opt_b_model")
    fns = ["opt_b_pre", "opt_b_model"]
    assert conn.register_dag(
        "opt_batch", fns, [("opt_b_pre", "opt_b_model")], batching_functions=["opt_b_model"]
    )
    # 8 calls sent together: each waits up to BATCH_WAIT_S on the model's worker for
    # others, and a batch holds at most BATCH_SIZE.
    futs = [conn.call_dag("opt_batch", {"opt_b_pre": i, "opt_b_model": 10}) for i in range(8)]
    results = [f.get() for f in futs]
    assert [r[0] for r in results] == [(i + 1) * 10 for i in range(8)]  # each its own
    sizes = [r[1] for r in results]
    assert max(sizes) > 1 and max(sizes) <= BATCH_SIZE, sizes
    # A lone call runs alone once its wait is over.
    assert conn.call_dag("opt_batch", {"opt_b_pre": 1, "opt_b_model": 3}).get() == (6, 1)
    # A batching function that does not return one result per call fails each call.
    conn.register(broken_model, "opt_b_broken")
    assert conn.register_dag(
        "opt_batch_bad", ["opt_b_broken"], [], batching_functions=["opt_b_broken"]
    )
    futs = [conn.call_dag("opt_batch_bad", {"opt_b_broken": i}) for i in range(3)]
    for f in futs:
        try:
            assert f.get() == 0  # a batch of one is right
        except errors.InvalidArgument as exc:
            assert "one result per call" in str(exc)
    assert any(f.exception() is not None for f in futs), "some batch had several calls"
