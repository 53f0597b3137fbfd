"""Placement policy: pure logic, no processes."""

from __future__ import annotations

from scheduler.placement import ExecutorView, PlacementPolicy, choose, locality_bytes, place

POLICY = PlacementPolicy(heartbeat_timeout=3.0, overload=4, recent_window=0.05)


def view(addr: str, node: str = "n1", **kw: object) -> ExecutorView:
    kw.setdefault("last_seen", 10.0)
    return ExecutorView(addr, node, **kw)  # type: ignore[arg-type]


def test_spreads_a_burst_over_idle_executors() -> None:
    execs = {a: view(a) for a in ("a", "b", "c")}
    picks = [place(execs, ["f"], 10.0, POLICY)["f"] for _ in range(3)]  # type: ignore[index]
    assert sorted(picks) == ["a", "b", "c"]


def test_recent_assignments_stop_counting_after_the_window() -> None:
    ex = view("a")
    ex.assign("f", 10.0)
    assert ex.load(10.01, POLICY) == 1
    assert ex.load(10.2, POLICY) == 0


def test_never_picks_dead_leaving_or_excluded() -> None:
    execs = [
        view("dead", last_seen=1.0),
        view("leaving", leaving=True),
        view("excluded"),
        view("ok", queue_length=3),
    ]
    assert choose(execs, "f", 10.0, POLICY, exclude={"excluded"}).address == "ok"  # type: ignore[union-attr]
    assert choose(execs[:3], "f", 10.0, POLICY, exclude={"excluded"}) is None


def test_avoids_overloaded_executors() -> None:
    execs = [view("busy", queue_length=10, functions=frozenset({"f"})), view("idle")]
    assert choose(execs, "f", 10.0, POLICY).address == "idle"  # type: ignore[union-attr]


def test_overloaded_is_still_used_when_it_is_all_there_is() -> None:
    execs = [view("busy", queue_length=10), view("busier", queue_length=20)]
    assert choose(execs, "f", 10.0, POLICY).address == "busy"  # type: ignore[union-attr]


def test_prefers_an_executor_holding_the_function_at_equal_load() -> None:
    execs = [view("cold"), view("warm", functions=frozenset({"f"}))]
    assert choose(execs, "f", 10.0, POLICY).address == "warm"  # type: ignore[union-attr]
    assert choose(execs, "g", 10.0, POLICY).address in {"cold", "warm"}  # type: ignore[union-attr]


def test_lower_load_beats_holding_the_function() -> None:
    execs = [view("warm", functions=frozenset({"f"}), queue_length=2), view("cold")]
    assert choose(execs, "f", 10.0, POLICY).address == "cold"  # type: ignore[union-attr]


def test_locality_prefers_the_node_caching_the_most_referenced_bytes() -> None:
    execs = [view("a1", "n1"), view("b1", "n2", queue_length=1)]
    caches = {"n1": {"k1": 10}, "n2": {"k1": 10, "k2": 5_000}}
    got = choose(execs, "f", 10.0, POLICY, ref_keys=["k1", "k2"], cache_summaries=caches)
    assert got.address == "b1"  # type: ignore[union-attr]
    assert locality_bytes("n2", ["k1", "k2"], caches) == 5_010
    assert locality_bytes("n3", ["k1"], caches) == 0


def test_locality_yields_to_overload() -> None:
    execs = [view("a1", "n1"), view("b1", "n2", queue_length=9)]
    caches = {"n2": {"k": 1 << 20}}
    got = choose(execs, "f", 10.0, POLICY, ref_keys=["k"], cache_summaries=caches)
    assert got.address == "a1"  # type: ignore[union-attr]


def test_place_spreads_the_functions_of_one_dag_and_fails_without_executors() -> None:
    execs = {a: view(a) for a in ("a", "b")}
    locs = place(execs, ["f", "g"], 10.0, POLICY)
    assert locs is not None and set(locs.values()) == {"a", "b"}
    assert place({}, ["f"], 10.0, POLICY) is None
    assert place(execs, ["f"], 10.0, POLICY, exclude={"a", "b"}) is None
