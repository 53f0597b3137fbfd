"""The docstring examples of the lattice modules run as written."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "lattices.causal",
    "lattices.codec",
    "lattices.lww",
    "lattices.maps",
    "lattices.priority",
    "lattices.scalars",
    "lattices.sets",
    "lattices.vector_clock",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
