"""The user library every function receives as its first argument.

``put(key, value)`` / ``get(key_or_keys)`` read and write the KVS (through the worker's
state client, i.e. the node cache when there is one); ``getid()`` is this worker's
message address; ``send(dest_id, bytes)`` pushes bytes to another function's
``getid()``; ``recv(timeout=0)`` returns the ``(sender_id, bytes)`` pairs received so
far, waiting up to ``timeout`` seconds for the first one.

    def ping(lib, dest):
        lib.send(dest, b"hello")
        return lib.getid()
"""

from __future__ import annotations

from typing import Any

import zmq

from cloudburst.shared import security
from cloudburst.shared.values import from_lattice, to_lattice


class UserLibrary:
    """Per-worker user library (see the module docstring)."""

    def __init__(
        self, state: Any, ctx: zmq.Context[Any], inbox: zmq.Socket[Any], my_id: str
    ) -> None:
        self._state = state
        self._ctx = ctx
        self._inbox = inbox
        self._id = my_id
        self._push: dict[str, zmq.Socket[Any]] = {}

    def put(self, key: str, value: Any) -> bool:
        """Store ``value`` under ``key`` (a ``set`` as a Set lattice, else LWW)."""
        put_value = getattr(self._state, "put_value", None)  # the node cache: a large
        if put_value is not None:  # value goes through a shared-memory segment
            return bool(put_value(key, value))
        return bool(self._state.put(key, to_lattice(value)))

    def get(self, key: str | list[str], deserialize: bool = True) -> Any:
        """The value under ``key`` (``None`` if absent), or ``{key: value}`` for a list."""
        if isinstance(key, list | tuple):
            got = self._state.get(list(key))
            return {k: (from_lattice(v) if deserialize else v) for k, v in got.items()}
        lattice = self._state.get([key]).get(key)
        return from_lattice(lattice) if deserialize else lattice

    def getid(self) -> str:
        """This worker's message address, for other functions' ``send``."""
        return self._id

    def send(self, dest: str, data: bytes) -> None:
        """Send ``data`` to the function whose ``getid()`` is ``dest``."""
        if isinstance(data, str):
            data = data.encode()
        sock = self._push.get(dest)
        if sock is None:
            sock = security.client_socket(self._ctx, zmq.PUSH, security.current())
            sock.setsockopt(zmq.LINGER, 1000)
            sock.connect(dest)
            self._push[dest] = sock
        sock.send_multipart([self._id.encode(), bytes(data)])

    def recv(self, timeout: float = 0.0) -> list[tuple[str, bytes]]:
        """Messages received so far; waits up to ``timeout`` s for the first one."""
        out: list[tuple[str, bytes]] = []
        if timeout > 0 and not self._inbox.poll(int(timeout * 1000)):
            return out
        while True:
            try:
                frames = self._inbox.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return out
            if len(frames) == 2:
                out.append((frames[0].decode(errors="replace"), frames[1]))

    def stream(self, name: str, kind: Any, writers: int = 0, **options: Any) -> Any:
        """The DDT stream ``name`` of this DAG call (create or open; see ``cloudburst.ddt``)."""
        session = getattr(self, "_ddt", None)
        if session is None:
            from cloudburst.ddt import StreamError

            raise StreamError("DDT streams need the node cache (cache.enabled) and a call")
        return session.stream(name, kind, writers, **options)

    def close(self) -> None:
        for sock in self._push.values():
            sock.close(linger=0)
        self._push.clear()
