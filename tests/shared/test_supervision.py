"""The restart policy shared by the local supervisors (pure: no processes)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloudburst.supervision import Child, RestartPolicy, describe_exit


def test_back_off_is_exponential_and_capped() -> None:
    policy = RestartPolicy(initial_delay_s=0.2, factor=2.0, max_delay_s=1.0, max_exits=100)
    assert [policy.delay(n) for n in range(1, 6)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    assert policy.delay(10_000) == 1.0


@given(st.integers(min_value=1, max_value=500), st.integers(min_value=1, max_value=500))
def test_delay_is_monotonic_and_bounded(a: int, b: int) -> None:
    policy = RestartPolicy()
    lo, hi = sorted((a, b))
    assert policy.initial_delay_s <= policy.delay(lo) <= policy.delay(hi) <= policy.max_delay_s


def test_an_exit_schedules_a_restart_after_the_delay() -> None:
    child = Child("scheduler", RestartPolicy(initial_delay_s=0.5))
    child.started(pid=10, now=0.0)
    decision = child.exited(-9, now=3.0)
    assert (decision.action, decision.delay_s) == ("restart", 0.5)
    assert child.state == "backoff" and child.last_exit == "killed by SIGKILL"
    assert child.pid is None and child.last_pid == 10
    assert not child.due(3.4) and child.due(3.5)
    child.started(pid=11, now=3.5)
    assert (child.state, child.pid, child.restarts) == ("running", 11, 1)
    assert not child.due(10.0)


def test_a_crash_loop_is_marked_failed_not_restarted() -> None:
    policy = RestartPolicy(initial_delay_s=0.1, max_exits=3, window_s=10.0)
    child = Child("worker0", policy)
    now = 0.0
    child.started(1, now)
    actions = []
    for pid in range(2, 5):
        now += 1.0
        decision = child.exited(1, now)
        actions.append(decision.action)
        if decision.action == "restart":
            now += decision.delay_s
            assert child.due(now)
            child.started(pid, now)
    assert actions == ["restart", "restart", "fail"]
    assert child.state == "failed" and not child.due(now + 1000)
    assert child.restarts == 2
    assert child.snapshot() == {
        "pid": None,
        "state": "failed",
        "restarts": 2,
        "last_exit": "exit status 1",
        "last_pid": 3,
    }


def test_exits_outside_the_window_do_not_count() -> None:
    policy = RestartPolicy(initial_delay_s=0.1, max_exits=2, window_s=5.0)
    child = Child("cache", policy)
    child.started(1, 0.0)
    assert child.exited(-15, 1.0).action == "restart"
    child.started(2, 1.1)
    # The next exit is 10 s later: the back-off starts over, no crash loop.
    decision = child.exited(-15, 11.0)
    assert (decision.action, decision.delay_s) == ("restart", 0.1)


def test_exits_while_stopping_are_not_restarts() -> None:
    child = Child("kvs")
    child.started(1, 0.0)
    assert child.exited(0, 1.0, stopping=True).action == "ignore"
    assert child.state == "stopped" and not child.due(100.0)


@pytest.mark.parametrize(
    ("code", "text"),
    [(None, "running"), (0, "exit status 0"), (3, "exit status 3"), (-9, "killed by SIGKILL"),
     (-15, "killed by SIGTERM"), (-200, "killed by signal 200")],
)  # fmt: skip
def test_describe_exit(code: int | None, text: str) -> None:
    assert describe_exit(code) == text


def test_bad_policies_are_refused() -> None:
    with pytest.raises(ValueError):
        RestartPolicy(initial_delay_s=2.0, max_delay_s=1.0)
    with pytest.raises(ValueError):
        RestartPolicy(max_exits=0)


def test_a_failed_start_backs_off_like_an_exit() -> None:
    child = Child("scheduler", RestartPolicy(initial_delay_s=0.1, factor=3.0))
    child.started(1, 0.0)
    child.exited(1, 1.0)
    decision = child.exited(None, 1.1, why="could not start: [Errno 24] Too many open files")
    assert (decision.action, decision.delay_s) == ("restart", pytest.approx(0.3))
    assert child.last_exit == "could not start: [Errno 24] Too many open files"
