"""The Cloudburst client (``cloudburst.client.client.CloudburstConnection``), and
helpers for many futures (``wait``, ``as_completed``, ``progress``)."""

from cloudburst.client.client import CloudburstConnection, CloudburstFunction, DagRegistration
from cloudburst.client.future import CloudburstFuture
from cloudburst.client.many import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    as_completed,
    progress,
    wait,
)

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "CloudburstConnection",
    "CloudburstFunction",
    "CloudburstFuture",
    "DagRegistration",
    "as_completed",
    "progress",
    "wait",
]
