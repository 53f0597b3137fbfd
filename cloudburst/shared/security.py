"""CURVE keys and the one place every ZeroMQ endpoint gets its security settings.

Keys are ZeroMQ certificates (Z85 text, ``name.key`` / ``name.key_secret``, as
``zmq.auth.create_certificates`` writes them)::

    DIR/cluster.key, DIR/cluster.key_secret     the servers' key pair (all processes)
    DIR/client.key,  DIR/client.key_secret      a client's key pair
    DIR/authorized_clients/*.key                 public keys the servers admit

Roles (the same for libzmq sockets and :mod:`anna.zmtp`):

- a socket that *serves* (a bound request socket, or a socket that pushes answers to
  an address named in a request) is the CURVE **server**, with the cluster key pair;
  it admits a client key only if it is in ``authorized_clients/`` (or is the cluster's
  own key: server processes talk to each other with it);
- a socket that *asks* (connects to a server, or binds to receive the answers to its
  own requests) is the CURVE **client**, with its own key pair (a user's client key,
  or the cluster key in a server process) and the cluster public key as server key.

Adding a file to ``authorized_clients/`` admits that client within
``RELOAD_S`` seconds, without a restart; removing it refuses new connections.

Example::

    sec = Security.from_dir("keys", role="client")
    sock = client_socket(ctx, zmq.PUSH, sec)        # CURVE client (or plain if sec is None)
"""

from __future__ import annotations

import ipaddress
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from anna import insecure, zmtp
from cloudburst.shared.errors import CloudburstException

log = logging.getLogger(__name__)

CLUSTER = "cluster"
CLIENT = "client"
AUTHORIZED = "authorized_clients"
RELOAD_S = 1.0
#: The environment variable a client reads its keys directory from (also the config
#: override of ``security.keys_dir``).
KEYS_ENV = "CLOUDBURST_SECURITY__KEYS_DIR"


class SecurityError(CloudburstException):
    """Keys missing, unreadable, or too widely readable; or an insecure setup refused."""


def _z85_decode(text: bytes) -> bytes:
    from zmq.utils import z85

    return bytes(z85.decode(text))


