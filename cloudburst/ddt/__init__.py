"""Differentiable data types: stream state between running functions.

Inside a function (``cb`` is the user library)::

    from cloudburst.ddt import DMap

    out = cb.stream("words", DMap, writers=2)   # create or open, scoped to the DAG call
    out.update("apple", 1); out.flush(); out.seal()

    inp = cb.stream("words", DMap)
    for delta in inp.deltas(timeout=30): ...     # blocks until the next delta or the end
    inp.value()                                  # snapshot now
    inp.wait(timeout=30)                         # final value once all writers sealed

Types: :class:`DLog` (``append``/``extend``), :class:`DCounter` (``add``),
:class:`DMap` (``update``), :class:`DSet` (``add``), :class:`DTensor`
(``contribute``), :class:`DRegister` (``set``). See ``docs/ddt.md``.
"""

from cloudburst.ddt.session import DdtSession
from cloudburst.ddt.stream import Stream, StreamAbandoned, StreamError, StreamWriterFailed
from lattices.ddt import DCounter, DLog, DMap, DRegister, DSet, DTensor

__all__ = [
    "DCounter",
    "DLog",
    "DMap",
    "DRegister",
    "DSet",
    "DTensor",
    "DdtSession",
    "Stream",
    "StreamAbandoned",
    "StreamError",
    "StreamWriterFailed",
]
