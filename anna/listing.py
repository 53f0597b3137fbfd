"""Key listing for operators (``cloudburst kvs keys PREFIX``, ``cloudburst dags list``).

Pure: :func:`list_keys_response` is what a shard answers to a ``KIND_LIST_KEYS``
request (see :mod:`anna.wire`); :func:`anna.admin.list_keys` asks every shard.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from anna.proto import anna_pb2 as pb
from anna.shard.logic import Tomb

#: At most this many keys per shard and request (the listing says when it was cut).
LIST_LIMIT = 100_000


def live_keys(store: Mapping[str, Any], prefix: str, limit: int = LIST_LIMIT) -> list[str]:
    """The keys of ``store`` starting with ``prefix`` that are not deleted, sorted."""
    keys = sorted(k for k, e in store.items() if k.startswith(prefix) and type(e) is not Tomb)
    return keys[:limit]


def list_keys_response(store: Mapping[str, Any], prefix: str, request_id: str) -> bytes:
    """A serialized ``KeyResponse``: one tuple (key only) per live key with ``prefix``;
    ``error`` is ``TIMEOUT`` when the listing was cut at :data:`LIST_LIMIT`."""
    keys = live_keys(store, prefix, LIST_LIMIT + 1)
    resp = pb.KeyResponse(response_id=request_id)
    if len(keys) > LIST_LIMIT:
        keys = keys[:LIST_LIMIT]
        resp.error = pb.TIMEOUT
    resp.tuples.extend(pb.KeyTuple(key=k) for k in keys)
    return resp.SerializeToString()
