"""Framing of the cache's executor-facing socket and peer socket (pure codec).

Sockets
-------

* **executor socket**: a ZeroMQ ROUTER bound at ``ipc://<ipc_dir>/cache-<node>.sock``
  (see :func:`ipc_address`). Clients connect a DEALER; the ROUTER sees every request
  as ``[identity, op, *frames]`` and answers ``[identity, *reply_frames]``.
* **peer socket**: a PULL bound at ``tcp://<ip>:<random port>`` (the ``INFO`` op tells
  it); other caches PUSH ``[op, *frames]`` there. Only ``stream.*`` ops are accepted.

Built-in ops (``frames[0]`` is always a request id chosen by the client, echoed back)
------------------------------------------------------------------------------------

====================  ==================================  ===============================
request               frames after the op                 reply frames
====================  ==================================  ===============================
``get``               ``rid, key1, key2, ...``            ``get, rid, ok, (hdr2, payload)*n``
``getv``              ``rid, keys, versions``             ``getv, rid, ok, meta, payload*``
``put``               ``rid, (key, hdr1, payload)*n``     ``put, rid, ok, errors``
``stats``             ``rid``                             ``stats, rid, ok, json``
``keys``              ``rid``                             ``keys, rid, ok, json {key: bytes}``
``info``              ``rid``                             ``info, rid, ok, json``
``ping``              ``rid``                             ``ping, rid, ok``
``getm``              as ``getv``                         as ``getv`` (+ MAPPED)
``release``           ``rid, segment name*``              (none)
``adopt``             ``rid, key, segment, offset``       as ``put``
``note``              ``rid, packed (key, hdr1, payload)*`` (none)
====================  ==================================  ===============================

``hdr2`` is two bytes ``[lattice_type, anna_error]`` (``anna_error`` KEY_DNE = never
written, payload empty); ``hdr1`` is one byte ``[lattice_type]``; ``errors`` holds one
``AnnaError`` byte per put tuple (0 = acknowledged by the KVS, 4 = LATTICE, 3 =
TIMEOUT, ...). A malformed request gets ``[op, rid, b"error", message]``.

``note`` tells the cache about values the client PUT to the KVS itself and the KVS
acknowledged (an executor's ``output_key`` write: one round trip to the shard instead
of two hops more through the cache): the cache takes them as it takes an acknowledged
``put`` (merged into a held entry; a key it does not hold is subscribed to, the shard
pushes its merged value). The triples are one frame of ``(u32 little-endian length,
bytes)*`` (as ``getv``'s keys); no reply.

``getv`` is a conditional GET: the client sends the version it holds of each key
(``b""`` for none); for a cached key with that version the cache answers error 255
(NOT_MODIFIED) and an empty payload, otherwise the value and its current version
(``b""`` when the value was not kept). Versions are 16 opaque bytes, unique per cache
incarnation, so a client may keep decoded values and revalidate them on every read
without moving the payload again. ``keys`` and ``versions`` are each one frame of
``(u32 little-endian length, bytes)*``; ``meta`` is ``(lattice_type, error,
version length, version)*`` and one payload frame follows per key answered 0, in
key order (few frames: each frame costs ~10 µs in pyzmq).

Stream ops (delegated, see :mod:`cache.streams`)
------------------------------------------------

Any op starting with ``b"stream."`` is handed unchanged to
``StreamHub.handle(sender, op, frames, now)`` where ``frames`` are the frames after the
op and ``sender`` is the ROUTER identity (or ``None`` for the peer socket). The hub
answers with :class:`cache.actions.Reply` / :class:`cache.actions.SendPeer` actions;
the framing of stream ops is the hub's own.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from cloudburst.shared.errors import WireError

OP_GET = b"get"
OP_GETV = b"getv"
OP_PUT = b"put"
OP_STATS = b"stats"
OP_KEYS = b"keys"
OP_INFO = b"info"
OP_PING = b"ping"
#: ``getv`` that may answer a large value as a shared-memory segment (MAPPED).
OP_GETM = b"getm"
#: ``rid, name*``: the sender no longer needs these segments pinned (no reply).
OP_RELEASE = b"release"
#: ``rid, key, segment, offset``: PUT the LWW payload a worker wrote at ``offset`` of
#: shared-memory segment ``segment`` (cache/shm.py ``put_prefix``); the cache takes
#: the file over (no copy) and answers as ``put``.
OP_ADOPT = b"adopt"
#: ``rid, packed (key, hdr1, payload)*``: values the sender PUT to the KVS itself and the
#: KVS acknowledged; the cache takes them like an acknowledged ``put`` (no reply).
OP_NOTE = b"note"
STREAM_PREFIX = b"stream."

OK = b"ok"
ERROR = b"error"

# AnnaError values (anna.proto), repeated so the client needs no protobuf import.
NO_ERROR = 0
KEY_DNE = 1
TIMEOUT = 3
LATTICE = 4
NO_SERVERS = 5
#: getv only: the client's copy (same version) is current; no payload sent.
NOT_MODIFIED = 255
#: ``getm`` only: the payload frame is ``b"<segment name>:<offset>"`` (see cache/shm.py).
MAPPED = 254

_LEN = struct.Struct("<I")

#: ipc paths longer than this do not fit in ``sockaddr_un`` (108 bytes with the NUL).
_MAX_IPC_PATH = 100


def external_node_id(ip: str, base_port: int) -> str:
    """The node id of an executor node whose cache runs apart (``cache.external``):
    derived from the config alone (``cfg.ip``, ``cfg.executor.base_port``), so the node
    and ``cache.server --node-id auto`` agree without a value frozen anywhere.

    >>> external_node_id("10.0.0.7", 5100)
    '10.0.0.7/5100'
    """
    return f"{ip}/{base_port}"


def ipc_address(ipc_dir: str, node_id: str) -> str:
    """The ``ipc://`` endpoint of node ``node_id``'s cache.

    ``<abs ipc_dir>/cache-<node_id>.sock``, with characters other than
    ``[A-Za-z0-9._-]`` in the node id replaced by ``_``; if the path would be too long
    for a Unix socket the node part becomes a short hash.

    >>> ipc_address("/tmp/ipc", "127.0.0.1:node0")
    'ipc:///tmp/ipc/cache-127.0.0.1_node0.sock'
    """
    base = socket_dir(ipc_dir)
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in node_id)
    path = os.path.join(base, f"cache-{safe}.sock")
    if len(path) > _MAX_IPC_PATH:
        digest = hashlib.sha1(node_id.encode()).hexdigest()[:16]
        path = os.path.join(base, f"cache-{digest}.sock")
    return "ipc://" + path


def socket_dir(ipc_dir: str) -> str:
    """The directory the ipc sockets of ``ipc_dir`` live in: ``ipc_dir`` itself, or,
    when it is too deep for a Unix socket path (a run directory under a long home or
    test path), ``/tmp/cloudburst-<uid>/<hash of ipc_dir>``. Every process derives the
    same directory from the config alone; ``make_socket_dir`` creates it owner-only.

    >>> socket_dir("/tmp/ipc")
    '/tmp/ipc'
    >>> socket_dir("/" + "d" * 90).startswith("/tmp/cloudburst-")
    True
    """
    base = os.path.abspath(ipc_dir)
    if len(base) + len("/cache-") + 16 + len(".sock") <= _MAX_IPC_PATH:
        return base
    digest = hashlib.sha1(base.encode()).hexdigest()[:16]
    root = os.environ.get(SOCKET_ROOT_ENV) or _SHORT_ROOT
    return os.path.join(root, f"cloudburst-{os.getuid()}", digest)


_SHORT_ROOT = "/tmp"
#: Where the short fallback directories go instead of /tmp (the test suite points it
#: at a directory of its own, removed at the end, so killed test nodes leave nothing).
SOCKET_ROOT_ENV = "CLOUDBURST_SOCKET_ROOT"


def make_socket_dir(ipc_dir: str) -> str:
    """Create ``socket_dir(ipc_dir)`` (owner-only when it is the short fallback, which
    must be ours: another user's directory there is refused) and return it."""
    path = socket_dir(ipc_dir)
    if path == os.path.abspath(ipc_dir):
        os.makedirs(path, exist_ok=True)
        return path
    parent = os.path.dirname(path)
    os.makedirs(parent, mode=0o700, exist_ok=True)
    info = os.lstat(parent)
    if not os.path.isdir(parent) or os.path.islink(parent) or info.st_uid != os.getuid():
        raise PermissionError(f"{parent} is not a directory owned by this user: refusing it")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


# ---- requests ------------------------------------------------------------------------


def encode_get(rid: bytes, keys: Sequence[str]) -> list[bytes]:
    return [OP_GET, rid, *(k.encode() for k in keys)]


def _pack_strings(items: Sequence[bytes]) -> bytes:
    """``(u32 length, bytes)*`` (one frame instead of one per item: frames cost ~10 µs)."""
    return b"".join(_LEN.pack(len(x)) + x for x in items)


def _unpack_strings(blob: bytes, what: str) -> list[bytes]:
    out = []
    off, end = 0, len(blob)
    try:
        while off < end:
            (n,) = _LEN.unpack_from(blob, off)
            off += 4
            if off + n > end:
                raise WireError(f"{what}: truncated")
            out.append(bytes(blob[off : off + n]))
            off += n
    except struct.error:
        raise WireError(f"{what}: truncated") from None
    return out


def encode_getv(
    rid: bytes, keys: Sequence[str], versions: Sequence[bytes], op: bytes = OP_GETV
) -> list[bytes]:
    if len(keys) != len(versions):
        raise ValueError("one version per key")
    return [op, rid, _pack_strings([k.encode() for k in keys]), _pack_strings(versions)]


def decode_getv_args(frames: Sequence[bytes]) -> tuple[list[str], list[bytes]]:
    """Keys and known versions of a ``getv`` (frames after ``op, rid``)."""
    if len(frames) != 2:
        raise WireError(f"getv: expected 2 frames (keys, versions), got {len(frames)}")
    raw = _unpack_strings(frames[0], "getv keys")
    versions = _unpack_strings(frames[1], "getv versions")
    if not raw or len(raw) != len(versions):
        raise WireError(f"getv: {len(raw)} keys but {len(versions)} versions")
    return decode_get_args(raw), versions


def encode_put(rid: bytes, tuples: Sequence[tuple[str, int, bytes]]) -> list[bytes]:
    frames = [OP_PUT, rid]
    for key, ltype, payload in tuples:
        frames += [key.encode(), bytes([ltype]), payload]
    return frames


def encode_note(rid: bytes, tuples: Sequence[tuple[str, int, bytes]]) -> list[bytes]:
    """A ``note``: ``put``'s triples packed in one frame."""
    return [OP_NOTE, rid, _pack_strings(encode_put(rid, tuples)[2:])]


def decode_note_args(frames: Sequence[bytes]) -> list[tuple[str, int, bytes]]:
    """``(key, lattice_type, payload)`` tuples of a ``note`` (frames after ``op, rid``)."""
    if len(frames) != 1:
        raise WireError(f"note: expected 1 frame, got {len(frames)}")
    return decode_put_args(_unpack_strings(frames[0], "note"))


def encode_adopt(rid: bytes, key: str, segment: str, offset: int) -> list[bytes]:
    return [OP_ADOPT, rid, key.encode(), segment.encode(), str(offset).encode()]


def decode_adopt_args(frames: Sequence[bytes]) -> tuple[str, str, int]:
    """``(key, segment, offset)`` of an ``adopt`` (frames after ``op, rid``)."""
    if len(frames) != 3:
        raise WireError(f"adopt: expected key, segment, offset, got {len(frames)} frames")
    try:
        key, segment = bytes(frames[0]).decode(), bytes(frames[1]).decode()
        offset = int(bytes(frames[2]))
    except (UnicodeDecodeError, ValueError) as exc:
        raise WireError(f"adopt: bad frames: {exc}") from None
    if not key or not segment:
        raise WireError("adopt: empty key or segment")
    return key, segment, offset


def encode_simple(op: bytes, rid: bytes) -> list[bytes]:
    return [op, rid]


def decode_get_args(frames: Sequence[bytes]) -> list[str]:
    """Keys of a ``get`` (frames after ``op, rid``)."""
    if not frames:
        raise WireError("get: no keys")
    try:
        return [bytes(f).decode() for f in frames]
    except UnicodeDecodeError as exc:
        raise WireError(f"get: key is not UTF-8: {exc}") from None


def decode_put_args(frames: Sequence[bytes]) -> list[tuple[str, int, bytes]]:
    """``(key, lattice_type, payload)`` tuples of a ``put`` (frames after ``op, rid``)."""
    if not frames or len(frames) % 3:
        raise WireError(f"put: expected (key, type, payload) triples, got {len(frames)} frames")
    out = []
    for i in range(0, len(frames), 3):
        hdr = frames[i + 1]
        if len(hdr) != 1:
            raise WireError("put: lattice type header must be one byte")
        try:
            key = bytes(frames[i]).decode()
        except UnicodeDecodeError as exc:
            raise WireError(f"put: key is not UTF-8: {exc}") from None
        if not key:
            raise WireError("put: empty key")
        out.append((key, hdr[0], frames[i + 2]))
    return out


# ---- replies -------------------------------------------------------------------------


def reply_get(rid: bytes, results: Sequence[tuple[int, int, bytes]]) -> list[bytes]:
    frames = [OP_GET, rid, OK]
    for ltype, err, payload in results:
        frames += [bytes([ltype, err]), payload]
    return frames


def reply_getv(
    rid: bytes, results: Sequence[tuple[int, int, bytes, bytes]], op: bytes = OP_GETV
) -> list[bytes]:
    """``getv, rid, ok, meta, *payloads``: ``meta`` is ``(ltype, err, version)`` per key
    packed; a payload frame follows only for keys answered NO_ERROR (or MAPPED, for
    ``getm``), in key order."""
    meta = b"".join(
        bytes([ltype, err, len(version)]) + version for ltype, err, _, version in results
    )
    payloads = [payload for _, err, payload, _ in results if err in (NO_ERROR, MAPPED)]
    return [op, rid, OK, meta, *payloads]


def decode_getv_body(body: Sequence[bytes], nkeys: int) -> list[tuple[int, int, bytes, bytes]]:
    """``(lattice_type, error, payload, version)`` per key of a ``getv`` reply."""
    if not body:
        raise WireError("getv reply: no meta frame")
    meta = bytes(body[0])
    payloads = iter(body[1:])
    out = []
    off = 0
    try:
        for _ in range(nkeys):
            ltype, err, vlen = meta[off], meta[off + 1], meta[off + 2]
            version = meta[off + 3 : off + 3 + vlen]
            off += 3 + vlen
            payload = next(payloads) if err in (NO_ERROR, MAPPED) else b""
            out.append((ltype, err, payload, version))
    except (IndexError, StopIteration):
        raise WireError("getv reply: truncated") from None
    if off != len(meta) or next(payloads, None) is not None:
        raise WireError("getv reply: trailing data")
    return out


def reply_put(rid: bytes, errors: Sequence[int]) -> list[bytes]:
    return [OP_PUT, rid, OK, bytes(errors)]


def reply_json(op: bytes, rid: bytes, obj: Mapping[str, Any]) -> list[bytes]:
    return [op, rid, OK, json.dumps(obj, separators=(",", ":")).encode()]


def reply_error(op: bytes, rid: bytes, message: str) -> list[bytes]:
    return [op, rid, ERROR, message.encode()]


def decode_reply(frames: Sequence[bytes]) -> tuple[bytes, bytes, list[bytes]]:
    """``(op, rid, body)`` of a reply; raise :class:`WireError` on an error reply."""
    if len(frames) < 3:
        raise WireError(f"cache reply too short ({len(frames)} frames)")
    op, rid, status = bytes(frames[0]), bytes(frames[1]), bytes(frames[2])
    if status == ERROR:
        msg = bytes(frames[3]).decode(errors="replace") if len(frames) > 3 else "?"
        raise WireError(f"cache rejected {op.decode(errors='replace')}: {msg}")
    if status != OK:
        raise WireError(f"cache reply has bad status {status[:16]!r}")
    return op, rid, list(frames[3:])


def decode_get_body(body: Sequence[bytes], nkeys: int) -> list[tuple[int, int, bytes]]:
    if len(body) != 2 * nkeys:
        raise WireError(f"get reply: expected {2 * nkeys} frames, got {len(body)}")
    out = []
    for i in range(0, len(body), 2):
        hdr = body[i]
        if len(hdr) != 2:
            raise WireError("get reply: bad header")
        out.append((hdr[0], hdr[1], body[i + 1]))
    return out
