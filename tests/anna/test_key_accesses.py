"""Per-key access counts of a shard (the autoscaler's hot-key input), no processes."""

from __future__ import annotations

from anna.membership import make_node
from anna.proto import anna_pb2 as pb
from anna.shard.logic import ShardState
from cloudburst.shared import metrics
from lattices import LWWPairLattice, to_payload


def test_gets_and_puts_are_counted_per_key_and_the_window_keeps_the_top_keys() -> None:
    m = pb.Membership(nodes=[make_node("127.0.0.1", 6200, 6250, 1, 1)])
    st = ShardState("127.0.0.1:6200", 0, m, 64)
    lt, payload = to_payload(LWWPairLattice(1, b"v"))
    for i in range(5):
        st.handle_single(pb.PUT, "hot", lt, payload, 0, "", f"p{i}")
        st.handle_single(pb.GET, "hot", 0, b"", 0, "", f"g{i}")
    st.handle_request(pb.KeyRequest(type=pb.GET, tuples=[pb.KeyTuple(key="warm")] * 3))
    st.handle_single(pb.GET, "cold", 0, b"", 0, "", "c")
    assert st.roll_accesses(top=2) == {"hot": 10, "warm": 3}
    assert st.hot_keys == {"hot": 10, "warm": 3} and not st.accesses
    assert st.roll_accesses() == {}  # a quiet window: no hot keys


def test_hot_keys_are_exported_as_gauges() -> None:
    collector = metrics.HotKeysCollector("0", lambda: {"k": 7}, 10.0)
    families = {f.name: f for f in collector.collect()}
    [sample] = families["anna_key_accesses"].samples
    assert sample.labels == {"shard": "0", "key": "k"} and sample.value == 7.0
    assert families["anna_key_access_window_seconds"].samples[0].value == 10.0
