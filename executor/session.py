"""The read/write set of one SINGLE or MULTI DAG call on an executor (docs/consistency.md).

:class:`CallSession` stands between a function of the call and the worker's state
client: the user library's ``get``/``put`` and ``CloudburstReference`` arguments go
through it while the function runs.

* First read of a key in the call: the node cache pins the version it hands out
  (``cache.pins``: ``pin.get``, or a KVS read then ``pin.put`` on a miss); the key's
  location (the cache's peer address) joins the read set that travels with the
  triggers. Without a node cache the version itself travels inline.
* A later read, in any function of the call, on any node, gets the pinned version:
  from this worker's memory, this node's cache, or (cache to cache) the node cache that
  pinned it.
* A write of the call replaces the pin (later functions read that write).
* MULTI: a causal lattice's dependencies raise the least version a first read of each
  key may see (``required``); a first read older than that is read again from the KVS.
  Writes of plain values onto a ``MultiKeyCausalLattice`` key become causal writes
  carrying the call's dependencies; :meth:`output_lattice` builds the sink's
  ``output_key`` write with the client's clock entry incremented.

Absent keys are not pinned (a key first read as absent may appear later in the call).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from cache.pins import LOST, MISS
from cloudburst.shared import serializer
from cloudburst.shared.errors import CloudburstException
from cloudburst.shared.proto import cloudburst_pb2 as pb
from lattices import codec
from lattices.base import Lattice
from lattices.causal import MultiKeyCausalLattice, SingleKeyCausalLattice
from lattices.lww import LWWPairLattice
from lattices.vector_clock import VectorClock

log = logging.getLogger(__name__)

_warned_lww = False  # the LWW-under-MULTI warning is logged once per process

#: How long a MULTI read waits for the KVS to hold a version its dependencies require.
REFRESH_TIMEOUT_S = 2.0


class ConsistencyError(CloudburstException):
    """A SINGLE/MULTI guarantee cannot be kept (a pinned version was lost)."""


def _clock(msg: pb.Clock) -> VectorClock:
    return VectorClock(dict(msg.entries))


def _merge_into(target: dict[str, VectorClock], key: str, clock: VectorClock) -> None:
    held = target.get(key)
    target[key] = clock if held is None else held.merge(clock)


def _payload(lattice: Lattice[Any]) -> tuple[int, bytes]:
    """``(lattice type, payload)``; a shared-memory value (a read-only view) is copied."""
    if isinstance(lattice, LWWPairLattice) and not isinstance(lattice.value, bytes):
        lattice = LWWPairLattice(lattice.timestamp, bytes(lattice.value))
    return codec.to_payload(lattice)


def _decode(ltype: int, payload: bytes) -> Lattice[Any] | None:
    return None if ltype == 0 else codec.from_payload(ltype, payload)


class CallSession:
    """One DAG call's session on this worker (see the module docstring).

    ``base``: the worker's state client (``get``/``put``); ``pins``: the node cache
    client (``pin_get``/``pin_put``/``pin_release``) or None; ``location``: that
    cache's peer address; ``fresh``: reads keys from the KVS itself (MULTI refresh).
    """

    def __init__(
        self,
        call: str,
        mode: int,
        base: Any,
        pins: Any = None,
        location: str = "",
        client_id: str = "",
        fresh: Callable[[list[str]], dict[str, Any]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.call = call
        self.mode = mode
        self.base = base
        self.pins = pins if location else None
        self.location = location if pins is not None else ""
        self.client_id = client_id or call
        self.fresh = fresh
        self._clock, self._sleep = clock, sleep
        self.values: dict[str, Lattice[Any]] = {}  # versions this worker holds for the call
        self.reads: dict[str, pb.SessionRead] = {}  # the read set that travels
        self.holders: set[str] = set()
        self.versions: dict[str, VectorClock] = {}
        self.required: dict[str, VectorClock] = {}
        self.causal_conflicts = 0
        self.branch_conflicts = 0

    # ---- travelling state -------------------------------------------------------------

    def absorb(self, sessions: Iterable[pb.CallSession]) -> None:
        """Merge upstream read sets (fan-in: the first upstream, in connection order,
        wins a key both read)."""
        for s in sessions:
            for r in s.reads:
                held = self.reads.get(r.key)
                if held is None:
                    self.reads[r.key] = r
                elif held.version and r.version and held.version != r.version:
                    # Parallel branches on different nodes pinned two versions: the
                    # first upstream's is kept (docs/consistency.md, limits).
                    self.branch_conflicts += 1
                    log.warning(
                        "[%s] branches of the call read two versions of %r (%s, %s); "
                        "the first upstream's is kept",
                        self.call,
                        r.key,
                        held.version,
                        r.version,
                    )
            self.holders.update(s.holders)
            for k, c in s.versions.items():
                _merge_into(self.versions, k, _clock(c))
            for k, c in s.required.items():
                _merge_into(self.required, k, _clock(c))

    def to_pb(self, out: pb.CallSession) -> None:
        out.Clear()
        out.reads.extend(self.reads.values())
        out.holders.extend(sorted(self.holders))
        for k, c in self.versions.items():
            out.versions[k].entries.update(c.reveal())
        for k, c in self.required.items():
            out.required[k].entries.update(c.reveal())

    def release(self) -> None:
        """The call is over (done or failed): drop its pins in every cache holding some."""
        if self.holders and self.pins is not None:
            self.pins.pin_release(self.call, sorted(self.holders))
            self.holders.clear()

    # ---- reads --------------------------------------------------------------------------

    def get(self, keys: str | Sequence[str]) -> dict[str, Lattice[Any] | None]:
        klist = [keys] if isinstance(keys, str) else list(keys)
        out: dict[str, Lattice[Any] | None] = {}
        need = []
        for k in dict.fromkeys(klist):
            if k in self.values:
                out[k] = self.values[k]
            elif k in self.reads and not self.reads[k].location:
                r = self.reads[k]  # carried inline (no node cache upstream)
                out[k] = self.values[k] = _decode(r.lattice_type, r.payload)  # type: ignore[assignment]
            else:
                need.append(k)
        if need:
            out.update(self._first_reads(need))
        return out

    def _first_reads(self, keys: list[str]) -> dict[str, Lattice[Any] | None]:
        got: dict[str, Lattice[Any] | None] = {}
        new: list[str] = []  # versions pinned by this read (not by an earlier one)
        answers = None
        if self.pins is not None:
            locations = [self.reads[k].location if k in self.reads else "" for k in keys]
            answers = self.pins.pin_get(self.call, keys, locations)
        if answers is None:  # no cache (or unreachable): this worker keeps them
            lost = [k for k in keys if k in self.reads]
            if lost:
                raise ConsistencyError(
                    f"call {self.call}: the version of {lost} pinned in "
                    f"{self.reads[lost[0]].location} cannot be read (its node cache is unreachable)"
                )
            got.update(self.base.get(keys))
            new = list(keys)
        else:
            miss = []
            for k, (status, ltype, payload) in zip(keys, answers, strict=True):
                if status == LOST:
                    raise ConsistencyError(
                        f"call {self.call}: the version of {k!r} this call read is no longer "
                        "pinned (the call outlived its pins, or a node cache restarted)"
                    )
                if status == MISS:
                    miss.append(k)
                else:
                    got[k] = _decode(ltype, bytes(payload))
                    if k not in self.reads:
                        new.append(k)
            if miss:
                for k, lattice in self.base.get(miss).items():
                    got[k] = self._pin(k, lattice, overwrite=False)
                    new.append(k)
        for k in keys:  # in order: a key's dependencies constrain the keys after it
            if self.mode == pb.MULTI and k in new:
                got[k] = self._causal_check(k, got[k])
            self._record(k, got[k], read=True)
        return got

    def _pin(self, key: str, lattice: Lattice[Any] | None, overwrite: bool) -> Lattice[Any] | None:
        """Pin ``lattice`` in the node cache; the version pinned for the call."""
        if lattice is None or self.pins is None:
            return lattice
        ltype, payload = _payload(lattice)
        pinned = self.pins.pin_put(self.call, key, ltype, payload, overwrite)
        if pinned is None:
            return lattice
        if not overwrite and pinned != (ltype, payload):
            return _decode(*pinned)  # another function of the call pinned one first
        return lattice

    def _record(self, key: str, lattice: Lattice[Any] | None, read: bool) -> None:
        if lattice is None:
            return  # absent keys are not pinned
        self.values[key] = lattice
        if self.location:
            self.holders.add(self.location)
            if key not in self.reads or not read:
                self.reads[key] = pb.SessionRead(
                    key=key, location=self.location, version=_version(lattice)
                )
        else:
            ltype, payload = _payload(lattice)
            self.reads[key] = pb.SessionRead(
                key=key, lattice_type=ltype, payload=payload, version=_version(lattice)
            )
        if self.mode == pb.MULTI and isinstance(
            lattice, MultiKeyCausalLattice | SingleKeyCausalLattice
        ):
            self.versions[key] = lattice.vector_clock
            if isinstance(lattice, MultiKeyCausalLattice):
                for dep, clock in lattice.dependencies.items():
                    if dep in self.values and dep in self.versions:
                        if not self.versions[dep].descends(clock):
                            # Read ``dep`` before a version depending on a newer one:
                            # repeatable read wins (docs/consistency.md, limits).
                            self.causal_conflicts += 1
                            log.warning(
                                "[%s] %r depends on a newer %r than the call read first",
                                self.call,
                                key,
                                dep,
                            )
                    _merge_into(self.required, dep, clock)

    def _causal_check(self, key: str, lattice: Lattice[Any] | None) -> Lattice[Any] | None:
        """MULTI: a first read of ``key`` must not be older than a version something the
        call read depends on; read the KVS again until it is (or fail)."""
        need = self.required.get(key)
        if need is None or _covers(lattice, need):
            return lattice
        deadline = self._clock() + REFRESH_TIMEOUT_S
        delay = 0.001
        while self.fresh is not None:
            lattice = self.fresh([key]).get(key)
            if _covers(lattice, need):
                return self._pin(key, lattice, overwrite=True)
            if self._clock() >= deadline:
                break
            self._sleep(delay)
            delay = min(delay * 2, 0.05)
        raise ConsistencyError(
            f"call {self.call}: {key!r} at version {need!r} (a dependency of what the call "
            f"read) did not appear within {REFRESH_TIMEOUT_S:g}s"
        )

    # ---- writes -------------------------------------------------------------------------

    def dependencies(self, but: str = "") -> dict[str, VectorClock]:
        deps = dict(self.required)
        for k, c in self.versions.items():
            _merge_into(deps, k, c)
        deps.pop(but, None)
        return deps

    def put(self, key: str, lattice: Lattice[Any]) -> Any:
        if self.mode == pb.MULTI:
            lattice = self._causal_write(key, lattice)
        ok = self.base.put(key, lattice)
        if ok is not False:
            self._record(key, self._pin(key, lattice, overwrite=True), read=False)
        return ok

    def _causal_write(self, key: str, lattice: Lattice[Any]) -> Lattice[Any]:
        if isinstance(lattice, MultiKeyCausalLattice):
            clock = lattice.vector_clock
            values: Iterable[bytes] = lattice.values
            deps = self.dependencies(but=key)
            for k, c in lattice.dependencies.items():
                _merge_into(deps, k, c)
            return MultiKeyCausalLattice(clock, deps, values)
        if not isinstance(lattice, LWWPairLattice):
            return lattice
        current = self.get([key]).get(key)
        if not isinstance(current, MultiKeyCausalLattice):
            global _warned_lww
            if not _warned_lww:
                _warned_lww = True
                log.warning(
                    "[%s] MULTI: %r is written as LWW (it holds no causal lattice): its "
                    "readers get no cross-key causality; store a MultiKeyCausalLattice "
                    "under it for that (docs/consistency.md; logged once)",
                    self.call,
                    key,
                )
            return lattice  # an LWW key stays LWW
        clock = current.vector_clock.increment(self.client_id)
        return MultiKeyCausalLattice(clock, self.dependencies(but=key), {bytes(lattice.value)})

    def output_lattice(
        self, key: str, result: Any, client_clock: Mapping[str, int] | None = None
    ) -> MultiKeyCausalLattice:
        """MULTI: the sink's ``output_key`` write: the call's dependencies, its clock the
        join of what the call read and the clock of the client's last output
        (``client_clock``, sent by the client), the client's entry incremented: a
        client's successive calls are ordered. The key's current clock joins in too, so
        a client that lost its clock (a new connection) is never dominated by its own
        earlier outputs."""
        clock = VectorClock(dict(client_clock or {}))
        current = self.base.get([key]).get(key)
        if isinstance(current, MultiKeyCausalLattice | SingleKeyCausalLattice):
            clock = clock.merge(current.vector_clock)
        for c in self.versions.values():
            clock = clock.merge(c)
        clock = clock.increment(self.client_id)
        return MultiKeyCausalLattice(
            clock, self.dependencies(but=key), {serializer.to_bytes(result)}
        )


def _version(lattice: Lattice[Any]) -> str:
    """A short name of a version, to compare what two branches read ("" = unknown)."""
    if isinstance(lattice, LWWPairLattice):
        return f"lww:{lattice.timestamp}"
    if isinstance(lattice, MultiKeyCausalLattice | SingleKeyCausalLattice):
        return "vc:" + ",".join(f"{n}={c}" for n, c in sorted(lattice.vector_clock.items()))
    return ""


def _covers(lattice: Lattice[Any] | None, need: VectorClock) -> bool:
    if not isinstance(lattice, MultiKeyCausalLattice | SingleKeyCausalLattice):
        return True  # not versioned: nothing to compare (LWW: no cross-key causality)
    return lattice.vector_clock.descends(need)


def causal_values(lattice: Any) -> list[Any]:
    """The values of a causal lattice, deserialized, in the deterministic order every
    function sees concurrent versions in: sorted by their serialized bytes."""
    return [serializer.from_bytes(v) for v in sorted(lattice.values)]
