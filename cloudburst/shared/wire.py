"""Pure codec of the Cloudburst control plane (no sockets).

Envelopes (``proto/cloudburst.proto``): :class:`SchedulerRequest` to a scheduler,
:class:`ExecutorMessage` to an executor worker, :class:`ClientMessage` to a client.
Decoding garbage raises :class:`WireError`, never a bare protobuf error.

Arguments: a Python argument list <-> :class:`Arguments`. Plain objects travel as
serialized :class:`Value` messages, :class:`CloudburstReference` as a
:class:`Reference`; decoding gives back objects and :class:`CloudburstReference` /
:class:`PendingReference` instances for the executor to resolve.

Errors: :func:`remote_error` turns an exception into a :class:`RemoteError` (type,
message, formatted traceback, tblib pickle); :func:`exception_for` turns an error
code or a :class:`RemoteError` back into the exception the user sees.
"""

from __future__ import annotations

import builtins
import os
import pickle
import threading
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import cloudpickle
from google.protobuf.message import DecodeError, Message
from tblib import pickling_support

from cloudburst.shared import errors, serializer
from cloudburst.shared.proto import cloudburst_pb2 as pb
from cloudburst.shared.reference import CloudburstReference

pickling_support.install()

M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class PendingReference(CloudburstReference):
    """A reference to the result of a call that may still be running (a future
    passed as an argument): the executor waits for the key to appear."""


@dataclass(frozen=True)
class SharedArgument:
    """A value handed over in a shared-memory file (``pb.SharedValue``): the executor
    maps it (``executor/handoff.py``) before the call."""

    segment: str
    type: int
    offset: int
    length: int
    host: str


def _parse(cls: type[M], data: bytes, what: str) -> M:
    msg: M = cls()
    try:
        msg.ParseFromString(data)
    except (DecodeError, RuntimeWarning, ValueError, TypeError) as exc:
        raise errors.WireError(f"malformed {what} ({len(data)} bytes): {exc}") from None
    return msg


def parse_scheduler_request(data: bytes) -> pb.SchedulerRequest:
    msg = _parse(pb.SchedulerRequest, data, "scheduler request")
    if msg.WhichOneof("kind") is None:
        raise errors.WireError("scheduler request without a body")
    return msg


def parse_executor_message(data: bytes) -> pb.ExecutorMessage:
    msg = _parse(pb.ExecutorMessage, data, "executor message")
    if msg.WhichOneof("kind") is None:
        raise errors.WireError("executor message without a body")
    return msg


def parse_client_message(data: bytes) -> pb.ClientMessage:
    msg = _parse(pb.ClientMessage, data, "client message")
    if msg.WhichOneof("kind") is None:
        raise errors.WireError("client message without a body")
    return msg


# --- arguments ---------------------------------------------------------------

_SCALARS = (int, float, bool, type(None), complex)
_DEFAULT = serializer.DEFAULT


def dumps(obj: Any) -> tuple[int, bytes]:
    """:func:`serializer.dumps` with a fast path: builtin scalars and small flat
    containers of them are plain pickles (1 us instead of cloudpickle's ~12 us); the
    DEFAULT decoder (cloudpickle.loads) reads both."""
    t = type(obj)
    if t in _SCALARS:
        return _DEFAULT, pickle.dumps(obj, protocol=5)
    if (t is list or t is tuple) and len(obj) <= 32 and all(type(x) in _SCALARS for x in obj):
        return _DEFAULT, pickle.dumps(obj, protocol=5)
    return serializer.dumps(obj)


def encode_argument(obj: Any, out: pb.Argument) -> None:
    if isinstance(obj, CloudburstReference):
        out.reference.key = obj.key
        out.reference.deserialize = obj.deserialize
        out.reference.wait = isinstance(obj, PendingReference)
        return
    kind, body = dumps(obj)
    val = out.value
    val.type = kind  # type: ignore[assignment]
    val.body = body


def encode_args(args: Iterable[Any], out: pb.Arguments | None = None) -> pb.Arguments:
    """Fill (or create) an :class:`Arguments` message from Python values."""
    msg = pb.Arguments() if out is None else out
    for obj in args:
        encode_argument(obj, msg.values.add())
    return msg


