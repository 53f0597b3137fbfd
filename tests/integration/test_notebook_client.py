"""Working with functions from a notebook (issue 14): many futures, readable errors,
honest waiting, output, user modules. Against the real local cluster (conftest)."""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

import pytest

from cloudburst.client import (
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    as_completed,
    progress,
    wait,
)
from cloudburst.client.client import CloudburstConnection
from cloudburst.shared import errors

pytestmark = pytest.mark.integration


def _sleepy(_: Any, x: float) -> float:
    import time

    time.sleep(x)
    return x


def test_map_wait_and_as_completed(cloud: CloudburstConnection) -> None:
    sq = cloud.register(lambda _, x: x * x, "nb_sq")
    futs = sq.map(range(20))
    done, not_done = wait(futs, timeout=60)
    assert not not_done and len(done) == 20
    assert [f.get(timeout=1) for f in futs] == [x * x for x in range(20)]
    many = sq.map(range(300))  # more than one window of acknowledgements
    done, not_done = wait(many, timeout=120)
    assert not not_done and [f.get(0) for f in many] == [x * x for x in range(300)]
    from cloudburst.client.client import CloudburstFunction

    with pytest.raises(errors.FunctionNotFound, match="nb_ghost"):
        CloudburstFunction("nb_ghost", cloud).map([1, 2])
    add = cloud.register(lambda _, x, y: x + y, "nb_add")
    assert [f.get(timeout=30) for f in add.map([1, 2], [10, 20])] == [11, 22]

    slow = cloud.register(_sleepy, "nb_sleepy")
    late, early = slow(3.0), slow(0.05)
    done, not_done = wait([late, early], timeout=30, return_when=FIRST_COMPLETED)
    assert early in done and late in not_done
    order = list(as_completed([late, slow(0.5)], timeout=60))
    assert order[-1] is late and len(order) == 2

    # A timeout returns what is done, without raising.
    hanging = slow(4.0)
    done, not_done = wait([hanging], timeout=0.3)
    assert not done and not_done == {hanging}
    with pytest.raises(errors.CloudburstTimeoutError):
        list(as_completed([hanging], timeout=0.2))

    def boom(_: Any, x: int) -> int:
        raise KeyError(x)

    bad = cloud.register(boom, "nb_boom")
    other = slow(3.0)
    done, not_done = wait([other, bad(1)], timeout=30, return_when=FIRST_EXCEPTION)
    assert other in not_done and len(done) == 1
    (failed,) = done
    assert isinstance(failed.exception(timeout=1), errors.RemoteExecutionError)


def test_future_callbacks_cancel_repr(cloud: CloudburstConnection) -> None:
    slow = cloud.register(_sleepy, "nb_sleepy2")
    fut = slow(0.2)
    r = repr(fut)
    assert "nb_sleepy2" in r and fut.id in r and "pending" in r
    seen: list[Any] = []
    fut.add_done_callback(lambda f: seen.append(f.get(0)))
    assert fut.get(timeout=30) == 0.2
    assert seen == [0.2] and "done" in repr(fut)
    fut.add_done_callback(lambda f: seen.append("late"))  # already done: runs now
    assert seen == [0.2, "late"]
    assert fut.done() and not fut.cancel()

    # A callback fires while wait() receives, not only from get().
    fired: list[str] = []
    futs = slow.map([0.05, 0.05])
    for f in futs:
        f.add_done_callback(lambda f: fired.append(f.id))
    wait(futs, timeout=30)
    assert sorted(fired) == sorted(f.id for f in futs)

    long = slow(2.0)
    assert long.cancel() and long.cancelled() and long.done()
    assert "cancelled" in repr(long)
    with pytest.raises(errors.CallCancelled):
        long.get(timeout=1)
    # The connection keeps working, and the cancelled call's late result is ignored.
    assert slow(0.01).get(timeout=30) == 0.01
    time.sleep(2.5)
    assert slow(0.01).get(timeout=30) == 0.01
    with pytest.raises(errors.CallCancelled):
        long.get(timeout=1)


def test_progress_bar(cloud: CloudburstConnection) -> None:
    sq = cloud.register(lambda _, x: x * x, "nb_sq_progress")
    out = io.StringIO()
    futs = progress(sq.map(range(30)), timeout=60, file=out, desc="squares")
    assert all(f.done() for f in futs)
    assert [f.get(0) for f in futs] == [x * x for x in range(30)]
    text = out.getvalue()
    assert "squares" in text and "30/30" in text


