"""cache/pins.py: the pin table of SINGLE/MULTI calls (pure logic, no sockets)."""

from __future__ import annotations

from cache import pins, protocol
from cache.actions import Reply, SendPeer

ME, OTHER = "tcp://127.0.0.1:1", "tcp://127.0.0.2:2"


def _get(t: pins.PinTable, call: str, keys: list[str], locs: list[str], held: dict, now=0.0):
    frames = pins.encode_pin_get(b"r", call, keys, locs)
    return t.handle(b"w1", frames[0], frames[1:], held.get, now)


def _answers(acts, n):
    (reply,) = [a for a in acts if isinstance(a, Reply)]
    _, _, body = protocol.decode_reply(reply.frames)
    return pins.decode_pin_get_body(body, n)


def test_first_read_pins_the_cached_version_and_later_reads_keep_it() -> None:
    t = pins.PinTable(ME)
    held = {"k": (1, b"v1")}
    assert _answers(_get(t, "c", ["k", "x"], ["", ""], held), 2) == [
        (pins.NEW, 1, b"v1"),
        (pins.MISS, 0, b""),
    ]
    held["k"] = (1, b"v2")  # the cache got a newer version
    assert _answers(_get(t, "c", ["k"], [""], held), 1) == [(pins.OLD, 1, b"v1")]
    assert _answers(_get(t, "other", ["k"], [""], held), 1) == [(pins.NEW, 1, b"v2")]
    assert t.stats()["pinned_bytes"] > 0
    t.handle(
        b"w1",
        *[pins.encode_pin_release(b"r", "c", [ME])[0]],
        pins.encode_pin_release(b"r", "c", [ME])[1:],
        held.get,
        0.0,
    )
    t.release("other")
    assert t.stats()["pinned_bytes"] == 0 and t.stats()["pinned_calls"] == 0


def test_put_first_wins_unless_overwrite() -> None:
    t = pins.PinTable(ME)
    for payload, overwrite, want in ((b"a", 0, b"a"), (b"b", 0, b"a"), (b"c", 1, b"c")):
        f = pins.encode_pin_put(b"r", "c", "k", 1, payload, bool(overwrite))
        (reply,) = t.handle(b"w", f[0], f[1:], {}.get, 0.0)
        assert reply.frames[3:] == [b"\x01", want]
    t.release("c")
    assert t.bytes == 0


def test_remote_pin_is_fetched_cache_to_cache() -> None:
    mine, theirs = pins.PinTable(ME), pins.PinTable(OTHER)
    f = pins.encode_pin_put(b"r", "c", "k", 1, b"old", False)
    theirs.handle(b"w", f[0], f[1:], {}.get, 0.0)
    acts = _get(mine, "c", ["k"], [OTHER], {"k": (1, b"new")})
    (fetch,) = acts
    assert isinstance(fetch, SendPeer) and fetch.address == OTHER
    (data,) = theirs.peer(fetch.frames, 0.0)
    assert isinstance(data, SendPeer) and data.address == ME
    assert _answers(mine.peer(data.frames, 0.0), 1) == [(pins.OLD, 1, b"old")]
    # Pinned here too; releasing tells the other holder.
    (rel,) = mine.handle(
        b"w", pins.OP_PIN_RELEASE, pins.encode_pin_release(b"r", "c", [ME, OTHER])[1:], {}.get, 0.0
    )
    assert rel.address == OTHER and mine.bytes == 0
    theirs.peer(rel.frames, 0.0)
    assert theirs.bytes == 0


def test_lost_pins_and_timeouts_answer_lost() -> None:
    t = pins.PinTable(ME, ttl=10.0, fetch_timeout=1.0)
    assert _answers(_get(t, "c", ["k"], [ME], {"k": (1, b"v")}), 1)[0][0] == pins.LOST
    acts = _get(t, "c", ["k"], [OTHER], {})
    assert not [a for a in acts if isinstance(a, Reply)]
    assert _answers(t.tick(2.0), 1)[0][0] == pins.LOST
    _get(t, "d", ["k"], [""], {"k": (1, b"v")}, now=0.0)
    t.tick(11.0)  # a call whose end never came
    assert t.bytes == 0 and t.counters["pin_calls_expired"] == 1


def test_dead_owner_drops_its_calls() -> None:
    t = pins.PinTable(ME)
    _get(t, "c", ["k"], [""], {"k": (1, b"v")})
    assert t.owners() == {b"w1"}
    t.drop_owner(b"w1")
    assert t.bytes == 0


def test_malformed_requests_get_an_error_reply() -> None:
    t = pins.PinTable(ME)
    (reply,) = t.handle(b"w", pins.OP_PIN_GET, [b"r", b"c"], {}.get, 0.0)
    assert reply.frames[2] == protocol.ERROR
    assert t.peer([pins.OP_PIN_DATA, b"nope"], 0.0) == []
