"""executor.pool: the node's worker-pool decisions (pure, no processes)."""

from __future__ import annotations

import pytest

from executor.pool import (
    STALE_S,
    Dispatch,
    Fail,
    Pool,
    PoolPolicy,
    Retire,
    Start,
    default_max_workers,
)


def pool_with(n: int, *, busy: bool, now: float = 0.0, **policy: float) -> Pool:
    kw = {"min_workers": n, "max_workers": 6, "idle_retire_s": 10.0, **policy}
    pool = Pool(PoolPolicy(**kw))  # type: ignore[arg-type]
    for i in range(n):
        pool.started(f"worker{i}", now)
        pool.status(f"worker{i}", f"tcp://h:{i}", busy=busy, queue=0, now=now)
    return pool


def test_default_max_is_a_multiple_of_cores_and_at_least_16() -> None:
    assert default_max_workers(3, cores=2) == 16
    assert default_max_workers(3, cores=8) == 32
    assert default_max_workers(40, cores=2) == 40


def test_policy_rejects_max_below_min() -> None:
    with pytest.raises(ValueError):
        PoolPolicy(min_workers=4, max_workers=3)


def test_a_waiting_call_goes_to_an_idle_worker_first() -> None:
    pool = pool_with(2, busy=True)
    pool.status("worker1", "tcp://h:1", busy=False, queue=0, now=0.5)
    pool.spilled("c1", b"t1", now=1.0, deadline=31.0)
    actions = pool.decide(1.0)
    assert actions == [Dispatch("c1", b"t1", "worker1", "tcp://h:1")]
    # claimed: a second call does not go there before it completed the first
    pool.spilled("c2", b"t2", now=1.01, deadline=31.0)
    assert pool.decide(1.01) == [Start(1, "1 call(s) waiting, 0 worker(s) free, 0 starting")]


def test_grows_by_the_waiting_calls_counting_workers_already_starting() -> None:
    pool = pool_with(3, busy=True)
    for i in range(7):
        pool.spilled(f"c{i}", b"t", now=1.0, deadline=31.0)
    [start] = pool.decide(1.0)
    assert isinstance(start, Start) and start.count == 3  # max 6: room for 3
    for i in range(3, 6):
        pool.started(f"worker{i}", 1.0)
    assert pool.decide(1.1) == []  # nothing more: at the maximum
    # the new workers heartbeat idle: each gets a call
    for i in range(3, 6):
        pool.status(f"worker{i}", f"tcp://h:{i}", busy=False, queue=0, now=2.0)
    dispatched = [a for a in pool.decide(2.0) if isinstance(a, Dispatch)]
    assert [d.call_id for d in dispatched] == ["c0", "c1", "c2"]
    assert len(pool.waiting) == 4


def test_starting_workers_are_not_started_twice() -> None:
    pool = pool_with(1, busy=True)
    pool.spilled("c1", b"t", now=1.0, deadline=31.0)
    [start] = pool.decide(1.0)
    assert isinstance(start, Start) and start.count == 1
    pool.started("worker1", 1.0)
    assert pool.decide(1.2) == []


def test_a_call_past_its_deadline_at_the_maximum_fails_saying_so() -> None:
    pool = pool_with(2, busy=True, max_workers=2)
    pool.spilled("c1", b"t", now=1.0, deadline=6.0)
    assert pool.decide(1.0) == []  # at the maximum: no start, waits
    for t in (2.0, 4.0):
        for i in range(2):
            pool.status(f"worker{i}", f"tcp://h:{i}", busy=True, queue=0, now=t)
        assert pool.decide(t) == []
    [fail] = pool.decide(6.0)
    assert isinstance(fail, Fail) and fail.at_maximum and fail.call_id == "c1"
    assert "the cluster is at its maximum" in fail.message
    assert "max_workers=2" in fail.message
    assert not pool.waiting


def test_a_call_past_its_deadline_below_the_maximum_says_why() -> None:
    pool = pool_with(1, busy=True)
    pool.spilled("c1", b"t", now=1.0, deadline=2.0)
    pool.decide(1.0)
    pool.started("worker1", 1.0)  # never heartbeats
    assert pool.decide(2.5) == []  # it may still come
    [fail] = pool.decide(2.0 + pool.policy.start_timeout_s)
    assert isinstance(fail, Fail) and not fail.at_maximum
    assert "1 starting" in fail.message


def test_idle_workers_retire_one_at_a_time_down_to_the_minimum() -> None:
    pool = pool_with(2, busy=False, min_workers=1)
    pool.started("worker2", 0.0)
    pool.status("worker2", "tcp://h:2", busy=False, queue=0, now=1.0)
    assert pool.decide(5.0) == []  # not idle long enough
    for i in range(3):
        pool.status(f"worker{i}", f"tcp://h:{i}", busy=False, queue=0, now=10.5)
    [retire] = pool.decide(10.5)
    assert isinstance(retire, Retire)
    assert pool.size() == 2
    pool.exited(retire.worker)
    [retire2] = pool.decide(11.5)
    assert isinstance(retire2, Retire) and retire2.worker != retire.worker
    pool.exited(retire2.worker)
    assert pool.decide(30.0) == []  # at the minimum
    assert pool.size() == 1