def decode_argument(arg: pb.Argument) -> Any:
    kind = arg.WhichOneof("kind")
    if kind == "value":
        return serializer.from_value(arg.value)
    if kind == "reference":
        ref = arg.reference
        if not ref.key:
            raise errors.InvalidArgument("a reference argument has an empty key")
        cls = PendingReference if ref.wait else CloudburstReference
        return cls(ref.key, ref.deserialize)
    if kind == "shared":
        sh = arg.shared
        return SharedArgument(sh.segment, sh.type, sh.offset, sh.length, sh.host)
    raise errors.InvalidArgument("an argument has neither a value nor a reference")


def decode_args(msg: pb.Arguments) -> list[Any]:
    """Python values (and unresolved references) of an :class:`Arguments` message."""
    return [decode_argument(arg) for arg in msg.values]


def result_values(result: Any) -> tuple[Any, ...]:
    """A function's result as the argument tuple of its downstream functions: a tuple
    is spread into several arguments, anything else is one argument."""
    return result if isinstance(result, tuple) else (result,)


# --- errors ------------------------------------------------------------------


#: Directories of Cloudburst's own code: their frames are hidden from remote
#: tracebacks (the user sees their function's frames, not the executor's).
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_INTERNAL = tuple(
    os.path.join(_ROOT, d) + os.sep
    for d in ("cloudburst", "executor", "scheduler", "anna", "lattices", "cache")
)


def is_internal_file(filename: str) -> bool:
    """Whether ``filename`` is Cloudburst's own code (not the user's)."""
    return filename.startswith(_INTERNAL)


def user_traceback(exc: BaseException) -> str:
    """The formatted traceback of ``exc`` without Cloudburst's own frames (executor,
    invocation plumbing), chained exceptions included; a note says how many were
    hidden. An error raised inside Cloudburst itself (no user frame) keeps them all."""
    te = traceback.TracebackException(type(exc), exc, exc.__traceback__)
    hidden = 0
    seen: set[int] = set()
    todo = [te]
    while todo:
        t = todo.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        frames = list(t.stack)
        user = [f for f in frames if not is_internal_file(f.filename)]
        if user and len(user) < len(frames):
            hidden += len(frames) - len(user)
            t.stack = traceback.StackSummary.from_list(user)
        todo.extend(c for c in (t.__cause__, t.__context__) if c is not None)
    text = "".join(te.format())
    if hidden:
        text += f"({hidden} Cloudburst frame(s) hidden)\n"
    return text


def remote_error(
    exc: BaseException, function: str = "", code: int = pb.EXECUTION_ERROR
) -> pb.RemoteError:
    """Describe a user function's exception for the client (its traceback without
    Cloudburst's own frames: :func:`user_traceback`)."""
    err = pb.RemoteError(
        error=code,  # type: ignore[arg-type]
        exc_type=type(exc).__name__,
        message=str(exc),
        traceback=user_traceback(exc),
        function=function,
    )
    try:
        err.pickled = cloudpickle.dumps(exc)
    except Exception:  # unpicklable exception: type, message and text traceback remain
        pass
    return err


def error_message(code: int, message: str, function: str = "") -> pb.RemoteError:
    """A platform error (not raised by user code) for the client."""
    err = pb.RemoteError(exc_type=pb.CloudburstError.Name(code), message=message, function=function)
    err.error = code  # type: ignore[assignment]
    return err


_CODE_EXCEPTIONS: dict[int, type[errors.CloudburstException]] = {
    pb.FUNC_NOT_FOUND: errors.FunctionNotFound,
    pb.NO_SUCH_DAG: errors.DagNotFound,
    pb.DAG_ALREADY_EXISTS: errors.DagAlreadyExists,
    pb.INVALID_ARGUMENT: errors.InvalidArgument,
    pb.EXECUTOR_FAILED: errors.ExecutorFailed,
    pb.NO_RESOURCES: errors.ExecutorFailed,
    pb.TIMED_OUT: errors.CloudburstTimeoutError,
    pb.FUNCTION_TIMEOUT: errors.FunctionTimeout,
    pb.FUNCTION_MEMORY_EXCEEDED: errors.FunctionMemoryExceeded,
    pb.CALL_CANCELLED: errors.CallCancelled,
    pb.ARGUMENT_NOT_READY: errors.CloudburstTimeoutError,
}


