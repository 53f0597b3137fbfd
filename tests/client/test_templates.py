"""The client's direct path: cached trigger bytes + per-call bytes parse as the full
trigger (protobuf merges concatenated messages)."""

from __future__ import annotations

import pytest

from cloudburst.client.client import _trigger_templates
from cloudburst.shared import wire
from cloudburst.shared.kvs import split_address
from cloudburst.shared.proto import cloudburst_pb2 as pb
from scheduler.logic import build_dag


def test_template_plus_delta_is_the_whole_trigger() -> None:
    tmpl = pb.DagSchedule(
        id="old-id",
        dag=build_dag("d", ["a", "b", "c"], [("a", "c"), ("b", "c")]),
        locations={"a": "tcp://h:1", "b": "tcp://h:2", "c": "tcp://h:3"},
        versions={"a": 7},
    )
    prefixes = _trigger_templates(tmpl)
    assert [addr for addr, _ in prefixes] == ["tcp://h:1", "tcp://h:2"]  # the sources
    delta = pb.ExecutorMessage()
    delta.trigger.schedule.id = "new-id"
    delta.trigger.schedule.response_address = "tcp://me:9"
    wire.encode_args([41], delta.trigger.schedule.arguments["a"])
    for (_, prefix), target in zip(prefixes, ["a", "b"], strict=True):
        msg = wire.parse_executor_message(prefix + delta.SerializeToString())
        sched = msg.trigger.schedule
        assert msg.trigger.target_function == target
        assert sched.id == "new-id" and sched.response_address == "tcp://me:9"
        assert dict(sched.locations) == dict(tmpl.locations) and sched.versions["a"] == 7
        assert sched.dag == tmpl.dag
        assert wire.decode_args(sched.arguments["a"]) == [41]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1", ("127.0.0.1", 5000)),
        ("127.0.0.1:7000", ("127.0.0.1", 7000)),
        ("tcp://10.0.0.2:7001", ("10.0.0.2", 7001)),
    ],
)
def test_scheduler_addresses(text: str, expected: tuple[str, int]) -> None:
    assert split_address(text, 5000) == expected


def test_bad_address() -> None:
    with pytest.raises(ValueError):
        split_address("host:notaport", 5000)
