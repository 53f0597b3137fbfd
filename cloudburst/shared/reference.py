"""References to KVS keys, passed as call arguments.

An executor resolves a reference before calling the function: the argument the
function sees is the stored value (deserialized) or, with ``deserialize=False``, the
raw lattice read from the KVS.

>>> from cloudburst.shared.reference import CloudburstReference
>>> ref = CloudburstReference("weights", deserialize=True)
>>> ref.key
'weights'
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CloudburstReference:
    """A KVS key whose value an executor substitutes for this argument."""

    key: str
    deserialize: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key:
            raise TypeError(f"a reference key must be a non-empty string, not {self.key!r}")