def test_a_busy_worker_is_not_idle_and_restarts_its_idle_clock() -> None:
    pool = pool_with(2, busy=False, min_workers=1)
    pool.status("worker1", "tcp://h:1", busy=True, queue=0, now=9.0)
    pool.status("worker1", "tcp://h:1", busy=False, queue=0, now=9.5)
    for t in (10.5, 12.0):
        pool.status("worker0", "tcp://h:0", busy=False, queue=0, now=t)
        pool.status("worker1", "tcp://h:1", busy=False, queue=0, now=t)
    [retire] = pool.decide(12.0)
    assert isinstance(retire, Retire) and retire.worker == "worker0"  # worker1 idle 2.5s


def test_no_retirement_while_calls_wait() -> None:
    pool = pool_with(3, busy=False, min_workers=1, max_workers=3)
    for i in range(3):
        pool.status(f"worker{i}", f"tcp://h:{i}", busy=i > 0, queue=0, now=20.0)
    pool.decide(20.0)
    pool.spilled("c", b"t", now=20.0, deadline=50.0)
    assert not any(isinstance(a, Retire) for a in pool.decide(20.01))


def test_stale_and_leaving_and_restarted_workers_get_no_calls() -> None:
    pool = pool_with(3, busy=False)
    pool.status("worker1", "tcp://h:1", busy=False, queue=0, now=0.0, leaving=True)
    pool.restarted("worker2", 0.0)
    pool.status("worker0", "tcp://h:0", busy=False, queue=0, now=0.0)
    pool.spilled("c", b"t", now=STALE_S + 1, deadline=100.0)
    actions = pool.decide(STALE_S + 1)
    assert not any(isinstance(a, Dispatch) for a in actions)
    assert pool.size() == 2  # the leaving one does not count


def test_a_worker_with_a_queue_is_not_free() -> None:
    pool = pool_with(1, busy=False)
    pool.status("worker0", "tcp://h:0", busy=False, queue=2, now=0.1)
    pool.spilled("c", b"t", now=0.2, deadline=100.0)
    assert [type(a) for a in pool.decide(0.2)] == [Start]


def test_a_worker_whose_handed_back_call_runs_elsewhere_is_not_retired() -> None:
    pool = pool_with(3, busy=False, min_workers=1, idle_retire_s=1.0)
    pool.status("worker0", "tcp://h:0", busy=True, queue=0, now=0.0)
    pool.spilled("c", b"t", now=0.1, deadline=100.0, origin="worker0")
    [dispatch] = pool.decide(0.1)
    assert isinstance(dispatch, Dispatch) and dispatch.worker != "worker0"
    other = dispatch.worker
    spare = ({"worker1", "worker2"} - {other}).pop()
    for t in (0.5, 1.0, 2.0, 3.0):
        pool.status("worker0", "tcp://h:0", busy=False, queue=0, now=t)
        pool.status(other, "tcp://h:x", busy=True, queue=0, now=t)  # runs c
        pool.status(spare, "tcp://h:s", busy=False, queue=0, now=t)
    retired = [a.worker for a in pool.decide(3.0) if isinstance(a, Retire)]
    assert retired == [spare]  # not worker0: its call still runs on `other`
    pool.exited(spare)
    pool.status(other, "tcp://h:x", busy=False, queue=0, now=3.5, completed=1)  # c is done
    pool.status("worker0", "tcp://h:0", busy=False, queue=0, now=4.5)
    pool.status(other, "tcp://h:x", busy=True, queue=0, now=4.6)  # a new call
    retired = [a.worker for a in pool.decide(5.0) if isinstance(a, Retire)]
    assert retired == ["worker0"]


def test_retirements_are_spaced() -> None:
    pool = pool_with(4, busy=False, min_workers=1, idle_retire_s=1.0, retire_every_s=2.0)
    for i in range(4):
        pool.status(f"worker{i}", f"tcp://h:{i}", busy=False, queue=0, now=5.0)
    assert len(pool.decide(5.0)) == 1
    assert pool.decide(6.0) == []
    assert len(pool.decide(7.0)) == 1


def test_calls_beyond_the_starting_workers_fail_at_their_deadline() -> None:
    pool = pool_with(1, busy=True, max_workers=2)
    pool.spilled("c1", b"t", now=1.0, deadline=5.0)
    pool.spilled("c2", b"t", now=1.0, deadline=5.0)
    [start] = pool.decide(1.0)
    assert isinstance(start, Start) and start.count == 1
    pool.started("worker1", 1.0)
    [fail] = pool.decide(5.0)  # c1 waits for worker1; c2 cannot be helped
    assert isinstance(fail, Fail) and fail.call_id == "c2" and fail.at_maximum
    assert list(pool.waiting) == ["c1"]


def test_a_worker_that_completed_the_dispatched_call_is_free_again_at_once() -> None:
    pool = pool_with(1, busy=False)
    pool.status("worker0", "tcp://h:0", busy=False, queue=0, now=0.0, completed=5)
    pool.spilled("a", b"t", now=0.1, deadline=100.0)
    pool.spilled("b", b"t", now=0.1, deadline=100.0)
    actions = pool.decide(0.1)
    assert [type(a) for a in actions] == [Dispatch, Start]
    pool.status("worker0", "tcp://h:0", busy=False, queue=0, now=0.11, completed=5)  # stale
    assert not any(isinstance(a, Dispatch) for a in pool.decide(0.11))
    pool.status("worker0", "tcp://h:0", busy=False, queue=0, now=0.2, completed=6)
    [d] = [a for a in pool.decide(0.2) if isinstance(a, Dispatch)]
    assert d.call_id == "b"
