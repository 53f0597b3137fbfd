"""Session pins of SINGLE/MULTI DAG calls: pure logic, no sockets, no clock.

A DAG call run with ``consistency=SINGLE`` or ``MULTI`` pins, in the node cache where
it is read, the version of every key it reads the first time, for the life of the
call (docs/consistency.md). :class:`PinTable` holds those pins and answers:

* ``pin.get`` (an executor of this node): for each key, the pinned version if this
  call pinned one here; else, if the call pinned it in another node's cache (the
  executor passes that cache's peer address, learnt from the trigger), a cache-to-cache
  ``pin.fetch`` (the reply is parked until ``pin.data`` comes back, or ``fetch_timeout``
  passes: ``LOST``); else the cache's current entry, pinned now (``NEW``); else
  ``MISS`` (the executor reads the KVS and pins what it read with ``pin.put``).
* ``pin.put``: pin a version (first one wins unless ``overwrite``: a write of the call);
  the answer is the pinned version.
* ``pin.release``: the call ended or failed: drop its pins here and tell the other
  caches holding some (``holders``).

Calls are also dropped ``ttl`` seconds after their first pin (a call whose end was
never reported), and when a worker that pinned for them dies (:meth:`drop_owner`).

An absent key is pinned too (lattice type 0, empty payload): it stays absent for the
call.

Executor socket framing (after ``op, rid``; ``pack`` = ``cache.protocol`` strings):

=================  ======================================  ==============================
request            frames                                  reply frames
=================  ======================================  ==============================
``pin.get``        ``call, pack(keys), pack(locations)``   ``ok, (status, ltype)*n, payload*n``
``pin.put``        ``call, key, [ltype, overwrite], payload``  ``ok, [ltype], payload``
``pin.release``    ``call, pack(holders)``                 (none)
=================  ======================================  ==============================

Peer socket (``[op, *frames]``): ``pin.fetch call key reply_to token``,
``pin.data token [found, ltype] payload``, ``pin.release call``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cache import protocol
from cache.actions import Action, Reply, SendPeer
from cloudburst.shared.errors import WireError

OP_PIN_GET = b"pin.get"
OP_PIN_PUT = b"pin.put"
OP_PIN_RELEASE = b"pin.release"
OP_PIN_FETCH = b"pin.fetch"
OP_PIN_DATA = b"pin.data"
PIN_PREFIX = b"pin."

#: ``pin.get`` answer per key.
OLD = 0  # pinned by this call before (here, or fetched from the cache that pinned it)
NEW = 1  # the cache's current entry, pinned just now
MISS = 2  # not held: read the KVS, then pin.put
LOST = 3  # the call's pin is gone (released, expired, its cache restarted)

#: Bookkeeping counted per pin besides key and payload.
PIN_OVERHEAD = 64

Lookup = Callable[[str], tuple[int, bytes] | None]


@dataclass
class _Call:
    created: float
    pins: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    owners: set[bytes] = field(default_factory=set)


@dataclass
class _Parked:
    """A ``pin.get`` waiting for remote pins."""

    identity: bytes
    rid: bytes
    call: str
    results: list[tuple[int, int, bytes]]
    remaining: int


@dataclass
class _Fetch:
    parked: _Parked
    index: int
    key: str
    deadline: float


def _size(key: str, payload: bytes) -> int:
    return len(key) + len(payload) + PIN_OVERHEAD


class PinTable:
    """The pins of one node cache (see the module docstring)."""

    def __init__(self, my_address: str, ttl: float = 60.0, fetch_timeout: float = 5.0) -> None:
        self.my_address = my_address
        self.ttl = ttl
        self.fetch_timeout = fetch_timeout
        self.calls: dict[str, _Call] = {}
        self.bytes = 0
        self.fetches: dict[bytes, _Fetch] = {}
        self._seq = 0
        self.counters = {"pins": 0, "pin_fetches": 0, "pins_lost": 0, "pin_calls_expired": 0}

    def stats(self) -> dict[str, int]:
        return {
            "pinned_bytes": self.bytes,
            "pinned_calls": len(self.calls),
            "pinned_keys": sum(len(c.pins) for c in self.calls.values()),
            "pin_fetches_inflight": len(self.fetches),
            **self.counters,
        }

    def owners(self) -> set[bytes]:
        return {o for c in self.calls.values() for o in c.owners}

    # ---- the pin table ------------------------------------------------------------------

    def _pin(
        self, call: str, key: str, value: tuple[int, bytes], now: float, owner: bytes | None
    ) -> tuple[int, bytes]:
        """Pin ``value`` unless the call has one already; returns the pinned value."""
        entry = self.calls.get(call)
        if entry is None:
            entry = self.calls[call] = _Call(now)
        if owner is not None:
            entry.owners.add(owner)
        held = entry.pins.get(key)
        if held is not None:
            return held
        entry.pins[key] = value
        self.bytes += _size(key, value[1])
        self.counters["pins"] += 1
        return value

    def _replace(
        self, call: str, key: str, value: tuple[int, bytes], now: float, owner: bytes
    ) -> None:
        entry = self.calls.get(call)
        old = entry.pins.get(key) if entry is not None else None
        if entry is not None and old is not None:
            self.bytes -= _size(key, old[1])
            del entry.pins[key]
        self._pin(call, key, value, now, owner)

    def lookup(self, call: str, key: str) -> tuple[int, bytes] | None:
        entry = self.calls.get(call)
        return None if entry is None else entry.pins.get(key)

    def release(self, call: str) -> None:
        entry = self.calls.pop(call, None)
        if entry is not None:
            self.bytes -= sum(_size(k, v[1]) for k, v in entry.pins.items())

    def drop_owner(self, owner: bytes) -> None:
        """A worker that pinned for these calls died: the calls fail, their pins go."""
        for call in [c for c, e in self.calls.items() if owner in e.owners]:
            self.release(call)

    # ---- executor ops -------------------------------------------------------------------

    def handle(
        self, identity: bytes, op: bytes, frames: Sequence[bytes], lookup: Lookup, now: float
    ) -> list[Action]:
        """An executor's ``pin.*`` request (``frames`` after the op, from ``rid`` on)."""
        rid = bytes(frames[0]) if frames else b""
        try:
            if op == OP_PIN_GET:
                return self._get(identity, rid, frames[1:], lookup, now)
            if op == OP_PIN_PUT:
                return self._put(identity, rid, frames[1:], now)
            if op == OP_PIN_RELEASE:
                return self._release(frames[1:])
        except (WireError, IndexError, UnicodeDecodeError) as exc:
            return [Reply(identity, protocol.reply_error(op, rid, f"bad {op.decode()}: {exc}"))]
        return [Reply(identity, protocol.reply_error(op, rid, f"unknown op {op[:32]!r}"))]

    def _get(
        self, identity: bytes, rid: bytes, frames: Sequence[bytes], lookup: Lookup, now: float
    ) -> list[Action]:
        if len(frames) != 3:
            raise WireError(f"expected call, keys, locations; got {len(frames)} frames")
        call = bytes(frames[0]).decode()
        keys = [k.decode() for k in protocol._unpack_strings(frames[1], "pin.get keys")]
        locations = [a.decode() for a in protocol._unpack_strings(frames[2], "pin.get locations")]
        if not keys or len(keys) != len(locations):
            raise WireError(f"{len(keys)} keys but {len(locations)} locations")
        results: list[tuple[int, int, bytes]] = []
        parked = _Parked(identity, rid, call, results, 0)
        actions: list[Action] = []
        for i, (key, location) in enumerate(zip(keys, locations, strict=True)):
            held = self.lookup(call, key)
            if held is not None:
                self._pin(call, key, held, now, identity)  # records the owner
                results.append((OLD, held[0], held[1]))
            elif location and location != self.my_address:
                results.append((LOST, 0, b""))
                parked.remaining += 1
                self._seq += 1
                token = f"{self._seq}".encode()
                self.fetches[token] = _Fetch(parked, i, key, now + self.fetch_timeout)
                self.counters["pin_fetches"] += 1
                actions.append(
                    SendPeer(
                        location,
                        [
                            OP_PIN_FETCH,
                            call.encode(),
                            key.encode(),
                            self.my_address.encode(),
                            token,
                        ],
                    )
                )
            elif location:  # pinned here once, gone now
                self.counters["pins_lost"] += 1
                results.append((LOST, 0, b""))
            else:
                current = lookup(key)
                if current is None:
                    results.append((MISS, 0, b""))
                else:
                    ltype, payload = self._pin(call, key, current, now, identity)
                    results.append((NEW, ltype, payload))
        if parked.remaining == 0:
            actions.append(self._reply(parked))
        return actions

    @staticmethod
    def _reply(parked: _Parked) -> Reply:
        meta = b"".join(bytes([s, t]) for s, t, _ in parked.results)
        payloads = [p for _, _, p in parked.results]
        return Reply(parked.identity, [OP_PIN_GET, parked.rid, protocol.OK, meta, *payloads])

    def _put(
        self, identity: bytes, rid: bytes, frames: Sequence[bytes], now: float
    ) -> list[Action]:
        if len(frames) != 4 or len(frames[2]) != 2:
            raise WireError("expected call, key, [ltype, overwrite], payload")
        call, key = bytes(frames[0]).decode(), bytes(frames[1]).decode()
        ltype, overwrite = frames[2][0], frames[2][1]
        value = (ltype, bytes(frames[3]))
        if overwrite:
            self._replace(call, key, value, now, identity)
        else:
            value = self._pin(call, key, value, now, identity)
        return [Reply(identity, [OP_PIN_PUT, rid, protocol.OK, bytes([value[0]]), value[1]])]

    def _release(self, frames: Sequence[bytes]) -> list[Action]:
        if len(frames) != 2:
            raise WireError("expected call, holders")
        call = bytes(frames[0]).decode()
        self.release(call)
        out: list[Action] = []
        for holder in protocol._unpack_strings(frames[1], "pin.release holders"):
            address = holder.decode()
            if address and address != self.my_address:
                out.append(SendPeer(address, [OP_PIN_RELEASE, call.encode()]))
        return out

    # ---- peer ops -----------------------------------------------------------------------

    def peer(self, frames: Sequence[bytes], now: float) -> list[Action]:
        """Another cache's ``pin.*`` message (``frames[0]`` is the op). Malformed: dropped."""
        try:
            op = bytes(frames[0])
            if op == OP_PIN_FETCH and len(frames) == 5:
                call, key = bytes(frames[1]).decode(), bytes(frames[2]).decode()
                held = self.lookup(call, key)
                found, ltype, payload = (0, 0, b"") if held is None else (1, *held)
                reply = [OP_PIN_DATA, bytes(frames[4]), bytes([found, ltype]), payload]
                return [SendPeer(bytes(frames[3]).decode(), reply)]
            if op == OP_PIN_DATA and len(frames) == 4 and len(frames[2]) == 2:
                fetch = self.fetches.pop(bytes(frames[1]), None)
                if fetch is None:
                    return []  # timed out already
                found, ltype = frames[2][0], frames[2][1]
                if found:
                    # Pinned here too: later readers on this node need no second fetch.
                    value = self._pin(
                        fetch.parked.call, fetch.key, (ltype, bytes(frames[3])), now, None
                    )
                    fetch.parked.results[fetch.index] = (OLD, *value)
                else:
                    self.counters["pins_lost"] += 1
                return self._fetched(fetch.parked)
            if op == OP_PIN_RELEASE and len(frames) == 2:
                self.release(bytes(frames[1]).decode())
        except UnicodeDecodeError:
            pass
        return []

    def _fetched(self, parked: _Parked) -> list[Action]:
        parked.remaining -= 1
        return [self._reply(parked)] if parked.remaining == 0 else []

    def tick(self, now: float) -> list[Action]:
        """Fail remote fetches past their deadline (LOST); drop calls past the ttl."""
        out: list[Action] = []
        for token in [t for t, f in self.fetches.items() if now >= f.deadline]:
            fetch = self.fetches.pop(token)
            self.counters["pins_lost"] += 1
            out += self._fetched(fetch.parked)
        for call in [c for c, e in self.calls.items() if now - e.created > self.ttl]:
            self.counters["pin_calls_expired"] += 1
            self.release(call)
        return out


