"""Functions and DAGs, stored in the KVS so several schedulers share them.

KVS layout (every scheduler and executor agrees on it):

* ``funcs/<name>``          LWW: ``to_bytes(record)`` (executors load it), where the
                            record is a serialized ``Function`` (body and per-call
                            limits; :func:`encode_function`), a bare cloudpickled body
                            (written before limits existed), or ``b""`` once deleted
                            (a tombstone, ordered with re-registrations by timestamp);
* ``cloudburst/funcs``      SET: ``to_bytes(name)`` of every function ever registered
                            (a set only grows: deleted ones are filtered out by their
                            tombstones);
* ``dags/<name>``           LWW: ``to_bytes(serialized Dag)``, or ``to_bytes(b"")`` once
                            deleted (a tombstone: LWW keys cannot be removed);
* ``cloudburst/dags``       SET: ``to_bytes(name)`` of every DAG registered since the
                            index exists (``delete_function`` looks for users there);
* ``cloudburst/schedulers`` SET: ``to_bytes("tcp://ip:port")`` of every scheduler
                            (executors heartbeat to all of them).

The registry caches what it read; :meth:`Registry.refresh_dags` re-reads the cached
DAGs so a deletion made through another scheduler is seen within one refresh period.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from cloudburst.shared import serializer
from cloudburst.shared.proto import cloudburst_pb2 as pb
from lattices import Lattice, LWWPairLattice, SetLattice, make_timestamp

log = logging.getLogger(__name__)

FUNCS_INDEX = "cloudburst/funcs"
DAGS_INDEX = "cloudburst/dags"
SCHEDULERS_KEY = "cloudburst/schedulers"


def func_key(name: str) -> str:
    return f"funcs/{name}"


def dag_key(name: str) -> str:
    return f"dags/{name}"


@dataclass(frozen=True)
class FunctionRecord:
    """What ``funcs/<name>`` holds: the pickled body and the per-call limits
    (0 = the executor's config default)."""

    body: bytes
    timeout_s: float = 0.0
    memory_bytes: int = 0


def encode_function(record: FunctionRecord) -> bytes:
    msg = pb.Function(
        body=record.body, timeout_s=record.timeout_s, memory_bytes=record.memory_bytes
    )
    data: bytes = msg.SerializeToString()
    return data


def decode_function(data: bytes) -> FunctionRecord | None:
    """The record stored under ``funcs/<name>`` (the ``to_bytes`` payload), or
    ``None`` for a deletion tombstone."""
    if not data:
        return None
    if data[:1] == b"\x80":  # a bare pickle (protocol >= 2): stored before limits existed
        return FunctionRecord(data)
    msg = pb.Function()
    msg.ParseFromString(data)
    return FunctionRecord(msg.body, msg.timeout_s, msg.memory_bytes)


class Store(Protocol):
    def get(self, keys: list[str]) -> dict[str, Lattice[Any] | None]: ...

    def put(self, key: str, lattice: Lattice[Any]) -> Any: ...


class StoreError(Exception):
    """The KVS did not accept or answer a request."""


def _lww(data: bytes) -> LWWPairLattice:
    return LWWPairLattice(make_timestamp(), serializer.to_bytes(data))


def _lww_bytes(lattice: Lattice[Any] | None) -> bytes | None:
    if not isinstance(lattice, LWWPairLattice):
        return None
    value = serializer.from_bytes(lattice.value)
    return value if isinstance(value, bytes) else None


def _set_strings(lattice: Lattice[Any] | None) -> set[str]:
    if not isinstance(lattice, SetLattice):
        return set()
    out = set()
    for item in lattice.reveal():
        try:
            name = serializer.from_bytes(item)
        except Exception:  # not ours: ignore
            continue
        if isinstance(name, str):
            out.add(name)
    return out


class Registry:
    """Function and DAG registrations backed by a KVS store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.functions: set[str] = set()
        #: function -> registration version (the LWW timestamp of funcs/<name>)
        self.versions: dict[str, int] = {}
        self.dags: dict[str, pb.Dag] = {}

    def _get(self, keys: list[str]) -> dict[str, Lattice[Any] | None]:
        try:
            return self.store.get(keys)
        except Exception as exc:
            raise StoreError(f"the KVS did not answer a GET of {keys}: {exc}") from exc

    def _put(self, key: str, lattice: Lattice[Any]) -> None:
        try:
            ok = self.store.put(key, lattice)
        except Exception as exc:
            raise StoreError(f"the KVS did not answer a PUT of {key!r}: {exc}") from exc
        if ok is False:
            raise StoreError(f"the KVS refused a PUT of {key!r}")

    # --- functions ---------------------------------------------------------

    def register_function(
        self, name: str, body: bytes, timeout_s: float = 0.0, memory_bytes: int = 0
    ) -> int:
        """Store a function (replacing any earlier one); returns its version."""
        lattice = _lww(encode_function(FunctionRecord(body, timeout_s, memory_bytes)))
        self._put(func_key(name), lattice)
        self._put(FUNCS_INDEX, SetLattice([serializer.to_bytes(name)]))
        self.functions.add(name)
        self.versions[name] = lattice.timestamp
        return lattice.timestamp

    def delete_function(self, name: str) -> None:
        """Replace ``funcs/<name>`` by a tombstone (executors then report it missing)."""
        self._put(func_key(name), _lww(b""))
        self.functions.discard(name)
        self.versions.pop(name, None)

    def function_names(self) -> set[str]:
        """Every registered function (the shared index, minus deleted ones)."""
        names = sorted(_set_strings(self._get([FUNCS_INDEX]).get(FUNCS_INDEX)))
        got = self._get([func_key(n) for n in names]) if names else {}
        live = {n for n in names if _lww_bytes(got.get(func_key(n)))}
        self.functions = live | {n for n in self.functions if n not in names}
        return set(self.functions)

    def has_functions(self, names: list[str]) -> set[str]:
        """Which of ``names`` are registered (the cache first, then the KVS)."""
        found = {n for n in names if n in self.versions}
        missing = [n for n in names if n not in found]
        if missing:
            got = self._get([func_key(n) for n in missing])
            for n in missing:
                lattice = got.get(func_key(n))
                if _lww_bytes(lattice):
                    self.functions.add(n)
                    self.versions[n] = getattr(lattice, "timestamp", 0)
                    found.add(n)
        return found

    def refresh_functions(self) -> None:
        """Pick up functions re-registered through another scheduler (new versions)."""
        if self.versions:
            self.apply(read_snapshot(self.store, [], list(self.versions)))

    # --- DAGs --------------------------------------------------------------

    def get_dag(self, name: str) -> pb.Dag | None:
        dag = self.dags.get(name)
        if dag is not None:
            return dag
        dag = self._read_dag(name)
        if dag is not None:
            self.dags[name] = dag
        return dag

    def _read_dag(self, name: str) -> pb.Dag | None:
        data = _lww_bytes(self._get([dag_key(name)]).get(dag_key(name)))
        if not data:
            return None
        dag = pb.Dag()
        try:
            dag.ParseFromString(data)
        except Exception:
            log.error("stored DAG %r is corrupt; treating it as absent", name)
            return None
        return dag

    def dag_exists(self, name: str) -> bool:
        """Whether ``name`` is registered (always asks the KVS: another scheduler may
        have registered it)."""
        dag = self._read_dag(name)
        if dag is None:
            self.dags.pop(name, None)
            return False
        self.dags[name] = dag
        return True

    def register_dag(self, dag: pb.Dag) -> None:
        self._put(dag_key(dag.name), _lww(dag.SerializeToString()))
        self._put(DAGS_INDEX, SetLattice([serializer.to_bytes(dag.name)]))
        self.dags[dag.name] = dag

    def dags_using(self, function: str) -> list[str]:
        """Registered DAGs (in the index, or cached here) that name ``function``."""
        names = _set_strings(self._get([DAGS_INDEX]).get(DAGS_INDEX)) | set(self.dags)
        if not names:
            return []
        got = self._get([dag_key(n) for n in sorted(names)])
        users = []
        for n in sorted(names):
            data = _lww_bytes(got.get(dag_key(n)))
            if not data:
                continue
            dag = pb.Dag()
            try:
                dag.ParseFromString(data)
            except Exception:
                continue
            if function in dag.functions:
                users.append(n)
        return users

    def delete_dag(self, name: str) -> None:
        self._put(dag_key(name), _lww(b""))
        self.dags.pop(name, None)

    def refresh_dags(self) -> None:
        """Drop cached DAGs deleted or replaced through another scheduler."""
        if self.dags:
            self.apply(read_snapshot(self.store, list(self.dags), []))

    def apply(self, snap: Snapshot) -> None:
        """Apply what :func:`read_snapshot` read (possibly in another thread) to the
        cached DAGs and function versions still cached."""
        for n, data in snap.dags.items():
            cached = self.dags.get(n)
            if cached is None:
                continue
            if not data:
                self.dags.pop(n, None)
            elif data != cached.SerializeToString():
                dag = pb.Dag()
                try:
                    dag.ParseFromString(data)
                except Exception:
                    self.dags.pop(n, None)
                    continue
                self.dags[n] = dag
        for n, version in snap.versions.items():
            if n in self.versions:
                self.versions[n] = max(self.versions[n], version)
        for n in snap.deleted:
            # Deleted through another scheduler (the tombstone is newer than what we
            # cached); a later re-registration shows up again through has_functions.
            if n in self.versions and snap.deleted[n] >= self.versions[n]:
                self.versions.pop(n)
                self.functions.discard(n)

    # --- schedulers --------------------------------------------------------

    def announce_scheduler(self, address: str) -> None:
        self._put(SCHEDULERS_KEY, SetLattice([serializer.to_bytes(address)]))


@dataclass(frozen=True)
class Snapshot:
    """What the KVS holds for some cached DAGs and functions."""

    dags: dict[str, bytes]  # name -> serialized Dag, b"" when deleted or absent
    versions: dict[str, int]  # function -> registration version
    deleted: dict[str, int] = field(default_factory=dict)  # function -> tombstone version


def read_snapshot(store: Store, dag_names: list[str], function_names: list[str]) -> Snapshot:
    """One KVS GET of the given DAGs and functions (for :meth:`Registry.apply`)."""
    keys = [dag_key(n) for n in dag_names] + [func_key(n) for n in function_names]
    if not keys:
        return Snapshot({}, {}, {})
    try:
        got = store.get(keys)
    except Exception as exc:
        raise StoreError(f"the KVS did not answer a GET of {len(keys)} keys: {exc}") from exc
    dags = {n: _lww_bytes(got.get(dag_key(n))) or b"" for n in dag_names}
    versions = {}
    deleted = {}
    for n in function_names:
        lattice = got.get(func_key(n))
        if lattice is None:
            continue
        stamp = int(getattr(lattice, "timestamp", 0))
        if _lww_bytes(lattice):
            versions[n] = stamp
        else:
            deleted[n] = stamp
    return Snapshot(dags, versions, deleted)


def scheduler_addresses(store: Store) -> set[str]:
    """Every scheduler that announced itself in the KVS."""
    return _set_strings(store.get([SCHEDULERS_KEY]).get(SCHEDULERS_KEY))
