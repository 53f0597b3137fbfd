"""A function invocation's view of DDT streams: ``cb.stream(...)``.

A :class:`DdtSession` scopes stream names to one DAG call (the stream id is
``<scope>/<name>``), knows the node cache's ipc address and which other node caches
take part in the call, and finishes the invocation's streams when the function ends:
a writer that returned without sealing is sealed, one that raised is aborted (its
readers get :class:`StreamWriterFailed` instead of waiting).

    session = DdtSession(ipc_address, scope="call-42", cfg=cfg.ddt)
    out = session.stream("words", DMap, writers=2)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from cloudburst.ddt.stream import Stream, StreamError
from lattices.ddt import DDTLattice

log = logging.getLogger(__name__)


class DdtSession:
    """Opens stream handles for one invocation (see the module docstring)."""

    def __init__(
        self,
        address: str,
        scope: str,
        cfg: Any = None,
        peers: Iterable[str] = (),
        member: str | None = None,
        directory: Any = None,
    ) -> None:
        self.address = address
        self.scope = scope
        self.batch_bytes = int(getattr(cfg, "batch_bytes", 64 * 1024))
        self.batch_ms = float(getattr(cfg, "batch_ms", 10))
        self.peers = [p for p in peers if p]
        self.member = member
        self.directory = directory
        self.handles: dict[str, Stream] = {}

    def sid(self, name: str) -> str:
        return f"{self.scope}/{name}"

    def stream(self, name: str, kind: type[DDTLattice], writers: int = 0, **options: Any) -> Stream:
        """Create or open the stream ``name`` of this call (the same handle on reopen)."""
        if not name or "/" in name:
            raise StreamError(f"bad stream name {name!r} (non-empty, no '/')")
        handle = self.handles.get(name)
        if handle is not None:
            if handle.kind is not kind:
                raise StreamError(
                    f"stream {name!r} is a {handle.kind.__name__}, not a {kind.__name__}"
                )
            if writers and not handle.writers:
                handle.writers = int(writers)
            return handle
        options.setdefault("batch_bytes", self.batch_bytes)
        options.setdefault("batch_ms", self.batch_ms)
        options.setdefault("push_to", self.peers)
        options.setdefault("pull_from", self.peers)
        if self.directory is not None:
            options.setdefault("directory", self.directory)
        if self.member:
            options.setdefault("member", f"{self.member}-{len(self.handles)}")
        handle = Stream(self.address, self.sid(name), kind, writers, **options)
        self.handles[name] = handle
        return handle

    def finish(self, error: BaseException | str | None = None) -> None:
        """End of the invocation: seal (or, on ``error``, abort) writers; close readers."""
        for handle in self.handles.values():
            try:
                if handle.is_writer and not handle.sealed:
                    if error is None:
                        handle.seal()
                    else:
                        handle.abort(f"the writing function failed: {error}")
            except Exception:
                log.exception("ddt: finishing stream %s failed", handle.name)
            handle.close()
        self.handles.clear()
