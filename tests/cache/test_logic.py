"""Pure tests of cache.logic.CacheState (no sockets, no processes)."""

from __future__ import annotations

from anna.proto import anna_pb2 as pb
from cache import protocol
from cache.actions import KvsSend, Reply
from cache.logic import ENTRY_OVERHEAD, CacheState, subscription_address
from lattices import LWWPairLattice, SetLattice, codec

ROUTING = "tcp://127.0.0.1:6450"
SHARD = "tcp://127.0.0.1:6200"
RESP = "tcp://127.0.0.1:7000"
ADDR_RESP = "tcp://127.0.0.1:7001"


def make(capacity: int = 1 << 20) -> CacheState:
    return CacheState("n0", [ROUTING], RESP, ADDR_RESP, capacity, request_timeout=2.0)


def sent(actions: list, cls: type) -> list:
    return [a for a in actions if isinstance(a, cls)]


def route(st: CacheState, actions: list, now: float = 0.0) -> list:
    """Answer every KeyAddressRequest in ``actions``: all keys live on SHARD."""
    out = []
    for a in sent(actions, KvsSend):
        if a.address != ROUTING:
            out.append(a)
            continue
        req = pb.KeyAddressRequest.FromString(a.data)
        resp = pb.KeyAddressResponse(response_id=req.request_id)
        for k in req.keys:
            resp.addresses.add(key=k, ips=[SHARD])
        out += st.address_response(resp, now)
    return out + [a for a in actions if isinstance(a, Reply)]


def shard_answer(st: CacheState, act: KvsSend, store: dict, now: float = 0.0) -> list:
    """Answer a KeyRequest like a shard holding ``store`` {key: lattice}."""
    req = pb.KeyRequest.FromString(act.data)
    resp = pb.KeyResponse(type=req.type, response_id=req.request_id)
    for t in req.tuples:
        if req.type == pb.GET:
            if t.key in store:
                lt, payload = codec.to_payload(store[t.key])
                resp.tuples.add(key=t.key, lattice_type=lt, payload=payload)
            else:
                resp.tuples.add(key=t.key, error=pb.KEY_DNE)
        else:
            incoming = codec.from_payload(t.lattice_type, t.payload)
            old = store.get(t.key)
            if old is not None and type(old) is not type(incoming):
                resp.tuples.add(key=t.key, error=pb.LATTICE)
            else:
                store[t.key] = incoming if old is None else old.merge(incoming)
                resp.tuples.add(key=t.key)
    return st.key_response(resp, now)


