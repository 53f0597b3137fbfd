"""The exception hierarchy users of Cloudburst see.

Every error raised to a user derives from :class:`CloudburstException`; low-level
errors (zmq timeouts, protobuf decode failures, unpickling errors) are translated
into these at the boundary so the message says what went wrong in our terms.
"""

from __future__ import annotations


class CloudburstException(Exception):
    """Base class of every Cloudburst error."""


class ConfigError(CloudburstException, ValueError):
    """A configuration file or environment override has a bad value."""


class SerializationError(CloudburstException, ValueError):
    """A value could not be serialized or a payload could not be decoded."""


class WireError(CloudburstException, ValueError):
    """A message on the wire is malformed (garbage bytes, wrong message type)."""


class CloudburstTimeoutError(CloudburstException, TimeoutError):
    """A call did not answer within its deadline."""


class ConnectionFailed(CloudburstException, ConnectionError):
    """A server the client needs could not be reached."""


class FunctionNotFound(CloudburstException, KeyError):
    """The named function is not registered."""


class KeyNotFound(CloudburstException, KeyError):
    """``get_object(key, default=KeyNotFound)`` of a key the KVS does not hold."""


class DagNotFound(CloudburstException, KeyError):
    """The named DAG is not registered."""


class DagAlreadyExists(CloudburstException):
    """A DAG with that name is already registered."""


class InvalidArgument(CloudburstException, ValueError):
    """A request is malformed (bad arguments, bad DAG, bad name)."""


class ExecutorFailed(CloudburstException):
    """The executor running a call died and the call could not be completed."""


class CallCancelled(CloudburstException):
    """``get()`` on a future that was cancelled (``future.cancel()``)."""


class FunctionTimeout(CloudburstTimeoutError):
    """A call ran past its function's time limit and was stopped (its worker was
    replaced). ``function`` names the function, ``limit`` is the limit in seconds."""

    def __init__(self, message: str, function: str = "", limit: float = 0.0) -> None:
        super().__init__(message)
        self.function = function
        self.limit = limit


class FunctionMemoryExceeded(CloudburstException, MemoryError):
    """A call allocated past its function's memory limit (its worker was replaced).
    ``function`` names the function, ``limit`` is the limit in bytes."""

    def __init__(self, message: str, function: str = "", limit: int = 0) -> None:
        super().__init__(message)
        self.function = function
        self.limit = limit


class RemoteExecutionError(CloudburstException):
    """A user function raised; carries the remote type, message and traceback.

    The instance ``get()`` raises is also an instance of the remote type when it is
    known on the client (``except KeyError`` catches a remote ``KeyError``);
    ``remote_exception`` is the unpickled original (or None)."""

    remote_exception: BaseException | None = None
    #: What the call printed/logged before it raised (the end of it is in the message).
    output: str = ""
    #: Lines of ``output`` shown in the message.
    OUTPUT_TAIL_LINES = 20

    def __init__(self, exc_type: str, message: str, remote_traceback: str = "") -> None:
        super().__init__(f"{exc_type}: {message}")
        self.exc_type = exc_type
        self.remote_message = message
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        base = f"{self.exc_type}: {self.remote_message}"
        if self.output:
            lines = self.output.rstrip("\n").split("\n")
            tail = lines[-self.OUTPUT_TAIL_LINES :]
            more = len(lines) - len(tail)
            head = f"last {len(tail)} of {len(lines)} lines; " if more else ""
            base += f"\n\nOutput of the call ({head}all in .output):\n" + "\n".join(tail)
        if self.remote_traceback:
            return f"{base}\n\nRemote traceback:\n{self.remote_traceback}"
        return base
