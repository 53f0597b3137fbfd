"""Loading, argument resolution and invocation of user functions (no processes)."""

from __future__ import annotations

from typing import Any

import cloudpickle
import numpy as np
import pytest

from cloudburst.shared.errors import CloudburstTimeoutError, InvalidArgument
from cloudburst.shared.reference import CloudburstReference
from cloudburst.shared.values import to_lattice
from cloudburst.shared.wire import PendingReference
from executor.invoke import FunctionLoadError, invoke, load_function, resolve_args


class Counter:
    def __init__(self, lib: Any, start: int) -> None:
        self.n = start

    def run(self, lib: Any, k: int) -> int:
        self.n += k
        return self.n


class Store:
    def __init__(self, data: dict[str, Any] | None = None, appear_after: int = 0) -> None:
        self.data = {k: to_lattice(v) for k, v in (data or {}).items()}
        self.calls = 0
        self.appear_after = appear_after
        self.late: dict[str, Any] = {}

    def get(self, keys: list[str]) -> dict[str, Any]:
        self.calls += 1
        if self.calls > self.appear_after:
            self.data.update(self.late)
        return {k: self.data.get(k) for k in keys}


def test_function_and_class_loading() -> None:
    fn = load_function("f", cloudpickle.dumps(lambda lib, x: (lib, x * 2)), user_lib="LIB")
    assert invoke(fn, "LIB", [3]) == ("LIB", 6)
    obj = load_function("c", cloudpickle.dumps((Counter, (10,))), user_lib=None)
    assert invoke(obj, None, [1]) == 11
    assert invoke(obj, None, [1]) == 12  # state persists in the instance


def test_bad_bodies_raise_a_load_error() -> None:
    with pytest.raises(FunctionLoadError):
        load_function("f", b"not a pickle", None)
    with pytest.raises(FunctionLoadError, match="not a function"):
        load_function("f", cloudpickle.dumps(42), None)


def test_references_are_resolved_and_plain_values_kept() -> None:
    arr = np.arange(5)
    store = Store({"k": arr, "s": {1, 2}})
    out = resolve_args([1, CloudburstReference("k"), CloudburstReference("s")], store, 1.0)
    assert out[0] == 1 and np.array_equal(out[1], arr) and out[2] == {1, 2}
    raw = resolve_args([CloudburstReference("k", deserialize=False)], store, 1.0)
    assert raw[0] is store.data["k"]


def test_missing_plain_reference_is_an_error() -> None:
    with pytest.raises(InvalidArgument, match="missing"):
        resolve_args([CloudburstReference("missing")], Store(), 1.0)


def test_pending_reference_waits_until_the_key_appears() -> None:
    store = Store(appear_after=3)
    store.late = {"r": to_lattice(7)}
    sleeps: list[float] = []
    out = resolve_args([PendingReference("r")], store, 5.0, sleep=sleeps.append)
    assert out == [7] and len(sleeps) == 3


def test_pending_reference_times_out() -> None:
    t = [0.0]

    def clock() -> float:
        return t[0]

    def sleep(d: float) -> None:
        t[0] += d

    with pytest.raises(CloudburstTimeoutError, match="did not appear"):
        resolve_args([PendingReference("never")], Store(), 0.5, sleep=sleep, clock=clock)
