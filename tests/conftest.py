"""Fixtures shared by the whole suite.

``procs``: a :class:`ProcessGroup` whose processes are always stopped when the test
ends (pass or fail); the test fails if one of them is still alive afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudburst.shared.processes import ProcessGroup


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[ProcessGroup]:
    group = ProcessGroup(log_dir=tmp_path / "logs")
    try:
        yield group
    finally:
        group.stop_all()
    leaked = [p.name for p in group.procs.values() if p.alive()]
    assert not leaked, f"processes still alive after the test: {leaked}"
