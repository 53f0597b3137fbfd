"""SINGLE/MULTI with the node cache disabled (local mode): the versions a call read
travel inline with its triggers; chains on one worker keep them in the worker's
session; calls take the client's direct-trigger fast path (docs/consistency.md)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudburst.client.client import MULTI, NORMAL, SINGLE, CloudburstConnection
from cloudburst.shared.processes import wait_until
from cloudburst.shared.reference import CloudburstReference
from tests.integration.conftest import Cluster, start_cluster


@pytest.fixture(scope="module")
def nocache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = start_cluster(tmp_path_factory.mktemp("nocache"), workers=2, cache={"enabled": False})
    try:
        yield cluster
    finally:
        cluster.group.stop_all()
    assert not [p.name for p in cluster.group.procs.values() if p.alive()]


@pytest.fixture
def cloud(nocache: Cluster) -> Iterator[CloudburstConnection]:
    conn = nocache.connect(timeout=20.0)
    try:
        yield conn
    finally:
        conn.close()


def hold_f(lib: Any, key: str, flag_dir: str) -> tuple[Any, str]:
    seen = lib.get(key)
    Path(flag_dir, "read").touch()
    deadline = time.monotonic() + 10
    while not Path(flag_dir, "go").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the test never said go")
        time.sleep(0.0005)
    lib.put(key + "/w", f"f-wrote-{seen}")
    return seen, lib.getid()


def _trials(
    cloud: CloudburstConnection,
    name: str,
    g_args: dict[str, Any],
    mode: int,
    trials: int,
    tmp: Path,
) -> list[tuple[Any, ...]]:
    key = f"{name}/k"
    out = []
    for i in range(trials):
        assert cloud.put_object(key, f"old{i}")
        flags = tmp / f"{mode}-{i}"
        flags.mkdir()
        kw: dict[str, Any] = {"consistency": mode}
        if mode == MULTI:
            kw.update(output_key=f"{name}/out/{i}", client_id="me")
        fut = cloud.call_dag(name, {f"{name}_f": [key, str(flags)], **g_args}, **kw)
        wait_until(
            lambda r=flags / "read", fut=fut: r.exists() or (fut.done() and fut.get() is None),
            20,
            "f read k",
            interval=0.0005,
        )
        assert cloud.put_object(key, f"new{i}")
        (flags / "go").touch()
        out.append((i, *fut.get(timeout=20)))
    return out


def _register(cloud: CloudburstConnection, name: str) -> None:
    key = f"{name}/k"

    def g(lib: Any, *args: Any) -> tuple[Any, Any, Any, str, str]:
        f_saw, f_id = args[-2:]
        return f_saw, lib.get(key), lib.get(key + "/w"), f_id, lib.getid()

    cloud.register(hold_f, f"{name}_f")
    cloud.register(g, f"{name}_g")
    assert cloud.register_dag(name, [f"{name}_f", f"{name}_g"], [(f"{name}_f", f"{name}_g")])[0]


@pytest.mark.parametrize("mode", [NORMAL, SINGLE, MULTI])
def test_chain_on_one_worker_direct_path(
    cloud: CloudburstConnection, tmp_path: Path, mode: int
) -> None:
    name = f"nc_chain{mode}"
    _register(cloud, name)
    rows = _trials(cloud, name, {}, mode, 30, tmp_path)
    assert f"dag:{name}" in cloud._placements  # the fast path was taken after the first call
    for i, f_saw, g_saw, g_w, f_id, g_id in rows:
        assert f_id == g_id  # the chain ran in place
        assert f_saw == f"old{i}"
        assert g_saw == (f"new{i}" if mode == NORMAL else f"old{i}")
        assert g_w == f"f-wrote-old{i}"  # f's write, read back


@pytest.mark.parametrize("mode", [NORMAL, SINGLE])
def test_across_workers_versions_travel_inline(
    cloud: CloudburstConnection, tmp_path: Path, mode: int
) -> None:
    name = f"nc_cross{mode}"
    _register(cloud, name)
    assert cloud.put_object(f"{name}/anchor", 1)
    # A reference argument: g is not run in place but placed by the scheduler.
    rows = _trials(
        cloud, name, {f"{name}_g": [CloudburstReference(f"{name}/anchor")]}, mode, 40, tmp_path
    )
    cross = [r for r in rows if r[4] != r[5]]
    assert cross, "g never ran on another worker than f"
    for i, f_saw, g_saw, g_w, _, _ in rows:
        assert f_saw == f"old{i}"
        assert g_saw == (f"new{i}" if mode == NORMAL else f"old{i}")
        assert g_w == f"f-wrote-old{i}"


def test_multi_orders_a_clients_successive_calls(cloud: CloudburstConnection) -> None:
    """Each MULTI output's clock follows the client's previous output, whatever its
    key: the client sends the clock of its last output with the next call."""
    from lattices import MultiKeyCausalLattice

    cloud.register(lambda _, x: x + 1, "nc_multi_inc")
    assert cloud.register_dag("nc_multi", ["nc_multi_inc"], [])[0]
    clocks = []
    for i in range(5):
        out = f"nc_multi/out/{i}"  # a different key every call
        assert (
            cloud.call_dag(
                "nc_multi", {"nc_multi_inc": i}, consistency=MULTI, output_key=out, client_id="c1"
            ).get(timeout=20)
            == i + 1
        )
        stored = cloud.get_object(out)
        assert isinstance(stored, MultiKeyCausalLattice)
        clocks.append(stored.vector_clock)
    assert [c.get("c1") for c in clocks] == [1, 2, 3, 4, 5]
    assert all(b.dominates(a) for a, b in zip(clocks, clocks[1:], strict=False))
    # Another client id starts its own order.
    cloud.call_dag(
        "nc_multi",
        {"nc_multi_inc": 0},
        consistency=MULTI,
        output_key="nc_multi/o2",
        client_id="c2",
    ).get(timeout=20)
    assert cloud.get_object("nc_multi/o2").vector_clock.get("c2") == 1