def test_await_future_does_not_block_the_loop(cloud: CloudburstConnection) -> None:
    slow = cloud.register(_sleepy, "nb_sleepy_async")

    async def main() -> tuple[list[float], int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        t = asyncio.ensure_future(ticker())
        results = await asyncio.wait_for(
            asyncio.gather(slow(0.5), slow(0.6), slow(0.01)), timeout=60
        )
        t.cancel()
        return list(results), ticks

    results, ticks = asyncio.run(main())
    assert results == [0.5, 0.6, 0.01]
    assert ticks >= 10  # the loop kept running while the calls were awaited


def test_errors_a_person_can_read(cloud: CloudburstConnection) -> None:
    def lookup(_: Any, key: str) -> int:
        table = {"a": 1}
        return table[key]

    f = cloud.register(lookup, "nb_lookup")
    with pytest.raises(KeyError) as info:  # a plain `except KeyError` catches it
        f("zz").get(timeout=30)
    err = info.value
    assert isinstance(err, errors.RemoteExecutionError) and err.args == ("zz",)
    text = str(err)
    assert "return table[key]" in text and "lookup" in text
    # Internal frames are hidden and the traceback is there once (no __cause__ chain).
    assert "executor/worker.py" not in text and "executor/invoke.py" not in text
    assert "frame(s) hidden" in text and text.count("Traceback (most recent call last)") == 1
    assert err.__cause__ is None and isinstance(err.remote_exception, KeyError)

    class Custom(Exception):
        def __init__(self, a: int, b: int) -> None:  # not buildable from a message
            super().__init__(a, b)

    def custom(_: Any) -> None:
        raise Custom(1, 2)

    with pytest.raises(errors.RemoteExecutionError, match="Custom"):
        cloud.register(custom, "nb_custom")().get(timeout=30)

    # register() checks the function takes the user library.
    def no_lib(x: int) -> int:
        return x

    handle = cloud.register(no_lib, "nb_nolib")  # x may well be the user library...
    with pytest.raises(errors.InvalidArgument, match="forget the user-library parameter"):
        handle(3)  # ... but called with one argument it needs two: said at the call
    with pytest.raises(errors.InvalidArgument, match="user library"):
        cloud.register(lambda: 1, "nb_nolib2")

    class NoLibRun:
        def __init__(self, cb: Any) -> None:
            pass

        def run(self) -> int:
            return 1

    with pytest.raises(errors.InvalidArgument, match="NoLibRun.run"):
        cloud.register(NoLibRun, "nb_nolib3")
    cloud.register(lambda *args: len(args), "nb_varargs")  # *args takes it: fine

    # An unserializable result names the function and says it was the return value.
    def returns_lock(_: Any) -> Any:
        import threading

        return threading.Lock()

    with pytest.raises(errors.InvalidArgument) as info2:
        cloud.register(returns_lock, "nb_lock")().get(timeout=30)
    assert "return value of function 'nb_lock'" in str(info2.value)
    assert "lock" in str(info2.value)


def test_get_object_default(cloud: CloudburstConnection) -> None:
    missing = object()
    assert cloud.get_object("nb-never-written") is None  # unchanged default
    assert cloud.get_object("nb-never-written", default=missing) is missing
    cloud.put_object("nb-none", None)
    assert cloud.get_object("nb-none", default=missing) is None
    with pytest.raises(KeyError, match="nb-never-written"):
        cloud.get_object("nb-never-written", default=errors.KeyNotFound)


@pytest.fixture(scope="module")
def short_park(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A cluster whose executors park a call for its arguments only 2 s."""
    from tests.integration.conftest import start_cluster

    c = start_cluster(
        tmp_path_factory.mktemp("shortpark"), workers=2, scheduler={"call_timeout_s": 2.0}
    )
    try:
        yield c
    finally:
        c.group.stop_all()


def test_waiting_is_honest(short_park: Any) -> None:
    with short_park.connect() as cloud:
        slow = cloud.register(_sleepy, "nb_sleepy_honest")
        inc = cloud.register(lambda _, x: x + 1, "nb_inc_honest")
        # A future passed as an argument waits as long as its upstream runs (4 s: twice
        # the limit), not the executor's 2 s park limit.
        up = slow(4.0)
        down = inc(up)
        assert down.get(timeout=60) == 5.0
        assert up.get(timeout=1) == 4.0

        # ... but an upstream that fails fails it, saying which.
        def boom(_: Any) -> int:
            import time

            time.sleep(3)
            raise ValueError("upstream broke")

        bad = cloud.register(boom, "nb_boom_honest")()
        with pytest.raises(errors.CloudburstException, match="its argument.*upstream broke"):
            inc(bad).get(timeout=60)

        # Timeout messages say running (where, how long) or queued (behind what).
        # Four calls on two single-threaded workers: two run, two wait behind them.
        calls = slow.map([3.0] * 4)
        time.sleep(1.0)
        messages = []
        for fut in calls:
            with pytest.raises(errors.CloudburstTimeoutError) as info:
                fut.get(timeout=0.3)
            messages.append(str(info.value))
        running = [m for m in messages if "running on executor tcp://" in m]
        queued = [m for m in messages if "queued on executor" in m]
        assert running and queued, messages
        assert "behind the call running there" in queued[0]
        done, not_done = wait(calls, timeout=60)
        assert not not_done and [f.get(0) for f in calls] == [3.0] * 4


def test_output_comes_back(cluster: Any, capsys: pytest.CaptureFixture[str]) -> None:
    def chatty(_: Any, n: int) -> int:
        import logging
        import sys

        print(f"computing {n}")
        print("a warning", file=sys.stderr)
        logging.getLogger("mylib").warning("logged %d", n)
        return n * 2

    def loud_fail(_: Any, n: int) -> int:
        for i in range(n):
            print(f"step {i}")
        raise RuntimeError("gave up")

    with cluster.connect(show_output=True) as cloud:
        f = cloud.register(chatty, "nb_chatty")
        fut = f(21)
        # not here yet (unless the result came with the scheduler's acknowledgement)
        assert fut.logs() == "" or fut._finished()
        assert fut.get(timeout=30) == 42
        assert fut.logs() == "computing 21\na warning\nWARNING mylib: logged 21\n"
        assert "computing 21" in capsys.readouterr().out  # shown under the "cell"
        fut.get(timeout=1)
        assert capsys.readouterr().out == ""  # once
        quiet = cloud.register(lambda _, x: x, "nb_quiet")(1)
        assert quiet.get(timeout=30) == 1 and quiet.logs() == ""

        bad = cloud.register(loud_fail, "nb_loud_fail")
        with pytest.raises(RuntimeError) as info:
            bad(30).get(timeout=30)
        err = info.value
        assert isinstance(err, errors.RemoteExecutionError)
        assert err.output.count("step") == 30
        text = str(err)
        assert "last 20 of 30 lines" in text and "step 29" in text and "step 9\n" not in text
        assert capsys.readouterr().out == ""  # not printed again: the message has it

        # Bounded: the tail is kept and the cut is marked.
        big = cloud.register(lambda _, n: print("x" * n), "nb_big")(200_000)
        assert big.get(timeout=30) is None
        assert big.logs().startswith("[... ") and "earlier characters" in big.logs()
        assert len(big.logs()) < 70_000

        # In a DAG the sink's output comes back.
        cloud.register(chatty, "nb_chatty2")
        cloud.register_dag(
            "nb_chatty_dag", ["nb_quiet", "nb_chatty2"], [("nb_quiet", "nb_chatty2")]
        )
        d = cloud.call_dag("nb_chatty_dag", {"nb_quiet": 4})
        assert d.get(timeout=30) == 8 and "computing 4" in d.logs()
        capsys.readouterr()
    with cluster.connect() as cloud:  # not in Jupyter: not printed
        assert cloud.show_output is False
        cloud.get_function("nb_chatty")(1).get(timeout=30)
        assert capsys.readouterr().out == ""


def test_user_modules_ship_with_the_function(
    cloud: CloudburstConnection, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib
    import sys

    from cloudburst.client import client as client_mod

    # The user's own files next to the "notebook": a module, and a package whose
    # submodule imports another of the user's modules (found recursively).
    (tmp_path / "nb_mylib.py").write_text("def helper(x):\n    return x * 10\n")
    (tmp_path / "nb_mydeps.py").write_text("def offset():\n    return 5\n")
    pkg = tmp_path / "nb_mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "sub.py").write_text(
        "from nb_mydeps import offset\n\nclass Scaler:\n"
        "    def __init__(self, k):\n        self.k = k\n"
        "    def apply(self, x):\n        return x * self.k + offset()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("nb_mylib", "nb_mydeps", "nb_mypkg", "nb_mypkg.sub"):
        sys.modules.pop(name, None)
    nb_mylib = importlib.import_module("nb_mylib")
    sub = importlib.import_module("nb_mypkg.sub")
    helper, scaler = nb_mylib.helper, sub.Scaler(3)

    def use_helpers(_: Any, x: int) -> int:
        return helper(x) + scaler.apply(x)

    names = {m.__name__ for m in client_mod.user_modules(use_helpers)}
    assert {"nb_mylib", "nb_mypkg", "nb_mydeps"} <= names
    f = cloud.register(use_helpers, "nb_use_helpers")
    assert f(2).get(timeout=30) == 20 + 11  # the executors have no such files

    # A package the executors lack (here: one the client takes as installed) fails
    # at the first call, naming it and saying how to install it.
    (tmp_path / "nb_thirdparty.py").write_text("def tp(x):\n    return x\n")
    sys.modules.pop("nb_thirdparty", None)
    tp = importlib.import_module("nb_thirdparty").tp
    real = client_mod._is_installed
    monkeypatch.setattr(
        client_mod, "_is_installed", lambda m: m.__name__ == "nb_thirdparty" or real(m)
    )
    g = cloud.register(lambda _, x: tp(x), "nb_needs_thirdparty")
    with pytest.raises(errors.RemoteExecutionError) as info:
        g(1).get(timeout=30)
    msg = str(info.value)
    assert "needs the module 'nb_thirdparty'" in msg and "pip install" in msg
    assert "executor image" in msg
