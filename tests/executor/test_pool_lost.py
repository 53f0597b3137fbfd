"""executor.pool: a handed-back call whose new worker dies is reported (pure)."""

from __future__ import annotations

from executor.pool import Dispatch, Pool, PoolPolicy


def test_a_handed_back_call_is_lost_with_its_worker_and_only_until_it_finished() -> None:
    pool = Pool(PoolPolicy(min_workers=2, max_workers=4))
    for i in range(2):
        pool.started(f"worker{i}", 0.0)
    pool.status("worker0", "tcp://h:0", busy=True, queue=0, now=0.5, completed=0)
    pool.status("worker1", "tcp://h:1", busy=False, queue=0, now=0.5, completed=4)
    pool.spilled("c1", b"trigger-1", now=1.0, deadline=30.0, origin="worker0")
    [d] = pool.decide(now=1.0)
    assert isinstance(d, Dispatch) and d.worker == "worker1"
    # worker1 dies while running c1: c1 is lost, with a message saying so
    [lost] = pool.died("worker1", "killed by SIGKILL", now=3.5)
    assert (lost.call_id, lost.data, lost.worker) == ("c1", b"trigger-1", "worker1")
    assert "the worker running this call died" in lost.message
    assert "killed by SIGKILL" in lost.message and "2.5s" in lost.message
    assert not pool.moved and pool.died("worker1", "again", now=4.0) == []
    # its slot waits for the new process's first heartbeat before it gets calls
    assert pool.workers["worker1"].starting
    # a call that finished before its worker died is not lost
    pool.status("worker1", "tcp://h:9", busy=False, queue=0, now=5.0, completed=0)
    pool.spilled("c2", b"trigger-2", now=5.0, deadline=30.0, origin="worker0")
    [d] = pool.decide(now=5.0)
    assert d.worker == "worker1"
    pool.status("worker1", "tcp://h:9", busy=False, queue=0, now=6.0, completed=1)
    assert pool.died("worker1", "exit status 1", now=7.0) == []