def _check_private(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecurityError(
            f"secret key file {path} is readable by group or others "
            f"(mode {stat.filemode(mode)}): run `chmod 600 {path}`"
        )


def load_public(path: str | os.PathLike[str]) -> bytes:
    """The raw public key in a ``.key`` (or ``.key_secret``) certificate."""
    import zmq.auth

    try:
        public, _ = zmq.auth.load_certificate(os.fspath(path))
    except (OSError, ValueError) as exc:
        raise SecurityError(f"cannot read public key {path}: {exc}") from None
    if public is None:
        raise SecurityError(f"no public key in {path}")
    return _z85_decode(public)


def load_pair(path: str | os.PathLike[str]) -> tuple[bytes, bytes]:
    """(public, secret) raw keys from a ``.key_secret`` certificate, which must not be
    group- or world-readable (SecurityError naming the file otherwise)."""
    import zmq.auth

    p = Path(path)
    try:
        _check_private(p)
        public, secret = zmq.auth.load_certificate(os.fspath(p))
    except FileNotFoundError:
        raise SecurityError(f"secret key file {p} does not exist") from None
    except (OSError, ValueError) as exc:
        raise SecurityError(f"cannot read secret key {p}: {exc}") from None
    if public is None or secret is None:
        raise SecurityError(f"{p} holds no secret key (a .key_secret file is needed)")
    return _z85_decode(public), _z85_decode(secret)


def generate_keys(directory: str | os.PathLike[str], clients: tuple[str, ...] = (CLIENT,)) -> Path:
    """Write a cluster key pair, client key pair(s) and ``authorized_clients/`` (holding
    the clients' public keys) under ``directory``; secret files are mode 600. Existing
    keys are kept (so running it twice does not lock anyone out)."""
    import zmq.auth

    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    authorized = root / AUTHORIZED
    authorized.mkdir(exist_ok=True)
    for name in (CLUSTER, *clients):
        secret = root / f"{name}.key_secret"
        if not secret.exists():
            old = os.umask(0o077)
            try:
                zmq.auth.create_certificates(os.fspath(root), name)
            finally:
                os.umask(old)
        os.chmod(secret, 0o600)
        if name != CLUSTER:
            target = authorized / f"{name}.key"
            if not target.exists():
                target.write_bytes((root / f"{name}.key").read_bytes())
    return root


class KeyPolicy:
    """Which client keys a server admits: the files in ``authorized_clients/``, re-read
    when the directory changes (checked at most every ``RELOAD_S`` seconds), plus the
    cluster's own public key. Thread-safe (the ZAP thread and a shard both ask)."""

    def __init__(self, directory: str | os.PathLike[str], always: tuple[bytes, ...] = ()) -> None:
        self.directory = Path(directory)
        self.always = frozenset(always)
        self._keys: frozenset[bytes] = frozenset()
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        self.reload()

    def _read_stamp(self) -> tuple[int, int]:
        try:
            st = self.directory.stat()
        except OSError:
            return (0, 0)
        return (st.st_mtime_ns, st.st_ino)

    def reload(self) -> None:
        keys: set[bytes] = set()
        stamp = self._read_stamp()
        try:
            entries = sorted(self.directory.iterdir())
        except OSError:
            entries = []
        for path in entries:
            if path.suffix != ".key":
                continue
            try:
                keys.add(load_public(path))
            except SecurityError as exc:
                log.warning("authorized_clients: skipping %s: %s", path, exc)
        with self._lock:
            self._keys = frozenset(keys)
            self._stamp = stamp
            self._checked = time.monotonic()

    def allowed(self, key: bytes) -> bool:
        if key in self.always:
            return True
        now = time.monotonic()
        if now - self._checked >= RELOAD_S:
            self._checked = now
            if self._read_stamp() != self._stamp:
                self.reload()
        return key in self._keys


@dataclass(frozen=True)
class Security:
    """One process's CURVE material. ``public``/``secret``: its own pair (the cluster
    pair in servers, a client pair in clients); ``server_public``: the cluster key;
    ``policy``: the admitted client keys (servers only)."""

    public: bytes
    secret: bytes
    server_public: bytes
    policy: KeyPolicy | None = None
    keys_dir: str = ""
    max_frame: int = 0
    max_per_peer: int = 1024
    handshake_timeout_s: float = 5.0
    _auth: dict[int, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dir(cls, directory: str | os.PathLike[str], role: str = "server") -> Security:
        """Keys from ``directory``: ``role`` "server" (the cluster pair and the
        allowlist) or "client" (``client.key_secret`` and the cluster public key)."""
        root = Path(directory)
        if not root.is_dir():
            raise SecurityError(
                f"keys directory {root} does not exist (create one with "
                f"`cloudburst keys generate {root}`)"
            )
        if role == "server":
            public, secret = load_pair(root / f"{CLUSTER}.key_secret")
            policy = KeyPolicy(root / AUTHORIZED, always=(public,))
            return cls(public, secret, public, policy, keys_dir=os.fspath(root))
        public, secret = load_pair(root / f"{CLIENT}.key_secret")
        server_public = load_public(root / f"{CLUSTER}.key")
        return cls(public, secret, server_public, keys_dir=os.fspath(root))

    # ---- anna.zmtp --------------------------------------------------------------------

    def zmtp_server(self) -> zmtp.Curve:
        """For a :class:`anna.zmtp.ZmtpServer` (CURVE server, the allowlist)."""
        policy = self.policy
        if policy is None:
            raise SecurityError("a client's keys cannot serve (no allowlist)")
        return zmtp.Curve(self.public, self.secret, authorize=policy.allowed)

    def zmtp_client(self) -> zmtp.Curve:
        """For :class:`anna.zmtp.PushConnection` and :class:`anna.zmtp.PullListener`."""
        return zmtp.Curve(self.public, self.secret, server_public=self.server_public)

    # ---- libzmq sockets ----------------------------------------------------------------

    def serve(self, sock: zmq.Socket[Any]) -> None:
        """Make ``sock`` a CURVE server admitting the allowlist (ZAP, per context)."""
        from zmq.utils import z85

        self._authenticator(sock.context)
        sock.curve_server = True
        sock.curve_secretkey = z85.encode(self.secret)
        sock.curve_publickey = z85.encode(self.public)
        if self.max_frame:
            sock.setsockopt(zmq.MAXMSGSIZE, self.max_frame)
        # A peer that does not finish its handshake in time is dropped (libzmq: 30 s).
        sock.setsockopt(zmq.HANDSHAKE_IVL, max(1, int(self.handshake_timeout_s * 1000)))

    def ask(self, sock: zmq.Socket[Any]) -> None:
        """Make ``sock`` a CURVE client proving this process's key."""
        from zmq.utils import z85

        sock.curve_serverkey = z85.encode(self.server_public)
        sock.curve_publickey = z85.encode(self.public)
        sock.curve_secretkey = z85.encode(self.secret)

    def _authenticator(self, ctx: zmq.Context[Any]) -> None:
        if id(ctx) in self._auth:
            return
        from zmq.auth.thread import ThreadAuthenticator

        policy = self.policy
        if policy is None:
            raise SecurityError("a client's keys cannot serve (no allowlist)")
        auth = ThreadAuthenticator(ctx, log=logging.getLogger("cloudburst.zap"))
        auth.start()
        auth.configure_curve_callback("*", credentials_provider=_Provider(policy))
        self._auth[id(ctx)] = auth
        _AUTHS[id(ctx)] = auth

    def stop(self, ctx: zmq.Context[Any]) -> None:
        """Stop the ZAP thread of ``ctx`` (before ``ctx.term()``, which waits for it)."""
        auth = self._auth.pop(id(ctx), None)
        _AUTHS.pop(id(ctx), None)
        if auth is not None:
            auth.stop()


_AUTHS: dict[int, Any] = {}


class _Provider:
    def __init__(self, policy: KeyPolicy) -> None:
        self.policy = policy

    def callback(self, domain: str, key: bytes) -> bool:
        try:
            ok = self.policy.allowed(_z85_decode(key))
        except ValueError:
            return False
        if not ok:
            log.warning("refused a CURVE client key %s", key.decode(errors="replace"))
        return ok


def max_frame_bytes(cfg: Any) -> int:
    """The largest frame a server reads: ``security.max_frame_bytes``, or by default
    room for a PUT of up to twice ``kvs.max_value_bytes`` (so a too large value still
    gets its clear VALUE_TOO_LARGE answer), at most the transport's 2 GiB."""
    explicit = cfg.security.max_frame_bytes
    limit = explicit or max(2 * cfg.kvs.max_value_bytes, cfg.kvs.max_value_bytes + (64 << 20))
    return int(min(zmtp.MAX_MESSAGE, limit))


def zmtp_server_options(
    sec: Security | None, cfg: Any, null_peers: zmtp.NullPeers | None = None
) -> dict[str, Any]:
    """Keyword arguments for :class:`anna.zmtp.ZmtpServer`: CURVE if on, and the
    frame and per-peer limits of ``cfg.security`` (with or without CURVE); ``null_peers``
    (:func:`insecure_clients`) the NULL peers it still serves."""
    sc = cfg.security
    max_frame = max_frame_bytes(cfg)
    return {
        "curve": None if sec is None else sec.zmtp_server(),
        "max_frame": max_frame,
        "max_per_peer": sc.max_connections_per_peer,
        "handshake_timeout": sc.handshake_timeout_s,
        "null_peers": null_peers,
    }


def insecure_clients(
    cfg: Any,
    sec: Security | None,
    what: str,
    request_address: Callable[[insecure.Frames], str | None],
) -> insecure.InsecureClients | None:
    """The NULL peers a KVS server process (``what``: "routing", "shard 0") still
    serves with CURVE on (``kvs.allow_insecure_clients``; None: none), logged loudly.
    SecurityError: a bad ``kvs.insecure_client_networks``."""
    try:
        policy = insecure.from_config(cfg.kvs, sec is not None, request_address)
    except ValueError as exc:
        raise SecurityError(str(exc)) from None
    if policy is not None:
        log.warning(insecure.warning(policy, what))
    elif sec is None and cfg.kvs.allow_insecure_clients:
        log.info("kvs.allow_insecure_clients has no effect: CURVE is off")
    return policy


def server_socket(ctx: zmq.Context[Any], kind: int, sec: Security | None) -> Any:
    """A socket that serves: bound request sockets, and pushers to answer addresses."""
    sock = ctx.socket(kind)
    if sec is not None:
        sec.serve(sock)
    return sock


def client_socket(ctx: zmq.Context[Any], kind: int, sec: Security | None) -> Any:
    """A socket that asks: connects to a server, or binds to receive its answers."""
    sock = ctx.socket(kind)
    if sec is not None:
        sec.ask(sock)
    return sock


def push_socket(ctx: zmq.Context[Any], sec: Security | None, answer: bool) -> Any:
    """A PUSH of a server process: ``answer`` to a reply address named in a request
    (CURVE server), else to another server's bound socket (CURVE client)."""
    return server_socket(ctx, zmq.PUSH, sec) if answer else client_socket(ctx, zmq.PUSH, sec)


def push_key(address: str, answer: bool, sec: Security | None) -> str:
    """The cache key of :func:`push_socket` sockets: one per address and role (just the
    address without CURVE, where both roles are the same plain socket)."""
    return "answer|" + address if answer and sec is not None else address


def refusal(address: str, sec: Security | None, timeout: float) -> str | None:
    """Why the server at ``address`` (a PULL) refuses this side's keys (or lack of
    them), or None if it accepts them or cannot be asked (not a security matter): a
    clear client-side error instead of a silent libzmq retry loop."""
    curve = None if sec is None else sec.zmtp_client()
    try:
        conn = zmtp.PushConnection(address, time.monotonic() + timeout, curve)
    except zmtp.ZmtpRefused as exc:
        return str(exc)
    except (OSError, ValueError):
        return None
    conn.close()
    return None


def term(ctx: zmq.Context[Any]) -> None:
    """``ctx.term()``, after stopping the ZAP thread serving it (if any)."""
    auth = _AUTHS.pop(id(ctx), None)
    if auth is not None:
        auth.stop()
    ctx.term()


# ---- configuration ---------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_PROCESS: list[Security | None] = [None]


def current() -> Security | None:
    """The security of this server process (set by :func:`server_security`), which
    its KVS clients use; None in clients and without CURVE."""
    return _PROCESS[0]


def set_current(sec: Security | None) -> None:
    """Make ``sec`` this process's security (a tool such as the ``cloudburst`` command
    that talks to the KVS directly with a client's keys)."""
    _PROCESS[0] = sec


def default() -> Security | None:
    """This server process's security, else a client's from the environment
    (``$CLOUDBURST_SECURITY__KEYS_DIR``), else None (plain). For tools (anna.admin)."""
    return current() or client_security()


def server_security(cfg: Any) -> Security | None:
    """A server process's security from the config (``cfg.security``): None when CURVE
    is off. Refuses (SecurityError) a non-loopback ``ip`` without CURVE unless the config
    says ``curve: false`` explicitly (then warns loudly at every start). The result is
    also this process's :func:`current` security."""
    sec = _server_security(cfg)
    _PROCESS[0] = sec
    return sec


def _server_security(cfg: Any) -> Security | None:
    sc = cfg.security
    if sc.curve != "true":
        if not is_loopback(cfg.ip):
            if sc.curve != "false":
                raise SecurityError(
                    f"refusing to listen on {cfg.ip} without CURVE keys: set security.curve: "
                    "true and security.keys_dir (see `cloudburst keys generate`), or "
                    "security.curve: false to run an open cluster"
                )
            log.warning(
                "!!! SECURITY: CURVE is OFF (security.curve: false) and %s is not loopback: "
                "anyone who can reach this host can run code on the cluster !!!",
                cfg.ip,
            )
        return None
    keys_dir = sc.keys_dir or os.path.join(cfg.run_dir, "keys")
    sec = Security.from_dir(keys_dir, role="server")
    max_frame = max_frame_bytes(cfg)
    return Security(
        sec.public,
        sec.secret,
        sec.server_public,
        sec.policy,
        keys_dir=sec.keys_dir,
        max_frame=max_frame,
        max_per_peer=sc.max_connections_per_peer,
        handshake_timeout_s=sc.handshake_timeout_s,
    )


def client_security(keys_dir: str | os.PathLike[str] | None = None) -> Security | None:
    """A client's security: ``keys_dir`` or ``$CLOUDBURST_SECURITY__KEYS_DIR``; None
    (plain) when neither is set."""
    directory = keys_dir or os.environ.get(KEYS_ENV) or ""
    if not directory:
        return None
    return Security.from_dir(directory, role="client")
