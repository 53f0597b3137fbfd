"""Fixtures shared by the whole suite.

``procs``: a :class:`ProcessGroup` whose processes are always stopped when the test
ends (pass or fail); the test fails if one of them is still alive afterwards.

The user's ``CLOUDBURST_*`` variables (config file, ports, run directory of their own
cluster) are dropped for the session: they would win over every test's config and
point test servers and clients at the user's cluster.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudburst.shared.processes import ProcessGroup

# tests/cluster needs docker and the image: scripts/test-cluster.sh sets CB_CLUSTER_TESTS=1.
collect_ignore = [] if os.environ.get("CB_CLUSTER_TESTS") == "1" else ["cluster"]

for _name in [k for k in os.environ if k.startswith("CLOUDBURST_")]:
    del os.environ[_name]

# Test clusters live in deep pytest directories, so their ipc sockets go to the short
# fallback (cache.protocol.socket_dir); a killed test node cannot remove its own. Every
# process of the session puts them under this directory instead of /tmp, and the
# session removes it at the end.
_SOCKET_ROOT = tempfile.mkdtemp(prefix="cbt-", dir="/tmp")
os.environ["CLOUDBURST_SOCKET_ROOT"] = _SOCKET_ROOT
atexit.register(shutil.rmtree, _SOCKET_ROOT, True)


@pytest.fixture(autouse=True)
def _process_security() -> Iterator[None]:
    """A test that makes this process a CURVE server (``security.server_security``)
    must not make the next test's in-process tools (anna.admin) use its keys."""
    from cloudburst.shared import security

    saved = security._PROCESS[0]
    yield
    security._PROCESS[0] = saved


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[ProcessGroup]:
    group = ProcessGroup(log_dir=tmp_path / "logs")
    try:
        yield group
    finally:
        group.stop_all()
    leaked = [p.name for p in group.procs.values() if p.alive()]
    assert not leaked, f"processes still alive after the test: {leaked}"


@pytest.fixture
def shm_dir() -> Iterator[Path]:
    """A private directory in /dev/shm for shared-memory segments, removed afterwards."""
    if not os.path.isdir("/dev/shm"):
        pytest.fail("/dev/shm is needed for shared-memory values")
    d = Path("/dev/shm") / f"cbtest-{os.getpid()}-{os.urandom(4).hex()}"
    d.mkdir()
    yield d
    for f in d.iterdir():
        f.unlink()
    d.rmdir()
