"""Anna-compatible lattice KVS: storage shards, routing, and the Python client.

>>> from anna import AnnaTcpClient          # doctest: +SKIP
"""

from anna.client import AnnaTcpClient
from anna.errors import AnnaError, AnnaTimeoutError, NoServersError

__all__ = ["AnnaError", "AnnaTcpClient", "AnnaTimeoutError", "NoServersError"]
