"""Registry over a dict-backed fake store (merge semantics as the KVS's)."""

from __future__ import annotations

from typing import Any

import pytest

from cloudburst.shared.proto import cloudburst_pb2 as pb
from lattices import Lattice
from scheduler.logic import build_dag
from scheduler.registry import Registry, StoreError, scheduler_addresses


class FakeStore:
    def __init__(self) -> None:
        self.data: dict[str, Lattice[Any]] = {}
        self.fail = False

    def get(self, keys: list[str]) -> dict[str, Lattice[Any] | None]:
        if self.fail:
            raise TimeoutError("down")
        return {k: self.data.get(k) for k in keys}

    def put(self, key: str, lattice: Lattice[Any]) -> bool:
        if self.fail:
            raise TimeoutError("down")
        old = self.data.get(key)
        self.data[key] = lattice if old is None else old.merge(lattice)
        return True


def test_functions_are_shared_between_registries() -> None:
    store = FakeStore()
    a, b = Registry(store), Registry(store)
    a.register_function("f", b"body")
    a.register_function("g", b"body")
    assert b.function_names() == {"f", "g"}
    assert b.has_functions(["f", "nope"]) == {"f"}


def test_dag_register_delete_and_refresh_across_schedulers() -> None:
    store = FakeStore()
    a, b = Registry(store), Registry(store)
    dag = build_dag("d", ["f"], [])
    a.register_dag(dag)
    assert b.dag_exists("d")
    assert b.get_dag("d") == dag
    a.delete_dag("d")
    assert not a.dag_exists("d")
    assert b.get_dag("d") is not None  # cached until refreshed
    b.refresh_dags()
    assert b.get_dag("d") is None
    a.register_dag(build_dag("d", ["f", "g"], [("f", "g")]))
    assert list(b.get_dag("d").functions) == ["f", "g"]  # type: ignore[union-attr]


def test_store_failure_is_a_store_error() -> None:
    store = FakeStore()
    store.fail = True
    with pytest.raises(StoreError, match="did not answer"):
        Registry(store).register_function("f", b"x")


def test_schedulers_announce_themselves() -> None:
    store = FakeStore()
    Registry(store).announce_scheduler("tcp://a:1")
    Registry(store).announce_scheduler("tcp://b:2")
    assert scheduler_addresses(store) == {"tcp://a:1", "tcp://b:2"}


def test_corrupt_dag_is_absent() -> None:
    from cloudburst.shared import serializer
    from lattices import LWWPairLattice

    store = FakeStore()
    store.data["dags/x"] = LWWPairLattice(1, serializer.to_bytes(b"\xff\xff garbage"))
    assert Registry(store).get_dag("x") is None
    assert isinstance(pb.Dag(), pb.Dag)


def test_function_records_carry_limits_and_deletion() -> None:
    from scheduler.registry import FunctionRecord, decode_function, encode_function, func_key

    store = FakeStore()
    a, b = Registry(store), Registry(store)
    a.register_function("f", b"\x80body", timeout_s=2.5, memory_bytes=1 << 20)
    a.register_function("g", b"\x80body")
    payload = store.data[func_key("f")].reveal()
    from cloudburst.shared import serializer

    assert decode_function(serializer.from_bytes(payload)) == FunctionRecord(
        b"\x80body", 2.5, 1 << 20
    )
    assert decode_function(encode_function(FunctionRecord(b"x"))) == FunctionRecord(b"x")
    assert b.has_functions(["f", "g"]) == {"f", "g"}
    a.delete_function("f")
    assert a.has_functions(["f"]) == set()
    assert a.function_names() == {"g"} and b.function_names() == {"g"}
    # b cached f: its refresh sees the tombstone and forgets it.
    assert "f" in b.has_functions(["f"])
    b.refresh_functions()
    assert b.has_functions(["f"]) == set()
    # Registering the name again brings it back everywhere.
    a.register_function("f", b"\x80v2")
    assert b.has_functions(["f"]) == {"f"} and "f" in b.function_names()


def test_dags_using_a_function() -> None:
    store = FakeStore()
    a, b = Registry(store), Registry(store)
    a.register_dag(build_dag("d1", ["f", "g"], [("f", "g")]))
    a.register_dag(build_dag("d2", ["g"], []))
    assert b.dags_using("f") == ["d1"]
    assert b.dags_using("g") == ["d1", "d2"]
    a.delete_dag("d1")
    assert b.dags_using("f") == []
