"""Shared-memory segments of the node cache: pure bookkeeping (SegmentBook, offsets),
CacheState with an in-memory fake store, and the real files (ShmStore, map_segment)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from anna.proto import anna_pb2 as pb
from cache import protocol
from cache.actions import Reply
from cache.logic import CacheState
from cache.shm import (
    ALIGN,
    SegmentBook,
    ShmStore,
    array_data_offset,
    map_segment,
    owner_pid,
    pad_for,
)
from cloudburst.shared import serializer
from cloudburst.shared.values import from_lattice, to_lattice
from lattices import LWWPairLattice, codec
from tests.cache.test_logic import ADDR_RESP, RESP, ROUTING, route, sent, shard_answer

# ---- SegmentBook ---------------------------------------------------------------------------


def test_book_unpinned_retire_unlinks_at_once() -> None:
    b = SegmentBook()
    b.add("a", 10)
    assert b.total_bytes == 10 and b.retired_bytes == 0
    assert b.retire("a") == ["a"]
    assert b.total_bytes == 0 and b.sizes == {}
    assert b.retire("a") == []  # twice: nothing


def test_book_pins_keep_retired_segment_until_last_release() -> None:
    b = SegmentBook()
    b.add("a", 10)
    b.pin("a", b"w1")
    b.pin("a", b"w2")
    b.pin("a", b"w2")
    assert b.pinned("a") == 3
    assert b.retire("a") == []
    assert b.retired_bytes == 10 and b.total_bytes == 10
    assert b.release(b"w2", ["a"]) == []
    assert b.release(b"w1", ["a"]) == []
    assert b.release(b"w1", ["a"]) == []  # w1 had one pin: an extra release is ignored
    assert b.release(b"w2", ["a"]) == ["a"]
    assert b.retired_bytes == 0 and b.total_bytes == 0 and not b.pins and not b.owned


def test_book_release_of_live_segment_keeps_it() -> None:
    b = SegmentBook()
    b.add("a", 10)
    b.pin("a", b"w1")
    assert b.release(b"w1", ["a"]) == []
    assert "a" in b.sizes and b.pinned("a") == 0


def test_book_dead_owner_drops_all_its_pins() -> None:
    b = SegmentBook()
    for n in ("a", "b"):
        b.add(n, 5)
        b.pin(n, b"dead")
        b.pin(n, b"dead")
    b.pin("b", b"alive")
    assert b.retire("a") == [] and b.retire("b") == []
    assert sorted(b.drop_owner(b"dead")) == ["a"]  # b still pinned by "alive"
    assert b.owners() == [b"alive"]
    assert b.drop_owner(b"unknown") == []
    assert b.release(b"alive", ["b"]) == ["b"]


def test_book_pin_unknown_segment_raises() -> None:
    with pytest.raises(KeyError):
        SegmentBook().pin("nope", b"w")


def test_owner_pid() -> None:
    assert owner_pid(b"p1234-7") == 1234
    assert owner_pid(b"\x00abc") is None
    assert owner_pid(b"px-1") is None


def test_array_data_offset_and_pad() -> None:
    arr = np.arange(100, dtype=np.float64)
    _, payload = codec.to_payload(to_lattice(arr))
    off = array_data_offset(payload, serializer.NUMPY)
    assert off is not None
    assert payload[off : off + arr.nbytes] == arr.tobytes()
    assert (pad_for(off) + off) % ALIGN == 0
    _, other = codec.to_payload(to_lattice({"a": 1}))
    assert array_data_offset(other, serializer.NUMPY) is None
    assert array_data_offset(b"\xff\xff", serializer.NUMPY) is None
    assert pad_for(None) == 0


def test_readonly_memoryview_decodes_without_copy() -> None:
    arr = np.arange(1000, dtype=np.float64)
    data = memoryview(serializer.to_bytes(arr)).toreadonly()
    out = serializer.from_bytes(data)
    assert np.array_equal(out, arr)
    assert not out.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        out[0] = 1.0
    assert out.copy().flags.writeable
    assert serializer.from_bytes(memoryview(serializer.to_bytes("s")).toreadonly()) == "s"
    assert serializer.from_bytes(memoryview(serializer.to_bytes({"k": 2})).toreadonly()) == {"k": 2}


# ---- CacheState with a fake store -----------------------------------------------------------


class FakeStore:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.n = 0

    def create(self, payload: bytes, pad: int) -> tuple[str, memoryview]:
        self.n += 1
        name = f"seg{self.n}"
        self.files[name] = b"\0" * pad + bytes(payload)
        return name, memoryview(self.files[name]).toreadonly()[pad:]

    def unlink(self, name: str) -> None:
        del self.files[name]


def make_shm(capacity: int = 1 << 20, threshold: int = 1000) -> tuple[CacheState, FakeStore]:
    store = FakeStore()
    st = CacheState(
        "n0",
        [ROUTING],
        RESP,
        ADDR_RESP,
        capacity,
        request_timeout=2.0,
        store=store,
        shm_threshold=threshold,
        numpy_type=serializer.NUMPY,
    )
    return st, store


def getm(st: CacheState, who: bytes, keys: list[str], kvs: dict, known=None) -> list:
    known = known or [b""] * len(keys)
    acts = route(st, st.client_get(who, b"r", keys, 0.0, known, mapped=True))
    out = []
    for a in acts:
        if isinstance(a, Reply):
            out.append(a)
        else:
            out += [r for r in shard_answer(st, a, kvs) if isinstance(r, Reply)]
    (reply,) = out
    return protocol.decode_getv_body(reply.frames[3:], len(keys))


def big(i: int, n: int = 500) -> LWWPairLattice:
    return to_lattice(np.full(n, float(i)))


def test_large_value_goes_to_a_segment_and_getm_pins_it() -> None:
    st, store = make_shm()
    kvs = {"big": big(1), "small": to_lattice(b"x")}
    res = getm(st, b"w1", ["big", "small"], kvs)
    (lt, err, ref, ver), (lt2, err2, payload2, _) = res
    assert err == protocol.MAPPED and err2 == protocol.NO_ERROR
    name, _, pad = ref.rpartition(b":")
    assert name.decode() in store.files
    seg = store.files[name.decode()]
    assert seg[int(pad) :] == codec.to_payload(kvs["big"])[1]
    assert st.book.pinned(name.decode()) == 1
    # A hit: pinned again; known version: NOT_MODIFIED, no pin.
    assert getm(st, b"w1", ["big"], kvs)[0][1] == protocol.MAPPED
    assert st.book.pinned(name.decode()) == 2
    assert getm(st, b"w2", ["big"], kvs, [ver])[0][1] == protocol.NOT_MODIFIED
    assert st.book.pinned(name.decode()) == 2
    # A plain get of the same key still gets the bytes.
    (reply,) = st.client_get(b"w3", b"r", ["big"], 0.0)
    assert bytes(protocol.decode_get_body(reply.frames[3:], 1)[0][2]) == seg[int(pad) :]
    st.release(b"w1", [name.decode()] * 2)
    assert st.book.pinned(name.decode()) == 0 and name.decode() in store.files


def test_new_version_is_a_new_segment_and_pinned_old_survives() -> None:
    st, store = make_shm()
    kvs = {"k": big(1)}
    ((_, _, ref, _),) = getm(st, b"w1", ["k"], kvs)
    old = ref.rpartition(b":")[0].decode()
    # The shard pushes a newer value.
    newer = to_lattice(np.full(500, 2.0))
    lt, payload = codec.to_payload(newer)
    push = pb.KeyResponse(type=pb.PUT)
    push.tuples.add(key="k", lattice_type=lt, payload=payload)
    st.key_response(push, 1.0)
    assert old in store.files  # pinned by w1: untouched
    assert st.snapshot_stats()["shm_retired_pinned_bytes"] == len(store.files[old])
    ((_, err, ref2, _),) = getm(st, b"w2", ["k"], kvs)
    new = ref2.rpartition(b":")[0].decode()
    assert err == protocol.MAPPED and new != old
    st.release(b"w1", [old])
    assert old not in store.files and new in store.files
    assert st.book.retired_bytes == 0


def test_dead_owner_unpins_and_eviction_unlinks() -> None:
    seg_size = len(codec.to_payload(big(0))[1]) + 200
    st, store = make_shm(capacity=3 * seg_size)
    kvs = {f"k{i}": big(i) for i in range(6)}
    getm(st, b"p999999-1", ["k0"], kvs)
    for i in range(1, 6):
        getm(st, b"w", [f"k{i}"], kvs)
        st.release(b"w", list(st.book.owned.get(b"w", {})))  # the call ended
    # k0 was evicted but is still pinned by the (dead) worker: its file stays and counts.
    assert "k0" not in st.entries
    assert st.book.retired_bytes > 0
    assert st.used + st.book.retired_bytes <= st.capacity + seg_size
    assert st.book.retired_bytes == st.book.sizes[next(iter(st.book.pins))]
    st.drop_owner(b"p999999-1")
    assert st.book.retired_bytes == 0
    assert set(store.files) == {e.segment for e in st.entries.values()}
    assert st.book.total_bytes == sum(len(f) for f in store.files.values())


def test_deleted_push_retires_segment() -> None:
    st, store = make_shm()
    getm(st, b"w", ["k"], {"k": big(1)})
    st.release(b"w", list(st.book.sizes))
    push = pb.KeyResponse(type=pb.PUT)
    push.tuples.add(key="k", error=pb.KEY_DNE)
    st.key_response(push, 1.0)
    assert store.files == {} and st.book.total_bytes == 0


def test_threshold_zero_or_small_values_stay_on_the_heap() -> None:
    st, store = make_shm(threshold=10**9)
    res = getm(st, b"w", ["k"], {"k": big(1)})
    assert res[0][1] == protocol.NO_ERROR and store.files == {}
    plain = CacheState("n0", [ROUTING], RESP, ADDR_RESP, 1 << 20)
    acts = route(plain, plain.client_get(b"w", b"r", ["k"], 0.0, [b""], mapped=True))
    for a in sent(acts, object):
        if not isinstance(a, Reply):
            (reply,) = [r for r in shard_answer(plain, a, {"k": big(1)}) if isinstance(r, Reply)]
            assert protocol.decode_getv_body(reply.frames[3:], 1)[0][1] == protocol.NO_ERROR


# ---- real files -------------------------------------------------------------------------------


def test_store_create_map_sweep_close(shm_dir: Path) -> None:
    arr = np.arange(10_000, dtype=np.float64)
    _, payload = codec.to_payload(to_lattice(arr))
    pad = pad_for(array_data_offset(payload, serializer.NUMPY))
    store = ShmStore("cb-test-", str(shm_dir))
    name, view = store.create(payload, pad)
    assert bytes(view) == payload and view.readonly
    mapped = map_segment(name, pad, str(shm_dir))
    lattice = LWWPairLattice.parse(bytes(mapped))
    assert np.array_equal(from_lattice(lattice), arr)
    from cache.client import CacheClient

    zero_copy = from_lattice(CacheClient._map(f"{name}:{pad}".encode(), str(shm_dir)))
    assert np.array_equal(zero_copy, arr) and not zero_copy.flags.writeable
    assert zero_copy.ctypes.data % ALIGN == 0
    store.unlink(name)
    assert not (shm_dir / name).exists()
    assert np.array_equal(zero_copy, arr)  # the mapping outlives the file
    # A killed predecessor's leftovers (same prefix) are swept; others are not.
    (shm_dir / "cb-test-123-9").write_bytes(b"x")
    (shm_dir / "cb-other-1").write_bytes(b"x")
    # Another cache's segments: kept while its process lives, swept once it is gone.
    (shm_dir / f"cb-0123456789ab-{os.getpid()}-1").write_bytes(b"x")
    dead = subprocess.Popen(["true"])
    dead.wait(timeout=10)
    (shm_dir / f"cb-0123456789ab-{dead.pid}-1").write_bytes(b"x")
    again = ShmStore("cb-test-", str(shm_dir))
    assert again.sweep() == 2
    (shm_dir / f"cb-0123456789ab-{os.getpid()}-1").unlink()
    assert sorted(p.name for p in shm_dir.iterdir()) == ["cb-other-1"]
    again.create(b"abc", 0)
    again.close()
    assert sorted(p.name for p in shm_dir.iterdir()) == ["cb-other-1"]


def test_out_of_band_pickle_is_writable_copy_or_read_only_view() -> None:
    obj = {"w": np.arange(20_000, dtype=np.float64), "small": np.ones(3), "s": "x"}
    kind, body = serializer.dumps(obj)
    assert kind == serializer.DEFAULT and body[:4] == b"CBP5"
    back = serializer.loads(kind, body)  # the socket path: private, writable copies
    assert np.array_equal(back["w"], obj["w"]) and back["w"].flags.writeable
    assert back["s"] == "x" and back["small"].flags.writeable
    view = serializer.from_bytes(memoryview(serializer.to_bytes(obj)).toreadonly())
    assert np.array_equal(view["w"], obj["w"]) and not view["w"].flags.writeable
    # Small objects keep the plain pickle.
    assert serializer.dumps({"a": 1})[1][:4] != b"CBP5"
    # In a segment the buffers are 64-byte aligned.
    _, payload = codec.to_payload(to_lattice(obj))
    off = array_data_offset(payload, serializer.NUMPY)
    assert off is not None and payload[off : off + 4] == b"CBP5"
    store = FakeStore()
    name, seg_view = store.create(payload, pad_for(off))
    mapped = serializer.from_bytes(
        memoryview(LWWPairLattice.parse(bytes(seg_view)).value).toreadonly()
    )
    assert np.array_equal(mapped["w"], obj["w"])
