"""User values as KVS lattices.

A value stored with ``put_object`` (or ``user_lib.put``) becomes an
:class:`~lattices.LWWPairLattice` whose value bytes are
:func:`cloudburst.shared.serializer.to_bytes` of the object; a Python ``set`` becomes a
:class:`~lattices.SetLattice` of its serialized elements. A lattice passed in is
stored as is. :func:`from_lattice` is the inverse (an LWW lattice whose bytes are not
a Cloudburst value, written as is through Anna's API, comes back as the lattice).

>>> from_lattice(to_lattice({"a": 1}))
{'a': 1}
"""

from __future__ import annotations

from typing import Any

from cloudburst.shared import serializer
from cloudburst.shared.errors import SerializationError
from lattices import Lattice, LWWPairLattice, OrderedSetLattice, SetLattice, make_timestamp


def to_lattice(obj: Any) -> Lattice[Any]:
    """The lattice that stores ``obj`` in the KVS."""
    if isinstance(obj, Lattice):
        return obj
    if isinstance(obj, set | frozenset):
        return SetLattice(serializer.to_bytes(item) for item in obj)
    return LWWPairLattice(make_timestamp(), serializer.to_bytes(obj))


def from_lattice(lattice: Lattice[Any] | None) -> Any:
    """The user value a lattice read from the KVS holds (``None`` stays ``None``)."""
    if lattice is None:
        return None
    if isinstance(lattice, LWWPairLattice):
        try:
            return serializer.from_bytes(lattice.value)
        except SerializationError:
            # Not a Cloudburst value: a lattice written as is (Anna's API, e.g.
            # ``put(key, LWWPairLattice(0, cp.dumps(x)))``): returned as is.
            return lattice
    if isinstance(lattice, SetLattice):
        return {serializer.from_bytes(item) for item in lattice.reveal()}
    if isinstance(lattice, OrderedSetLattice):
        return [serializer.from_bytes(item) for item in lattice.reveal()]
    # Other lattices (DDTs, causal, priority) are returned as lattices.
    return lattice
