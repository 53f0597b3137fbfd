"""``cb.put`` of a large value through a worker-written segment the cache adopts.

Pure: the file layout equals the LWW payload ``put`` sends; ``CacheState.client_adopt``
writes through to the KVS (acknowledged before it answers) and keeps the segment as the
entry, or unlinks it (KVS refusal, older than what is held). Real files: ``ShmStore.adopt``
takes a worker file over and refuses others. The tests against a real cache process
share the module KVS of ``tests/cache/test_cache_process.py`` (end of that file).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from anna.proto import anna_pb2 as pb
from cache import protocol
from cache.actions import KvsSend, Reply
from cache.shm import (
    ShmStore,
    lww_file_layout,
    lww_file_pieces,
    put_prefix,
    segment_prefix,
    write_segment,
)
from cloudburst.shared import serializer
from cloudburst.shared.values import from_lattice, to_lattice
from lattices import LWWPairLattice, codec
from tests.cache.test_logic import SHARD, route, shard_answer
from tests.cache.test_shm import make_shm

# ---- pure -----------------------------------------------------------------------------------


def file_bytes(obj: object, ts: int) -> tuple[bytes, int]:
    lay = serializer.layout(obj)
    assert lay is not None
    size, off, body, head, tail = lww_file_layout(ts, lay.kind, lay.length, lay.align_at)
    buf = bytearray(size)
    buf[off:body] = head
    lay.write_into(memoryview(buf)[body : body + lay.length])
    buf[body + lay.length :] = tail
    assert (body + lay.align_at) % 64 == 0
    # The pieces write_segment takes give the same bytes.
    size2, off2, pieces = lww_file_pieces(ts, lay)
    buf2 = bytearray(size2)
    for at, piece in pieces:
        piece = memoryview(piece).cast("B")
        buf2[at : at + len(piece)] = piece
    assert (size2, off2, bytes(buf2)) == (size, off, bytes(buf))
    return bytes(buf), off


@pytest.mark.parametrize(
    "obj",
    [
        np.arange(20000.0),
        {"w": np.ones(9000), "s": "x"},
        b"z" * 70000,
        np.zeros((3, 0)),
        np.arange(40000.0).reshape(200, 200)[:, ::2],  # not contiguous
        np.array(3.0),  # 0-d
    ],
)
def test_file_layout_is_the_put_payload(obj: object) -> None:
    for ts in (0, 1, 2**63 + 5):
        data, off = file_bytes(obj, ts)
        assert data[off:] == LWWPairLattice(ts, serializer.to_bytes(obj)).serialize()
        assert not any(data[:off])


def adopt(st, store, key: str, obj: object, ts: int, who: bytes = b"w1"):  # noqa: ANN001, ANN201
    data, off = file_bytes(obj, ts)
    store.n += 1
    name = f"adopted{store.n}"
    store.files[name] = data
    view = memoryview(data).toreadonly()[off:]
    return name, route(st, st.client_adopt(who, b"r", key, name, view, off, 0.0))


def test_adopted_put_is_written_through_then_becomes_the_entry() -> None:
    st, store = make_shm()
    arr = np.arange(4000.0)
    name, acts = adopt(st, store, "k", arr, 10)
    (send,) = [a for a in acts if isinstance(a, KvsSend)]
    assert not [a for a in acts if isinstance(a, Reply)]  # not before the KVS acked
    req = pb.KeyRequest.FromString(send.data)  # one join, protobuf's encoding
    payload = LWWPairLattice(10, serializer.to_bytes(arr)).serialize()
    assert req.type == pb.PUT and req.tuples[0].payload == payload
    assert st.book.total_bytes == len(store.files[name])
    kvs: dict = {}
    replies = [a for a in shard_answer(st, send, kvs) if isinstance(a, Reply)]
    assert protocol.decode_reply(replies[0].frames)[2] == [bytes([protocol.NO_ERROR])]
    assert from_lattice(kvs["k"]).tolist() == arr.tolist()
    entry = st.entries["k"]
    assert entry.segment == name and entry.ref.startswith(name.encode() + b":")
    # Served mapped from the adopted file, no new segment.
    ((_, err, ref, _),) = protocol.decode_getv_body(
        st.client_get(b"w2", b"r", ["k"], 1.0, [b""], mapped=True)[0].frames[3:], 1
    )
    assert err == protocol.MAPPED and ref == entry.ref and set(store.files) == {name}
    # An older adopted write loses the merge: its file goes, the entry stays.
    old, acts = adopt(st, store, "k", np.zeros(4000), 5)
    shard_answer(st, [a for a in acts if isinstance(a, KvsSend)][0], kvs)
    assert old not in store.files and st.entries["k"].segment == name
    # A newer one replaces it (the old file is retired: unpinned after w2 releases).
    new, acts = adopt(st, store, "k", np.ones(4000), 20)
    shard_answer(st, [a for a in acts if isinstance(a, KvsSend)][0], kvs)
    assert st.entries["k"].segment == new and name in store.files
    st.release(b"w2", [name])
    assert set(store.files) == {new}
    assert st.book.total_bytes == len(store.files[new]) and st.book.retired_bytes == 0


def test_refused_adopted_put_unlinks_its_segment() -> None:
    st, store = make_shm()
    kvs = {"s": to_lattice({b"a"})}  # a Set at the KVS: LWW refused
    name, acts = adopt(st, store, "s", np.arange(4000.0), 10)
    replies = [
        a
        for a in shard_answer(st, [a for a in acts if isinstance(a, KvsSend)][0], kvs)
        if isinstance(a, Reply)
    ]
    assert protocol.decode_reply(replies[0].frames)[2] == [bytes([protocol.LATTICE])]
    assert name not in store.files and "s" not in st.entries and st.book.total_bytes == 0
    # A held key of another type: refused at once, nothing sent.
    st.entries["t"] = st.entries.get("t") or _set_entry("t")
    name2, acts = adopt(st, store, "t", np.arange(4000.0), 10)
    (reply,) = acts
    assert protocol.decode_reply(reply.frames)[2] == [bytes([protocol.LATTICE])]
    assert name2 not in store.files and st.book.total_bytes == 0


def _set_entry(key: str):  # noqa: ANN202
    from cache.logic import Entry

    lt, payload = codec.to_payload(to_lattice({b"a"}))
    return Entry(key, lt, payload)


def test_timed_out_adopted_put_unlinks_its_segment() -> None:
    st, store = make_shm()
    name, acts = adopt(st, store, "k", np.arange(4000.0), 10)
    replies = []
    for now in (1.1, 2.2, 3.3):  # no shard answers: retries, then the deadline (2 s)
        replies += [a for a in route(st, st.tick(now), now) if isinstance(a, Reply)]
    assert protocol.decode_reply(replies[0].frames)[2] == [bytes([protocol.TIMEOUT])]
    assert name not in store.files and st.book.total_bytes == 0


# ---- real files ----------------------------------------------------------------------------


@pytest.fixture
def shm_dir() -> Path:
    d = Path("/dev/shm") / f"cbtest-{os.getpid()}-{os.urandom(4).hex()}"
    d.mkdir()
    yield d
    for f in d.iterdir():
        f.unlink()
    d.rmdir()


def test_store_adopts_worker_files_only(shm_dir: Path) -> None:
    ipc = "ipc:///x/cache-n.sock"
    store = ShmStore(segment_prefix(ipc), str(shm_dir))
    data, off = file_bytes(np.arange(5000.0), 7)
    src = f"{put_prefix(ipc)}{os.getpid()}-1"
    write_segment(str(shm_dir), src, len(data), [(0, data)])
    name, view = store.adopt(src, off, put_prefix(ipc))
    assert os.listdir(shm_dir) == [name] and name.startswith(segment_prefix(ipc))
    assert view.readonly and bytes(view) == data[off:]
    for bad in (f"{segment_prefix(ipc)}{os.getpid()}-9", "../etc", f"{put_prefix(ipc)}x"):
        (shm_dir / "victim").write_bytes(b"x")
        with pytest.raises(ValueError):
            store.adopt(bad, 0, put_prefix(ipc))
    with pytest.raises(OSError):  # gone (the worker gave up): nothing to adopt
        store.adopt(f"{put_prefix(ipc)}{os.getpid()}-2", 0, put_prefix(ipc))
    os.symlink(shm_dir / "victim", shm_dir / f"{put_prefix(ipc)}{os.getpid()}-3")
    with pytest.raises(OSError):  # a symlink is refused (and removed)
        store.adopt(f"{put_prefix(ipc)}{os.getpid()}-3", 0, put_prefix(ipc))
    assert (shm_dir / "victim").read_bytes() == b"x"
    del view
    store.close()
    assert sorted(os.listdir(shm_dir)) == ["victim"]


# ---- large values in the cache's loop ---------------------------------------------------------


def test_same_bytes_compares_views_and_bytes() -> None:
    from cache.logic import _same_bytes

    a = bytes(range(256)) * 10000
    view = memoryview(bytearray(a)).toreadonly()
    assert _same_bytes(a, view, chunk=4096) and _same_bytes(view, a)
    changed = bytearray(a)
    changed[-1] ^= 1
    assert not _same_bytes(view, bytes(changed), chunk=4096)
    assert not _same_bytes(a, a[:-1])


def test_large_lww_push_is_merged_on_timestamps() -> None:
    st, store = make_shm()
    kvs = {"k": to_lattice(np.arange(20000.0))}
    acts = route(st, st.client_get(b"w", b"r", ["k"], 0.0))
    shard_answer(st, [a for a in acts if isinstance(a, KvsSend)][0], kvs)
    first = st.entries["k"]

    def push(lattice: LWWPairLattice) -> None:
        resp = pb.KeyResponse(type=pb.PUT)
        lt, payload = codec.to_payload(lattice)
        resp.tuples.add(key="k", lattice_type=lt, payload=payload)
        st.key_response(resp, 1.0)

    push(kvs["k"])  # the same value again: nothing changes
    assert st.entries["k"] is first
    push(LWWPairLattice(kvs["k"].timestamp - 1, serializer.to_bytes(np.zeros(20000))))
    assert st.entries["k"] is first  # older: ignored
    newer = LWWPairLattice(kvs["k"].timestamp + 1, serializer.to_bytes(np.ones(20000)))
    push(newer)
    assert st.entries["k"] is not first and st.entries["k"].segment != first.segment
    assert bytes(st.entries["k"].payload) == codec.to_payload(newer)[1]
    assert first.segment not in store.files  # retired, unpinned: unlinked


def test_a_large_put_is_not_resent_every_attempt_timeout() -> None:
    from cache.logic import put_slack

    st, store = make_shm()
    big_payload = 20 * 1024 * 1024
    assert put_slack(big_payload) == pytest.approx(2.5) and put_slack(1000) == 0
    name, acts = adopt(st, store, "k", np.zeros(big_payload // 8), 10)
    assert len([a for a in acts if isinstance(a, KvsSend)]) == 1
    # 1 s (the attempt timeout) later nothing is resent: the deadline grew with the size.
    assert not [a for a in st.tick(1.5) if isinstance(a, KvsSend)]
    st.tick(4.0)  # past 1 + 2.5 s: the attempt timed out (a short backoff) ...
    assert [a for a in st.tick(4.2) if isinstance(a, KvsSend)]  # ... then resent


# ---- put_object: a large array sent from its own memory ----------------------------------------


@pytest.mark.parametrize(
    "obj", [np.arange(20000.0), {"w": np.ones(9000), "s": "x"}, np.arange(9e4)[::3]]
)
def test_large_value_pieces_are_to_bytes(obj: object) -> None:
    pieces = serializer.large_value_pieces(obj)
    assert pieces is not None
    assert b"".join(pieces) == serializer.to_bytes(obj)


def test_small_values_have_no_pieces() -> None:
    for obj in (b"x" * 100000, "s", 3, np.arange(10.0), {"a": 1}):
        assert serializer.large_value_pieces(obj) is None


def test_an_adopted_segment_counts_against_capacity_while_in_flight() -> None:
    seg = len(file_bytes(np.arange(4000.0), 1)[0])
    st, store = make_shm(capacity=2 * seg + 300)
    kvs: dict = {}
    for key, ts in (("a", 1), ("b", 2)):
        _, acts = adopt(st, store, key, np.arange(4000.0), ts)
        shard_answer(st, [a for a in acts if isinstance(a, KvsSend) and a.address == SHARD][0], kvs)
    assert set(st.entries) == {"a", "b"} and st.adopting == 0
    name, acts = adopt(st, store, "c", np.arange(4000.0), 3)
    # In flight: its bytes count, so the least recently used entry is gone already.
    assert st.adopting == seg and "a" not in st.entries
    assert st.snapshot_stats()["shm_adopting_bytes"] == seg
    shard_answer(st, [a for a in acts if isinstance(a, KvsSend) and a.address == SHARD][0], kvs)
    assert st.adopting == 0 and set(st.entries) == {"b", "c"}
    assert set(store.files) == {st.entries["b"].segment, st.entries["c"].segment}
    assert st.used + st.book.retired_bytes <= st.capacity


@pytest.mark.parametrize(
    "obj", [np.arange(20000.0), np.arange(10.0), {"w": np.ones(9000)}, {"a": 1}, b"x" * 70000, "s"]
)
def test_bytes_or_layout_is_to_bytes(obj: object) -> None:
    out = serializer.bytes_or_layout(obj, 64 * 1024)
    if isinstance(out, bytes):
        assert out == serializer.to_bytes(obj)
    else:
        buf = bytearray(out.length)
        out.write_into(memoryview(buf))
        assert serializer.to_bytes(obj) == b"".join(serializer.value_pieces(out)) and bytes(
            buf
        ) in serializer.to_bytes(obj)


def test_curve_seals_value_pieces() -> None:
    from anna.curve import CurveCodec

    key = bytes(range(32))
    sender, receiver = CurveCodec(key, is_server=False), CurveCodec(key, is_server=True)
    arr = np.arange(100_000.0)
    pieces = serializer.large_value_pieces(arr)
    assert receiver.open(sender.seal_parts([b"x", *pieces]))[1] == b"x" + serializer.to_bytes(arr)
