"""Errors raised by the KVS client (all derive from Cloudburst's hierarchy)."""

from __future__ import annotations

from cloudburst.shared.errors import CloudburstException, CloudburstTimeoutError, ConnectionFailed


class AnnaError(CloudburstException):
    """A KVS request failed."""


class AnnaTimeoutError(CloudburstTimeoutError, AnnaError):
    """A KVS server did not answer in time; ``address`` is the one waited on."""

    def __init__(self, message: str, address: str = "") -> None:
        super().__init__(message)
        self.address = address


class NoServersError(AnnaError, ConnectionFailed):
    """Routing knows no storage node (``NO_SERVERS``)."""
