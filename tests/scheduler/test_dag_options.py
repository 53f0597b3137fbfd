"""Scheduler logic of the original's DAG options: continuations, colocated groups,
GPU functions and batching homes (pure: no sockets)."""

from __future__ import annotations

from cloudburst.shared import wire
from cloudburst.shared.proto import cloudburst_pb2 as pb
from scheduler.logic import build_dag, continued_arguments


def _args(*values: object) -> pb.Arguments:
    out = pb.Arguments()
    wire.encode_args(values, out)
    return out


def test_continuation_result_is_appended_to_each_source() -> None:
    dag = build_dag("d", ["a", "b", "c"], [("a", "c"), ("b", "c")])
    call = pb.DagCall(name="d", continued=True)
    call.function_args["a"].CopyFrom(_args("own"))
    call.continued_with.CopyFrom(_args(16))
    got = continued_arguments(dag, call)
    assert wire.decode_args(got["a"]) == ["own", 16]
    assert wire.decode_args(got["b"]) == [16]
    assert "c" not in got
    assert wire.decode_args(call.function_args["a"]) == ["own"]  # the request is unchanged


def test_a_plain_call_keeps_its_arguments() -> None:
    dag = build_dag("d", ["a"], [])
    call = pb.DagCall(name="d")
    call.function_args["a"].CopyFrom(_args(1))
    assert {k: wire.decode_args(v) for k, v in continued_arguments(dag, call).items()} == {"a": [1]}
