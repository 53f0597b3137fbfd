"""Streaming DAGs need their functions on distinct workers (one function at a time
per worker): placement spreads a DAG's functions while there are enough workers."""

from __future__ import annotations

from scheduler.placement import ExecutorView, place


def test_dag_functions_get_distinct_workers_even_with_stale_load() -> None:
    views = {a: ExecutorView(a, "n1", last_seen=0.0) for a in ("a", "b", "c")}
    views["a"].busy = 2  # a stale heartbeat: "a" looked busy
    got = place(views, ["parse", "transform", "aggregate"], now=0.1)
    assert got is not None and sorted(got.values()) == ["a", "b", "c"]


def test_more_functions_than_workers_still_placed() -> None:
    views = {a: ExecutorView(a, "n1", last_seen=0.0) for a in ("a", "b")}
    got = place(views, ["f", "g", "h"], now=0.1)
    assert got is not None and set(got.values()) == {"a", "b"}
