"""Streaming DAGs: the executor-side hook that turns generators into stream producers.

An executor worker calls :meth:`DagStreams.invoke` instead of calling the user function
itself. It

* gives the user library a :class:`DdtSession` scoped to the call, so
  ``cb.stream(name, kind, ...)`` works inside functions, and finishes it when the
  function ends (unsealed writers sealed, or aborted if the function raised);
* replaces :class:`StreamArg` arguments by reader handles: the function iterates
  them (``for x in items``) while the upstream function is still producing;
* when a function returns a **generator** and has downstream functions, creates the
  function's output stream (a :class:`DLog`), forwards a :class:`StreamArg` to the
  downstream functions *at once* (so they start now, not when this one ends), then
  drives the generator: each ``yield`` is appended to the stream (batched by size and
  time), and the stream is sealed at the end (aborted on an exception: readers raise).
  The result is :data:`STREAMED`: the worker must not forward anything else;
* frees the call's streams on the node cache when the DAG's last function ends.

Streaming needs a node cache (``CB_NODE_CACHE``) and downstream functions on other
workers (a worker runs one function at a time: a producer and its consumer on the same
worker could not overlap and would deadlock on back-pressure); otherwise a generator's
items are simply collected into a list and passed on whole.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import zmq

from cache import streams as hubproto
from cloudburst.ddt.session import DdtSession
from cloudburst.ddt.stream import Stream, StreamAbandoned, _context
from lattices import SetLattice
from lattices.ddt import DLog

log = logging.getLogger(__name__)


class _Streamed:
    def __repr__(self) -> str:
        return "STREAMED"


#: What :meth:`DagStreams.invoke` returns when the result went out as a stream.
STREAMED = _Streamed()


@dataclass(frozen=True)
class StreamArg:
    """A DAG argument that is a stream: the reader opens ``sid`` at its node cache,
    pulling from ``sources`` (the producers' node caches)."""

    sid: str
    sources: tuple[str, ...] = ()
    kind: str = "DLog"


class DagStreams:
    """Per-worker streaming state (see the module docstring)."""

    def __init__(self, cache_address: str | None, cfg: Any = None, state: Any = None) -> None:
        self.cache_address = cache_address or None
        self.cfg = getattr(cfg, "ddt", None)
        self.state = state
        self._peer: str | None = None
        self._free_sock: zmq.Socket[Any] | None = None
        #: ``ddt-peers/...`` keys this worker announced (the worker deletes them once
        #: their calls are long over: see ``executor.worker``); appended from any thread.
        self.announced: list[str] = []

    @property
    def enabled(self) -> bool:
        return self.cache_address is not None

    def peer_address(self) -> str:
        """This node cache's peer address (asked once; '' if unknown)."""
        if self._peer is None:
            info = None
            ask = getattr(self.state, "info", None)
            if callable(ask):
                try:
                    info = ask()
                except Exception:
                    log.exception("ddt: cache info failed")
            self._peer = str((info or {}).get("peer_address", ""))
        return self._peer

    def session(self, call_id: str, member: str = "") -> DdtSession:
        if self.cache_address is None:
            raise RuntimeError("DDT streams need the node cache (cache.enabled)")
        directory = (
            KvsDirectory(self.state, self.peer_address(), self.announced) if self.state else None
        )
        return DdtSession(
            self.cache_address, call_id, self.cfg, member=member or None, directory=directory
        )

    def invoke(
        self,
        call: Callable[..., Any],
        user_lib: Any,
        args: list[Any],
        call_id: str,
        function: str,
        downstream_locations: Sequence[str],
        my_address: str,
        forward: Callable[[Any], None],
        dag: Any = None,
    ) -> Any:
        """Call ``call(user_lib, *args)`` with streams wired in (see the module doc)."""
        if not self.enabled:
            return _plain(call, user_lib, [_materialize(a) for a in args], downstream_locations)
        # Calls that touch no stream pay for one small object, not a session.
        lazy = _CallStreams(self, call_id, function)
        readers: list[Stream] = []
        if any(isinstance(a, StreamArg) for a in args):
            args = [self._open_arg(lazy.get(), a, readers) for a in args]
        previous = getattr(user_lib, "_ddt", None)
        user_lib._ddt = lazy
        error: BaseException | None = None
        try:
            result = call(user_lib, *args)
            if inspect.isgenerator(result):
                streamable = bool(downstream_locations) and my_address not in downstream_locations
                if streamable:
                    consumers = len(downstream_locations)
                    self._produce(lazy.get(), function, result, forward, consumers)
                    result = STREAMED
                else:
                    result = list(result)
            return result
        except BaseException as exc:
            error = exc
            raise
        finally:
            user_lib._ddt = previous
            if lazy.session is not None:
                lazy.session.finish(error)
                for r in readers:
                    r.close()
                if not downstream_locations and _single_sink(dag):
                    self.free(call_id)

    def _open_arg(self, session: DdtSession, arg: Any, readers: list[Stream]) -> Any:
        if not isinstance(arg, StreamArg):
            return arg
        reader = Stream(
            session.address,
            arg.sid,
            DLog,
            pull_from=[s for s in arg.sources if s],
            batch_bytes=session.batch_bytes,
            batch_ms=session.batch_ms,
            keep=False,
        )
        readers.append(reader)
        return reader

    def _produce(
        self,
        session: DdtSession,
        function: str,
        gen: Any,
        forward: Callable[[Any], None],
        readers: int = 1,
    ) -> None:
        name = f"{function}.out"
        # Every downstream function reads the whole stream: the hub keeps entries until
        # all of them have read them (and holds the writer while they lag behind).
        out = session.stream(name, DLog, writers=1, readers=readers, retain=False, directory=None)
        forward(StreamArg(session.sid(name), (self.peer_address(),)))
        append = out.append
        try:
            for item in gen:
                append(item)
        except StreamAbandoned:
            # The consumer stopped early (returned or failed): stop quietly, the
            # consumer's outcome is the call's outcome.
            log.info("[%s] %s: its consumer left; stopping the generator", session.scope, function)
            gen.close()
        out.seal()

    def free(self, call_id: str) -> None:
        """Drop the call's streams at the node cache (and the caches it talked to)."""
        if self.cache_address is None:
            return
        if self._free_sock is None:
            sock = _context().socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 1000)
            sock.connect(self.cache_address)
            self._free_sock = sock
        try:
            self._free_sock.send_multipart([hubproto.OP_FREE, f"{call_id}/".encode()], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    def close(self) -> None:
        if self._free_sock is not None:
            self._free_sock.close()
            self._free_sock = None


class KvsDirectory:
    """Which node caches hold writers of a named stream, kept in the KVS.

    ``ddt-peers/<stream id>`` is a Set lattice of cache peer addresses: a writer adds
    its node cache's (set union merges concurrent writers); a reader on another node
    looks it up and pulls from those caches, so named streams work across nodes.
    Announced keys are appended to ``announced`` (when given) so their owner can delete
    them after the call.
    """

    PREFIX = "ddt-peers/"

    def __init__(self, state: Any, peer: str, announced: list[str] | None = None) -> None:
        self.state = state
        self.peer = peer
        self.announced = announced

    def announce(self, sid: str) -> None:
        if self.peer:
            self.state.put(self.PREFIX + sid, SetLattice({self.peer.encode()}))
            if self.announced is not None:
                self.announced.append(self.PREFIX + sid)

    def lookup(self, sid: str) -> set[str]:
        lattice = self.state.get([self.PREFIX + sid]).get(self.PREFIX + sid)
        if lattice is None:
            return set()
        return {p.decode() for p in lattice.reveal()} - {self.peer}


class _CallStreams:
    """``cb.stream`` for one invocation: the session is made on first use."""

    __slots__ = ("owner", "call_id", "function", "session")

    def __init__(self, owner: DagStreams, call_id: str, function: str) -> None:
        self.owner = owner
        self.call_id = call_id
        self.function = function
        self.session: DdtSession | None = None

    def get(self) -> DdtSession:
        if self.session is None:
            self.session = self.owner.session(self.call_id, member=self.function)
        return self.session

    def stream(self, name: str, kind: Any, writers: int = 0, **options: Any) -> Stream:
        return self.get().stream(name, kind, writers, **options)


def _single_sink(dag: Any) -> bool:
    """Whether the DAG ends in one function (then its end is the call's end). With
    several sinks, one ending says nothing of the others: the streams then expire."""
    if dag is None:
        return True
    sources = {link.source for link in dag.connections}
    return sum(1 for f in dag.functions if f not in sources) <= 1


def _materialize(arg: Any) -> Any:
    if isinstance(arg, StreamArg):
        raise RuntimeError("a stream argument reached a worker without a node cache")
    return arg


def _plain(call: Callable[..., Any], user_lib: Any, args: list[Any], downs: Sequence[str]) -> Any:
    result = call(user_lib, *args)
    if inspect.isgenerator(result):
        return list(result)
    return result
