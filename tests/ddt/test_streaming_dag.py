"""Streaming DAGs on a real local cluster (KVS, scheduler, executor node + cache).

A generator function is a streaming producer; its downstream functions start at once
and iterate the stream while it is produced.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from cloudburst.client.client import CloudburstConnection
from cloudburst.local import free_port_config, wait_ready, write_config
from cloudburst.shared.errors import CloudburstException
from cloudburst.shared.processes import ProcessGroup

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudburstConnection]:
    run = tmp_path_factory.mktemp("ddt-cluster")
    cfg = free_port_config(
        run,
        workers=3,
        scheduler={"heartbeat_timeout_s": 2.0, "call_timeout_s": 30.0},
        executor={"workers": 3, "base_port": 0, "heartbeat_period_s": 0.25},
    )
    path = write_config(cfg, run / "config.yml")
    group = ProcessGroup(log_dir=run / "logs")
    try:
        group.python("kvs", "anna.local", "--config", str(path))
        group.python("scheduler", "scheduler.server", "--config", str(path))
        group.python("executor", "executor.node", "--config", str(path))
        wait_ready(cfg, 3, timeout=60.0)
        conn = CloudburstConnection(cfg.ip, cfg.ip, port=cfg.scheduler.port, timeout=30.0)
        try:
            yield conn
        finally:
            conn.close()
    except BaseException:
        for p in group.procs.values():
            print(f"--- {p.name}\n{p.log_tail(60)}", file=sys.stderr)
        raise
    finally:
        group.stop_all()
        assert not [p.name for p in group.procs.values() if p.alive()]


def produce(cb: Any, n: int) -> Any:
    for i in range(n):  # noqa: UP028 - the issue's example, verbatim
        yield i


def double(cb: Any, items: Any) -> Any:
    for x in items:
        yield 2 * x


def total(cb: Any, items: Any) -> int:
    return sum(items)


def test_the_issue_example(cloud: CloudburstConnection) -> None:
    for name, fn in (("produce", produce), ("double", double), ("total", total)):
        cloud.register(fn, name)
    cloud.register_dag(
        "pipe", ["produce", "double", "total"], [("produce", "double"), ("double", "total")]
    )
    assert cloud.call_dag("pipe", {"produce": [100]}).get(timeout=60) == 9900
    # Again, bigger (many batches) and repeated: streams are per call.
    assert cloud.call_dag("pipe", {"produce": [20000]}).get(timeout=60) == 2 * sum(range(20000))
    assert cloud.call_dag("pipe", {"produce": [7]}).get(timeout=60) == 42


def test_stages_overlap(cloud: CloudburstConnection) -> None:
    def slow_source(cb: Any, n: int) -> Any:
        for i in range(n):
            time.sleep(0.02)
            yield (i, time.time())

    def lag_sink(cb: Any, items: Any) -> tuple[int, float, float]:
        lags, first = [], None
        for _, produced in items:
            now = time.time()
            first = first if first is not None else now
            lags.append(now - produced)
        return len(lags), max(lags), first

    cloud.register(slow_source, "slow_source")
    cloud.register(lag_sink, "lag_sink")
    cloud.register_dag("lagdag", ["slow_source", "lag_sink"], [("slow_source", "lag_sink")])
    started = time.time()
    count, max_lag, first = cloud.call_dag("lagdag", {"slow_source": [50]}).get(timeout=60)
    ended = time.time()
    assert count == 50
    # Items reached the sink while the source was still producing (>= 1 s in all).
    assert ended - started >= 1.0
    assert first - started < 0.8 * (ended - started)
    assert max_lag < 0.5


def test_producer_error_reaches_the_caller(cloud: CloudburstConnection) -> None:
    def broken(cb: Any, n: int) -> Any:
        for i in range(n):
            if i == 10:
                raise ValueError("bad record 10")
            yield i

    cloud.register(broken, "broken_source")
    cloud.register(total, "total2")
    cloud.register_dag("brokendag", ["broken_source", "total2"], [("broken_source", "total2")])
    with pytest.raises(CloudburstException, match="bad record 10|failed"):
        cloud.call_dag("brokendag", {"broken_source": [100]}).get(timeout=60)


def test_named_streams_with_cb_stream(cloud: CloudburstConnection) -> None:
    from cloudburst.ddt import DMap

    def mapper(cb: Any, text: str) -> int:
        out = cb.stream("words", DMap, writers=1)
        for w in text.split():
            out.update(w, 1)
        out.seal()
        return 0

    def reducer(cb: Any, _: int) -> dict[str, int]:
        return dict(cb.stream("words", DMap).wait(timeout=30))

    cloud.register(mapper, "ddt_mapper")
    cloud.register(reducer, "ddt_reducer")
    cloud.register_dag("wcdag", ["ddt_mapper", "ddt_reducer"], [("ddt_mapper", "ddt_reducer")])
    got = cloud.call_dag("wcdag", {"ddt_mapper": ["a b a c a"]}).get(timeout=60)
    assert got == {"a": 3, "b": 1, "c": 1}


def test_generator_as_last_function_returns_a_list(cloud: CloudburstConnection) -> None:
    cloud.register(produce, "produce_only")
    cloud.register_dag("gendag", ["produce_only"], [])
    assert cloud.call_dag("gendag", {"produce_only": [5]}).get(timeout=60) == [0, 1, 2, 3, 4]


@pytest.fixture(scope="module")
def cloud2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudburstConnection]:
    """Two executor nodes with 2 workers and a cache each."""
    run = tmp_path_factory.mktemp("ddt-2nodes")
    cfg = free_port_config(
        run,
        workers=4,
        scheduler={"heartbeat_timeout_s": 2.0, "call_timeout_s": 30.0},
        executor={"workers": 2, "base_port": 0, "heartbeat_period_s": 0.25},
    )
    path = write_config(cfg, run / "config.yml")
    with ProcessGroup(log_dir=run / "logs") as group:
        group.python("kvs", "anna.local", "--config", str(path))
        group.python("scheduler", "scheduler.server", "--config", str(path))
        group.python("node1", "executor.node", "--config", str(path))
        group.python("node2", "executor.node", "--config", str(path))
        wait_ready(cfg, 4, timeout=60.0)
        conn = CloudburstConnection(cfg.ip, cfg.ip, port=cfg.scheduler.port, timeout=30.0)
        try:
            yield conn
        finally:
            conn.close()


def test_streams_cross_nodes(cloud2: CloudburstConnection) -> None:
    """A 3-stage chain on 3 distinct workers of 2 two-worker nodes must cross nodes, so
    items flow producer -> its cache -> the other cache -> consumer."""
    conn = cloud2

    def src(cb: Any, n: int) -> Any:
        import os

        cb.put("xnode/src", os.getppid())
        for i in range(n):  # noqa: UP028
            yield (i, "x" * 100)

    def mid(cb: Any, items: Any) -> Any:
        import os

        cb.put("xnode/mid", os.getppid())
        for i, _pad in items:
            yield i * 3

    def sink(cb: Any, items: Any) -> Any:
        import os

        return sum(items), os.getppid()

    for f in (src, mid, sink):
        conn.register(f, f.__name__)
    conn.register_dag("xnode", ["src", "mid", "sink"], [("src", "mid"), ("mid", "sink")])
    value, sink_node = conn.call_dag("xnode", {"src": [30000]}).get(timeout=60)
    assert value == 3 * sum(range(30000))
    nodes = {conn.get_object("xnode/src"), conn.get_object("xnode/mid"), sink_node}
    assert len(nodes) == 2, nodes  # the chain crossed from one node to the other


def test_named_stream_across_nodes(cloud2: CloudburstConnection) -> None:
    """Two writers and a reader of a named stream on 3 workers of 2 nodes: at least one
    writer is on the other node; the reader finds its cache through the directory."""
    from cloudburst.ddt import DMap

    def nw(cb: Any, word: str) -> int:
        import os

        out = cb.stream("tally", DMap, writers=2)
        for _ in range(1000):
            out.update(word, 1)
        out.seal()
        return os.getppid()

    def nr(cb: Any, a: int, b: int) -> Any:
        import os

        return dict(cb.stream("tally", DMap).wait(timeout=30)), {a, b, os.getppid()}

    conn = cloud2
    conn.register(nw, "nw1")
    conn.register(nw, "nw2")
    conn.register(nr, "nr")
    conn.register_dag("named2", ["nw1", "nw2", "nr"], [("nw1", "nr"), ("nw2", "nr")])
    for _ in range(2):
        tally, nodes = conn.call_dag("named2", {"nw1": ["a"], "nw2": ["b"]}).get(timeout=60)
        assert tally == {"a": 1000, "b": 1000}
        assert len(nodes) == 2


def test_consumer_that_stops_early_stops_the_producer(cloud: CloudburstConnection) -> None:
    def endless(cb: Any, n: int) -> Any:
        i = 0
        while True:
            yield i
            i += 1

    def first5(cb: Any, items: Any) -> list[int]:
        out = []
        for x in items:
            out.append(x)
            if len(out) == 5:
                return out
        return out

    def boom(cb: Any, items: Any) -> int:
        for x in items:
            if x == 3:
                raise KeyError("consumer failed at 3")
        return 0

    cloud.register(endless, "endless")
    cloud.register(first5, "first5")
    cloud.register(boom, "boom")
    cloud.register_dag("earlystop", ["endless", "first5"], [("endless", "first5")])
    cloud.register_dag("boomdag", ["endless", "boom"], [("endless", "boom")])
    started = time.monotonic()
    assert cloud.call_dag("earlystop", {"endless": [0]}).get(timeout=60) == [0, 1, 2, 3, 4]
    with pytest.raises(CloudburstException, match="consumer failed at 3"):
        cloud.call_dag("boomdag", {"endless": [0]}).get(timeout=60)
    # The endless producers stopped (their workers are free): the next calls run at once.
    cloud.register(produce, "after_src")
    cloud.register(total, "after_sum")
    cloud.register_dag("afterdag", ["after_src", "after_sum"], [("after_src", "after_sum")])
    for _ in range(3):
        assert cloud.call_dag("afterdag", {"after_src": [10]}).get(timeout=30) == 45
    assert time.monotonic() - started < 30


def test_fan_out_stream_to_two_sinks(cloud: CloudburstConnection) -> None:
    """One producer streaming to two consumers: each reads the whole stream, and the
    first sink to end does not free the stream under the other."""

    def fan_src(cb: Any, n: int) -> Any:
        for i in range(n):  # noqa: UP028
            yield i

    def fan_sum(cb: Any, items: Any) -> int:
        value = sum(items)
        cb.put("fan/sum", value)
        return value

    def fan_count(cb: Any, items: Any) -> int:
        import time as _t

        n = 0
        for _ in items:
            n += 1
            if n == 1:
                _t.sleep(0.5)  # lag behind the other sink
        cb.put("fan/count", n)
        return n

    for f in (fan_src, fan_sum, fan_count):
        cloud.register(f, f.__name__)
    cloud.register_dag(
        "fandag",
        ["fan_src", "fan_sum", "fan_count"],
        [("fan_src", "fan_sum"), ("fan_src", "fan_count")],
    )
    got = cloud.call_dag("fandag", {"fan_src": [50000]}).get(timeout=60)
    assert got in (sum(range(50000)), 50000)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if cloud.get_object("fan/count") is not None and cloud.get_object("fan/sum") is not None:
            break
        time.sleep(0.1)
    assert cloud.get_object("fan/sum") == sum(range(50000))
    assert cloud.get_object("fan/count") == 50000
