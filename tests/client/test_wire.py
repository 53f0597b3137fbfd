"""Client-side pure pieces: argument codec, errors, values, DagRegistration."""

from __future__ import annotations

import numpy as np
import pytest

from cloudburst.client.client import DagRegistration
from cloudburst.shared import errors, wire
from cloudburst.shared.proto import cloudburst_pb2 as pb
from cloudburst.shared.reference import CloudburstReference
from cloudburst.shared.values import from_lattice, to_lattice
from lattices import LWWPairLattice, SetLattice


def test_arguments_round_trip_values_and_references() -> None:
    arr = np.ones((2, 3))
    args = [1, "s", b"b", arr, CloudburstReference("k", False), wire.PendingReference("r")]
    out = wire.decode_args(wire.encode_args(args))
    assert out[:3] == [1, "s", b"b"] and np.array_equal(out[3], arr)
    assert out[4] == CloudburstReference("k", False) and not isinstance(
        out[4], wire.PendingReference
    )
    assert isinstance(out[5], wire.PendingReference) and out[5].key == "r"


def test_tuples_are_spread_everything_else_is_one_argument() -> None:
    assert wire.result_values((1, 2)) == (1, 2)
    assert wire.result_values([1, 2]) == ([1, 2],)


@pytest.mark.parametrize(
    "parse", [wire.parse_scheduler_request, wire.parse_executor_message, wire.parse_client_message]
)
@pytest.mark.parametrize("data", [b"\xff\xff\xff", b"", b"\x0a\x05abc"])
def test_garbage_is_a_wire_error(parse: object, data: bytes) -> None:
    with pytest.raises(errors.WireError):
        parse(data)  # type: ignore[operator]


def test_remote_errors_carry_type_message_and_traceback() -> None:
    try:
        _ = 1 / 0
    except ZeroDivisionError as exc:
        err = wire.remote_error(exc, "f")
    exc2 = wire.exception_for(err)
    assert isinstance(exc2, errors.RemoteExecutionError)
    assert exc2.exc_type == "ZeroDivisionError" and "division by zero" in exc2.remote_message
    assert "_ = 1 / 0" in exc2.remote_traceback
    assert isinstance(exc2, ZeroDivisionError) and exc2.__cause__ is None
    assert isinstance(exc2.remote_exception, ZeroDivisionError)


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (pb.FUNC_NOT_FOUND, errors.FunctionNotFound),
        (pb.NO_SUCH_DAG, errors.DagNotFound),
        (pb.DAG_ALREADY_EXISTS, errors.DagAlreadyExists),
        (pb.INVALID_ARGUMENT, errors.InvalidArgument),
        (pb.EXECUTOR_FAILED, errors.ExecutorFailed),
        (pb.TIMED_OUT, errors.CloudburstTimeoutError),
    ],
)
def test_error_codes_map_to_exceptions(code: int, cls: type) -> None:
    exc = wire.exception_for(wire.error_message(code, "why"))
    assert isinstance(exc, cls) and str(exc) == "why"


def test_values_as_lattices() -> None:
    assert isinstance(to_lattice(5), LWWPairLattice) and from_lattice(to_lattice(5)) == 5
    assert isinstance(to_lattice({1, 2}), SetLattice) and from_lattice(to_lattice({1, 2})) == {1, 2}
    lat = SetLattice([b"x"])
    assert to_lattice(lat) is lat and from_lattice(None) is None


def test_dag_registration_is_the_original_tuple() -> None:
    ok = DagRegistration(True, 0)
    bad = DagRegistration(False, pb.DAG_ALREADY_EXISTS, "exists")
    assert ok == (True, 0) and bool(ok) and repr(ok) == "(True, 0)"
    success, error = bad
    assert not bad and not success and error == pb.DAG_ALREADY_EXISTS and bad.message == "exists"


def test_reference_needs_a_key() -> None:
    with pytest.raises(TypeError):
        CloudburstReference("")