def get_reply(actions: list) -> list[tuple[int, int, bytes]]:
    (reply,) = sent(actions, Reply)
    _, _, body = protocol.decode_reply(reply.frames)
    return protocol.decode_get_body(body, len(body) // 2)


def lww(ts: int, v: bytes) -> LWWPairLattice:
    return LWWPairLattice(ts, v)


def push_of(key: str, lattice_type: int, payload: bytes) -> pb.KeyResponse:
    """The KVS's push of one key's value (a PUT-typed KeyResponse)."""
    push = pb.KeyResponse(type=pb.PUT)
    push.tuples.add(key=key, lattice_type=lattice_type, payload=payload)
    return push


def fetch(st: CacheState, keys: list[str], store: dict, now: float = 0.0) -> list:
    acts = route(st, st.client_get(b"c", b"1", keys, now), now)
    out = []
    for a in sent(acts, KvsSend):
        if a.address == SHARD:
            out += shard_answer(st, a, store, now)
        else:
            out.append(a)
    return out + sent(acts, Reply)


def test_hit_after_miss_and_subscription() -> None:
    st = make()
    store = {"k": lww(1, b"v")}
    acts = fetch(st, ["k"], store)
    assert get_reply(acts)[0][1] == protocol.NO_ERROR
    subs = [a for a in sent(acts, KvsSend) if a.address == subscription_address(SHARD)]
    assert len(subs) == 1
    sub = pb.CacheSubscription.FromString(subs[0].data)
    assert list(sub.keys) == ["k"] and sub.cache_address == RESP and not sub.unsubscribe
    assert st.stats["misses"] == 1 and st.stats["hits"] == 0
    acts = st.client_get(b"c", b"2", ["k"], 0.1)
    ((lt, err, payload),) = get_reply(acts)
    assert codec.from_payload(lt, payload) == lww(1, b"v")
    assert st.stats["hits"] == 1
    assert st.key_sizes() == {"k": len(payload)}


def test_missing_key_is_none_and_not_cached() -> None:
    st = make()
    acts = fetch(st, ["nope"], {})
    assert get_reply(acts)[0][1] == protocol.KEY_DNE
    assert st.key_sizes() == {}


def test_concurrent_misses_share_one_fetch() -> None:
    st = make()
    a1 = route(st, st.client_get(b"a", b"1", ["k"], 0.0))
    a2 = route(st, st.client_get(b"b", b"1", ["k"], 0.0))
    kreqs = [a for a in a1 + a2 if isinstance(a, KvsSend) and a.address == SHARD]
    assert len(kreqs) == 1
    replies = sent(shard_answer(st, kreqs[0], {"k": lww(1, b"v")}), Reply)
    assert {r.identity for r in replies} == {b"a", b"b"}


def test_push_updates_cached_value() -> None:
    st = make()
    fetch(st, ["k"], {"k": lww(1, b"old")})
    lt, payload = codec.to_payload(lww(5, b"new"))
    push = push_of("k", lt, payload)
    st.key_response(push, 0.2)
    ((lt2, _, p2),) = get_reply(st.client_get(b"c", b"3", ["k"], 0.3))
    assert codec.from_payload(lt2, p2) == lww(5, b"new")
    # An older pushed value never goes back in time (merge, not replace).
    lt, payload = codec.to_payload(lww(2, b"older"))
    push = push_of("k", lt, payload)
    st.key_response(push, 0.4)
    ((lt3, _, p3),) = get_reply(st.client_get(b"c", b"4", ["k"], 0.5))
    assert codec.from_payload(lt3, p3) == lww(5, b"new")


def test_push_for_unsubscribed_key_is_ignored() -> None:
    st = make()
    lt, payload = codec.to_payload(lww(5, b"x"))
    push = push_of("other", lt, payload)
    assert st.key_response(push, 0.0) == []
    assert st.key_sizes() == {}


def test_lru_eviction_at_bound_unsubscribes() -> None:
    value = b"x" * 1000
    size = len(codec.to_payload(lww(1, value))[1]) + 2 + ENTRY_OVERHEAD
    st = make(capacity=3 * size)
    store = {f"k{i}": lww(1, value) for i in range(4)}
    for k in ("k0", "k1", "k2"):
        fetch(st, [k], store)
    get_reply(st.client_get(b"c", b"x", ["k0"], 1.0))  # k0 is now the most recent
    acts = fetch(st, ["k3"], store)
    assert set(st.key_sizes()) == {"k0", "k2", "k3"}
    assert st.stats["evictions"] == 1
    assert st.used <= st.capacity
    unsubs = [pb.CacheSubscription.FromString(a.data) for a in sent(acts, KvsSend)]
    assert any(u.unsubscribe and list(u.keys) == ["k1"] for u in unsubs)


def test_value_larger_than_capacity_is_served_not_kept() -> None:
    st = make(capacity=100)
    acts = fetch(st, ["big"], {"big": lww(1, b"y" * 500)})
    assert get_reply(acts)[0][1] == protocol.NO_ERROR
    assert st.key_sizes() == {} and st.used == 0


def test_put_writes_through_then_merges() -> None:
    st = make()
    store = {"k": lww(1, b"a")}
    fetch(st, ["k"], store)
    lt, payload = codec.to_payload(lww(2, b"b"))
    acts = st.client_put(b"c", b"p", [("k", lt, payload)], 0.0)
    assert not sent(acts, Reply)  # no answer before the KVS acknowledged
    (kreq,) = [a for a in sent(acts, KvsSend) if a.address == SHARD]
    replies = sent(shard_answer(st, kreq, store), Reply)
    assert replies[0].frames == protocol.reply_put(b"p", [protocol.NO_ERROR])
    assert store["k"] == lww(2, b"b")
    ((lt2, _, p2),) = get_reply(st.client_get(b"c", b"g", ["k"], 0.1))
    assert codec.from_payload(lt2, p2) == lww(2, b"b")


def test_put_type_mismatch_is_lattice_error() -> None:
    st = make()
    fetch(st, ["k"], {"k": lww(1, b"a")})
    lt, payload = codec.to_payload(SetLattice({b"x"}))
    acts = st.client_put(b"c", b"p", [("k", lt, payload)], 0.0)
    assert not sent(acts, KvsSend)
    assert sent(acts, Reply)[0].frames == protocol.reply_put(b"p", [protocol.LATTICE])
    # Not cached: the KVS's own LATTICE answer goes through.
    st2 = make()
    store = {"j": lww(1, b"a")}
    acts = route(st2, st2.client_put(b"c", b"q", [("j", lt, payload)], 0.0))
    (kreq,) = [a for a in sent(acts, KvsSend) if a.address == SHARD]
    replies = sent(shard_answer(st2, kreq, store), Reply)
    assert replies[0].frames == protocol.reply_put(b"q", [protocol.LATTICE])


def test_put_of_uncached_key_subscribes() -> None:
    st = make()
    lt, payload = codec.to_payload(lww(1, b"a"))
    acts = route(st, st.client_put(b"c", b"p", [("new", lt, payload)], 0.0))
    (kreq,) = [a for a in sent(acts, KvsSend) if a.address == SHARD]
    acts = shard_answer(st, kreq, {})
    subs = [a for a in sent(acts, KvsSend) if a.address == subscription_address(SHARD)]
    assert subs and "new" in st.subs
    push = push_of("new", lt, payload)
    st.key_response(push, 0.1)
    assert "new" in st.key_sizes()


def test_unanswered_request_times_out_with_retries() -> None:
    st = make()
    acts = route(st, st.client_get(b"c", b"1", ["k"], 0.0))
    assert [a for a in sent(acts, KvsSend) if a.address == SHARD]
    now = 0.0
    replies: list = []
    while not replies and now < 10:
        now += 0.1
        replies = sent(route(st, st.tick(now), now), Reply)
    assert replies and now <= 3.0
    assert get_reply(replies)[0][1] == protocol.TIMEOUT
    assert st.stats["retries"] >= 2
    assert not st.fetching and not st.reqs


def test_wrong_thread_refreshes_address_and_retries() -> None:
    st = make()
    acts = route(st, st.client_get(b"c", b"1", ["k"], 0.0))
    (kreq,) = [a for a in sent(acts, KvsSend) if a.address == SHARD]
    req = pb.KeyRequest.FromString(kreq.data)
    resp = pb.KeyResponse(type=pb.GET, response_id=req.request_id)
    resp.tuples.add(key="k", error=pb.WRONG_THREAD)
    assert st.key_response(resp, 0.0) == []
    acts = st.tick(1.0)
    assert any(a.address == ROUTING for a in sent(acts, KvsSend))


def test_stale_and_unknown_responses_are_counted() -> None:
    st = make()
    assert st.key_response(pb.KeyResponse(response_id="zzz"), 0.0) == []
    assert st.address_response(pb.KeyAddressResponse(response_id="zzz"), 0.0) == []
    assert st.stats["stale_responses"] == 1


def test_conditional_get_skips_payload_of_known_version() -> None:
    st = make()
    fetch(st, ["k"], {"k": lww(1, b"v")})
    (reply,) = sent(st.client_get(b"c", b"2", ["k"], 0.1, known=[b""]), Reply)
    _, _, body = protocol.decode_reply(reply.frames)
    ((lt, err, payload, version),) = protocol.decode_getv_body(body, 1)
    assert err == protocol.NO_ERROR and payload and len(version) == 16
    (reply,) = sent(st.client_get(b"c", b"3", ["k"], 0.2, known=[version]), Reply)
    _, _, body = protocol.decode_reply(reply.frames)
    assert protocol.decode_getv_body(body, 1) == [(lt, protocol.NOT_MODIFIED, b"", version)]
    # A pushed update makes a new version: the client's copy is no longer confirmed.
    lt2, p2 = codec.to_payload(lww(9, b"w"))
    push = push_of("k", lt2, p2)
    st.key_response(push, 0.3)
    (reply,) = sent(st.client_get(b"c", b"4", ["k"], 0.4, known=[version]), Reply)
    _, _, body = protocol.decode_reply(reply.frames)
    ((_, err, payload, v2),) = protocol.decode_getv_body(body, 1)
    assert err == protocol.NO_ERROR and payload == p2 and v2 != version


def test_versions_differ_across_incarnations() -> None:
    a = CacheState("n0", [ROUTING], RESP, ADDR_RESP, 1 << 20, epoch=b"A" * 8)
    b = CacheState("n0", [ROUTING], RESP, ADDR_RESP, 1 << 20, epoch=b"B" * 8)
    fetch(a, ["k"], {"k": lww(1, b"v")})
    fetch(b, ["k"], {"k": lww(1, b"v")})
    assert a.entries["k"].version != b.entries["k"].version


def test_subscriptions_follow_a_key_that_moved() -> None:
    st = CacheState("n0", [ROUTING], RESP, ADDR_RESP, 1 << 20, refresh_period=2.0)
    st.tick(0.0)
    fetch(st, ["k"], {"k": lww(1, b"v")})
    assert st.subs["k"] == (subscription_address(SHARD),)
    assert not [a for a in st.tick(1.0) if isinstance(a, KvsSend)]  # not yet due
    (ask,) = [a for a in st.tick(2.5) if isinstance(a, KvsSend)]
    assert ask.address == ROUTING
    req = pb.KeyAddressRequest.FromString(ask.data)
    assert list(req.keys) == ["k"]
    moved = "tcp://127.0.0.2:6200"
    resp = pb.KeyAddressResponse(response_id=req.request_id)
    resp.addresses.add(key="k", ips=[moved])
    acts = st.address_response(resp, 2.6)
    subs = {a.address: pb.CacheSubscription.FromString(a.data) for a in sent(acts, KvsSend)}
    assert not subs[subscription_address(moved)].unsubscribe
    assert subs[subscription_address(SHARD)].unsubscribe
    assert st.subs["k"] == (subscription_address(moved),)
    # Unchanged owners: nothing is sent.
    (ask,) = [a for a in st.tick(5.0) if isinstance(a, KvsSend)]
    req = pb.KeyAddressRequest.FromString(ask.data)
    resp = pb.KeyAddressResponse(response_id=req.request_id)
    resp.addresses.add(key="k", ips=[moved])
    assert st.address_response(resp, 5.1) == []


def test_summary_keeps_the_largest_keys() -> None:
    st = make()
    store = {f"k{i}": lww(1, bytes(10 * (i + 1))) for i in range(5)}
    for k in store:
        fetch(st, [k], store)
    assert set(st.key_sizes(limit=2)) == {"k4", "k3"}
    assert len(st.key_sizes()) == 5


def test_resubscribe_all_batches_one_message_per_shard() -> None:
    st = make()
    other = "tcp://127.0.0.2:6201"
    fetch(st, ["a", "b", "c"], {k: lww(1, k.encode()) for k in "abc"})
    # "c" lives on two shards (e.g. replication 2): both must hear of it.
    st.addresses["c"] = [SHARD, other]
    st._subscribe("c")
    acts = st.resubscribe_all()
    assert all(isinstance(a, KvsSend) for a in acts)
    by_addr = {a.address: pb.CacheSubscription.FromString(a.data) for a in acts}
    assert len(acts) == len(by_addr) == 2  # one message per shard subscription address
    assert sorted(by_addr[subscription_address(SHARD)].keys) == ["a", "b", "c"]
    assert list(by_addr[subscription_address(other)].keys) == ["c"]
    for sub in by_addr.values():
        assert sub.cache_address == RESP and not sub.unsubscribe
    assert st.snapshot_stats()["subscription_refreshes"] == 1


def test_resubscribe_all_chunks_huge_subscriptions() -> None:
    st = make()
    keys = [f"k{i}" for i in range(25)]
    fetch(st, keys, {k: lww(1, b"v") for k in keys})
    acts = st.resubscribe_all(chunk=10)
    assert [len(pb.CacheSubscription.FromString(a.data).keys) for a in acts] == [10, 10, 5]
    assert sorted(k for a in acts for k in pb.CacheSubscription.FromString(a.data).keys) == sorted(
        keys
    )


def test_resubscribe_all_skips_evicted_keys_and_sends_nothing_when_empty() -> None:
    st = make()
    assert st.resubscribe_all() == []
    fetch(st, ["a", "b"], {"a": lww(1, b"x"), "b": lww(1, b"y")})
    st._unsubscribe(["a"])  # what an eviction does
    (act,) = st.resubscribe_all()
    assert list(pb.CacheSubscription.FromString(act.data).keys) == ["b"]


def test_push_after_resubscription_updates_the_copy() -> None:
    """The restarted shard's push (answer to the re-subscription) reaches the copy."""
    st = make()
    fetch(st, ["k"], {"k": lww(1, b"old")})
    st.resubscribe_all()
    lt, payload = codec.to_payload(lww(2, b"new"))
    push = push_of("k", lt, payload)
    st.key_response(push, 1.0)
    assert get_reply(st.client_get(b"c", b"2", ["k"], 1.0))[0][2] == payload


def test_note_merges_into_the_held_entry_without_a_kvs_request() -> None:
    """A value the client PUT to the KVS itself (``note``): taken like an acknowledged
    PUT, no write-through and no reply."""
    st = make()
    fetch(st, ["k"], {"k": lww(1, b"a")})
    lt, payload = codec.to_payload(lww(2, b"b"))
    assert st.client_note([("k", lt, payload)], 0.1) == []
    ((lt2, _, p2),) = get_reply(st.client_get(b"c", b"g", ["k"], 0.2))
    assert codec.from_payload(lt2, p2) == lww(2, b"b")
    # An older note loses the LWW merge: the held value stays.
    lt, payload = codec.to_payload(lww(1, b"old"))
    st.client_note([("k", lt, payload)], 0.3)
    ((lt3, _, p3),) = get_reply(st.client_get(b"c", b"h", ["k"], 0.4))
    assert codec.from_payload(lt3, p3) == lww(2, b"b")
    assert st.stats["notes"] == 2 and st.stats["kvs_puts"] == 0


def test_note_of_an_unknown_key_locates_it_then_subscribes() -> None:
    st = make()
    lt, payload = codec.to_payload(lww(1, b"out"))
    acts = st.client_note([("out", lt, payload)], 0.0)
    assert [a.address for a in sent(acts, KvsSend)] == [ROUTING]  # where does it live?
    assert st.client_note([("out", lt, payload)], 0.0) == []  # one lookup at a time
    acts = route(st, acts)
    subs = [a for a in sent(acts, KvsSend) if a.address == subscription_address(SHARD)]
    assert len(subs) == 1 and "out" in st.subs and not st.subscribe_found
    assert "out" not in st.key_sizes()  # held once the shard pushes its merged value
    push = push_of("out", lt, payload)
    st.key_response(push, 0.1)
    ((lt2, _, p2),) = get_reply(st.client_get(b"c", b"g", ["out"], 0.2))
    assert codec.from_payload(lt2, p2) == lww(1, b"out")


def test_note_lookup_that_times_out_is_forgotten() -> None:
    st = make()
    lt, payload = codec.to_payload(lww(1, b"x"))
    assert sent(st.client_note([("lost", lt, payload)], 0.0), KvsSend)
    st.tick(5.0)  # routing never answered
    assert not st.subscribe_found and not st.looking_up and "lost" not in st.subs