# ---- the executor side of the framing (pure) ---------------------------------------------


def encode_pin_get(
    rid: bytes, call: str, keys: Sequence[str], locations: Sequence[str]
) -> list[bytes]:
    return [
        OP_PIN_GET,
        rid,
        call.encode(),
        protocol._pack_strings([k.encode() for k in keys]),
        protocol._pack_strings([a.encode() for a in locations]),
    ]


def decode_pin_get_body(body: Sequence[bytes], nkeys: int) -> list[tuple[int, int, bytes]]:
    """``(status, lattice_type, payload)`` per key of a ``pin.get`` reply."""
    if len(body) != 1 + nkeys or len(body[0]) != 2 * nkeys:
        raise WireError("pin.get reply: bad frames")
    meta = bytes(body[0])
    return [(meta[2 * i], meta[2 * i + 1], body[1 + i]) for i in range(nkeys)]


def encode_pin_put(
    rid: bytes, call: str, key: str, ltype: int, payload: bytes, overwrite: bool
) -> list[bytes]:
    return [OP_PIN_PUT, rid, call.encode(), key.encode(), bytes([ltype, int(overwrite)]), payload]


def encode_pin_release(rid: bytes, call: str, holders: Sequence[str]) -> list[bytes]:
    return [
        OP_PIN_RELEASE,
        rid,
        call.encode(),
        protocol._pack_strings([h.encode() for h in holders]),
    ]
