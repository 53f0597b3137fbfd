"""Executor trigger bookkeeping: pure logic."""

from __future__ import annotations

import pytest

from cloudburst.shared import wire
from cloudburst.shared.proto import cloudburst_pb2 as pb
from executor.triggers import (
    Cancel,
    InvalidTrigger,
    Run,
    TriggerBook,
    downstreams,
    forward_schedule,
    upstreams,
)
from scheduler.logic import build_dag


def schedule(
    functions: list[str], links: list[tuple[str, str]], call_id: str = "c1"
) -> pb.DagSchedule:
    return pb.DagSchedule(id=call_id, dag=build_dag("d", functions, links))


def trig(sched: pb.DagSchedule, target: str, source: str = "", *values: object) -> pb.DagTrigger:
    t = pb.DagTrigger(target_function=target, source=source)
    t.schedule.CopyFrom(sched)
    wire.encode_args(values, t.arguments)
    return t


def test_source_runs_on_its_trigger() -> None:
    sched = schedule(["a", "b"], [("a", "b")])
    action = TriggerBook().add(trig(sched, "a"), 0.0)
    assert isinstance(action, Run) and action.function == "a" and action.upstream == []


def test_fan_in_waits_for_all_and_orders_by_connection_not_arrival() -> None:
    sched = schedule(["x", "y", "z", "sink"], [("x", "sink"), ("y", "sink"), ("z", "sink")])
    book = TriggerBook()
    assert book.add(trig(sched, "sink", "z", 3), 0.0) is None
    assert book.add(trig(sched, "sink", "x", 1), 0.1) is None
    assert len(book) == 1
    action = book.add(trig(sched, "sink", "y", 2), 0.2)
    assert isinstance(action, Run)
    assert [wire.decode_args(a) for a in action.upstream] == [[1], [2], [3]]
    assert len(book) == 0


def test_invocations_are_kept_apart() -> None:
    book = TriggerBook()
    s1 = schedule(["x", "y", "s"], [("x", "s"), ("y", "s")], "c1")
    s2 = schedule(["x", "y", "s"], [("x", "s"), ("y", "s")], "c2")
    assert book.add(trig(s1, "s", "x", 1), 0.0) is None
    assert book.add(trig(s2, "s", "y", 2), 0.0) is None
    assert len(book) == 2


def test_error_trigger_cancels_and_later_triggers_are_dropped() -> None:
    sched = schedule(["x", "y", "s"], [("x", "s"), ("y", "s")])
    book = TriggerBook()
    assert book.add(trig(sched, "s", "x", 1), 0.0) is None
    bad = trig(sched, "s", "y")
    bad.error.CopyFrom(wire.error_message(pb.EXECUTION_ERROR, "boom", "y"))
    action = book.add(bad, 0.1)
    assert isinstance(action, Cancel) and action.error.message == "boom"
    assert len(book) == 0
    assert book.add(trig(sched, "s", "y", 2), 0.2) is None
    assert book.add(bad, 0.3) is None  # a second cancellation is not forwarded again


def test_expiry_drops_incomplete_entries() -> None:
    sched = schedule(["x", "y", "s"], [("x", "s"), ("y", "s")])
    book = TriggerBook(ttl=5.0)
    book.add(trig(sched, "s", "x", 1), 0.0)
    assert book.expire(4.0) == []
    assert book.expire(6.0) == [("c1", "s")]
    assert len(book) == 0


@pytest.mark.parametrize(
    ("target", "source", "text"),
    [("nope", "", "not a function"), ("b", "zz", "not upstream"), ("a", "b", "is a source")],
)
def test_inconsistent_triggers_are_refused(target: str, source: str, text: str) -> None:
    sched = schedule(["a", "b"], [("a", "b")])
    with pytest.raises(InvalidTrigger, match=text):
        TriggerBook().add(trig(sched, target, source), 0.0)


def test_trigger_without_id_is_refused() -> None:
    with pytest.raises(InvalidTrigger):
        TriggerBook().add(trig(schedule(["a"], [], call_id=""), "a"), 0.0)


def test_upstreams_downstreams_and_forwarded_schedule() -> None:
    dag = build_dag("d", ["a", "b", "c"], [("a", "c"), ("b", "c"), ("a", "b")])
    assert upstreams(dag, "c") == ["a", "b"]
    assert downstreams(dag, "a") == ["c", "b"]
    sched = pb.DagSchedule(id="i", dag=dag)
    wire.encode_args([1], sched.arguments["a"])
    wire.encode_args([2], sched.arguments["c"])
    fwd = forward_schedule(sched, ["a"])
    assert set(fwd.arguments) == {"c"} and set(sched.arguments) == {"a", "c"}


def test_only_pure_chain_links_are_run_in_place() -> None:
    from executor.worker import _inline_next

    chain = schedule(["a", "b", "c"], [("a", "b"), ("b", "c")])
    assert _inline_next(chain, "a", ["b"]) == "b"
    assert _inline_next(chain, "c", []) is None
    fan_out = schedule(["a", "b", "c"], [("a", "b"), ("a", "c")])
    assert _inline_next(fan_out, "a", ["b", "c"]) is None  # siblings run in parallel
    fan_in = schedule(["a", "b", "c"], [("a", "c"), ("b", "c")])
    assert _inline_next(fan_in, "a", ["c"]) is None  # c waits for b too
    with_ref = schedule(["a", "b"], [("a", "b")])
    with_ref.arguments["b"].values.add().reference.key = "k"  # placed for locality
    assert _inline_next(with_ref, "a", ["b"]) is None


def test_expired_fan_in_names_the_upstreams_that_never_came() -> None:
    from executor.triggers import TriggerBook

    dag = pb.Dag(name="d", functions=["a", "b", "c"])
    dag.connections.add(source="a", sink="c")
    dag.connections.add(source="b", sink="c")
    sched = pb.DagSchedule(id="x", dag=dag)
    book = TriggerBook(ttl=5.0)
    assert book.add(pb.DagTrigger(schedule=sched, target_function="c", source="a"), 0.0) is None
    assert book.expire_calls(4.0) == []
    [(entry, fn, missing)] = book.expire_calls(6.0)
    assert (entry.schedule.id, fn, missing) == ("x", "c", ["b"])
    assert len(book) == 0


def test_cancel_book_remembers_for_a_while_and_stays_bounded() -> None:
    from executor.triggers import CancelBook

    book = CancelBook(ttl=10.0, limit=3)
    assert book.add("a", 0.0) and not book.add("a", 1.0) and "a" in book
    for i, k in enumerate("bcd"):
        book.add(k, 2.0 + i)
    assert len(book.ids) == 3 and "a" not in book  # the oldest went first
    book.prune(now=13.5)
    assert set(book.ids) == {"d"}