class _Message(str):
    # KeyError subclasses print repr(args[0]); a str subclass with a plain repr keeps
    # the message readable.
    def __repr__(self) -> str:
        return str(self)


def exception_for_code(code: int, message: str) -> errors.CloudburstException:
    """The exception for a platform error code."""
    cls = _CODE_EXCEPTIONS.get(code, errors.CloudburstException)
    if issubclass(cls, KeyError):
        return cls(_Message(message))
    return cls(message)


def limit_error(code: int, function: str, limit: float, message: str) -> pb.RemoteError:
    """A call stopped at its function's limit (``FUNCTION_TIMEOUT`` or
    ``FUNCTION_MEMORY_EXCEEDED``)."""
    err = error_message(code, message, function)
    err.limit = limit
    return err


_REMOTE_CLASSES: dict[type, type | None] = {}
_REMOTE_LOCK = threading.Lock()


def remote_class(remote: type) -> type[errors.RemoteExecutionError]:
    """``RemoteExecutionError`` combined with the remote exception's type (so
    ``except KeyError`` catches a remote ``KeyError``), or ``RemoteExecutionError``
    itself when they cannot be combined (layout conflict, a constructor with a
    different signature, not an ``Exception``)."""
    if not isinstance(remote, type) or not issubclass(remote, Exception):
        return errors.RemoteExecutionError
    if issubclass(remote, errors.CloudburstException):
        return errors.RemoteExecutionError
    with _REMOTE_LOCK:
        if remote in _REMOTE_CLASSES:
            return _REMOTE_CLASSES[remote] or errors.RemoteExecutionError
        try:
            cls = type(
                f"Remote{remote.__name__}",
                (errors.RemoteExecutionError, remote),
                {"__module__": errors.__name__, "__str__": errors.RemoteExecutionError.__str__},
            )
            cls("T", "m", "")  # does it build with RemoteExecutionError's arguments?
        except Exception:  # noqa: BLE001 - any incompatibility: no combined class
            _REMOTE_CLASSES[remote] = None
            return errors.RemoteExecutionError
        _REMOTE_CLASSES[remote] = cls
        return cls


def exception_for(err: pb.RemoteError) -> errors.CloudburstException:
    """The exception ``get()`` raises for a failed call: a
    :class:`~cloudburst.shared.errors.RemoteExecutionError` that is also an instance
    of the remote type when that type is known here (unpickled, or a builtin); the
    unpickled original is ``.remote_exception``. It has no ``__cause__``: the remote
    traceback is printed once, as part of its message."""
    if err.error == pb.FUNCTION_TIMEOUT:
        return errors.FunctionTimeout(err.message, err.function, err.limit)
    if err.error == pb.FUNCTION_MEMORY_EXCEEDED:
        return errors.FunctionMemoryExceeded(err.message, err.function, int(err.limit))
    if err.error != pb.EXECUTION_ERROR:
        return exception_for_code(err.error, err.message)
    where = f" (in {err.function})" if err.function else ""
    original = None
    if err.pickled:
        try:
            original = cloudpickle.loads(err.pickled)
        except Exception:  # the client may lack the exception's module
            original = None
    if isinstance(original, BaseException):
        remote: Any = type(original)
    else:
        original = None
        remote = getattr(builtins, err.exc_type, None)
    cls = remote_class(remote) if remote is not None else errors.RemoteExecutionError
    exc = cls(err.exc_type, err.message + where, err.traceback)
    exc.remote_exception = original
    if original is not None and cls is not errors.RemoteExecutionError:
        exc.args = original.args  # e.args[0] is the missing key, as for a local KeyError
    return exc


def names_sorted(names: Sequence[str]) -> list[str]:
    return sorted(set(names))
