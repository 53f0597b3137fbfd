"""The Cloudburst client (``cloudburst.client.client.CloudburstConnection``)."""

from cloudburst.client.client import CloudburstConnection, CloudburstFunction, DagRegistration
from cloudburst.client.future import CloudburstFuture

__all__ = ["CloudburstConnection", "CloudburstFunction", "CloudburstFuture", "DagRegistration"]
