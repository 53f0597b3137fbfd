"""Helpers for tests that run the real local launcher (``cloudburst local ...``) on a
cluster in a temporary directory on free ports: never ``.local/``, never the default
ports. Every helper has a timeout; :func:`cleanup` stops whatever a test left."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cloudburst import local
from cloudburst.client.client import CloudburstConnection
from cloudburst.shared.config import Config
from cloudburst.shared.processes import wait_until

ROOT = Path(__file__).resolve().parents[2]


def launcher_config(run_dir: Path, workers: int = 2, **sections: Any) -> tuple[Config, Path]:
    """A resolved config on free ports in ``run_dir``, written to ``run_dir``/../."""
    cfg = local.free_port_config(
        run_dir,
        workers=workers,
        scheduler={"heartbeat_timeout_s": 2.0, "call_timeout_s": 20.0},
        executor={"workers": workers, "base_port": 0, "heartbeat_period_s": 0.25},
        **sections,
    )
    cfg = local.resolve(cfg)
    path = local.write_config(cfg, run_dir.parent / f"{run_dir.name}.yml")
    return cfg, path


def clean_env() -> dict[str, str]:
    """The environment without the user's CLOUDBURST_* overrides."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CLOUDBURST_")}


def cli(*args: str, timeout: float = 120.0, env: dict[str, str] | None = None) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "cloudburst", "local", *args],
        cwd=ROOT,
        env=clean_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def connect(cfg: Config, timeout: float = 5.0) -> CloudburstConnection:
    return CloudburstConnection(
        cfg.ip, cfg.ip, port=cfg.scheduler.port, timeout=timeout, connect_timeout=timeout
    )


def cleanup(cfg: Config) -> None:
    """Stop the cluster of ``cfg`` (by its run dir) and check nothing is left."""
    try:
        local.stop(cfg, out=lambda _: None)
    finally:
        left = local.cluster_pids(cfg)
        for pid in left:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
    wait_until(lambda: not local.cluster_pids(cfg), 10, "the cluster's processes to exit")
    assert not left, f"processes left after stop: {left}"


@contextmanager
def launched(run_dir: Path, workers: int = 2, **sections: Any) -> Iterator[Config]:
    """A cluster started by the real launcher (supervisor and all), always stopped::

    with launched(tmp_path / "run") as cfg:
        conn = connect(cfg)
        ...
        local.status_lines(cfg)   # every process: pid, state, restarts
    """
    cfg, path = launcher_config(run_dir, workers=workers, **sections)
    try:
        started = cli("start", "--config", str(path))
        assert started.returncode == 0, started.stdout + started.stderr
        yield cfg
    finally:
        cleanup(cfg)
