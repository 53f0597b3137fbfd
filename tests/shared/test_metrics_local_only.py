"""``metrics.local_only``: a deployment config (relative ``run_dir``, e.g. a container
binding 0.0.0.0) serves no metrics unless it sets ``metrics.local_only: false``
(or ``CLOUDBURST_METRICS__LOCAL_ONLY=false``); a local-mode cluster always does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_SCRIPT = r"""
import urllib.request
from cloudburst.shared.config import load_config
from cloudburst.shared import metrics
cfg = load_config(None)
port = metrics.serve(cfg, "scheduler", "scheduler")
if port is not None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert b"process_cpu_seconds_total" in r.read()
print(port)
"""


def _serve(run_dir: str, **env: str) -> str:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDBURST_")}
    base.update(
        CLOUDBURST_RUN_DIR=run_dir, CLOUDBURST_METRICS__BASE_PORT="0", CLOUDBURST_IP="127.0.0.1"
    )
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_deployments_serve_metrics_only_when_asked(tmp_path: Path) -> None:
    assert _serve("relative-run-dir") == "None"  # a deployment: off by default
    assert _serve("relative-run-dir", CLOUDBURST_METRICS__LOCAL_ONLY="false").isdigit()
    assert _serve(str(tmp_path / "run")).isdigit()  # a local-mode cluster: on
    assert _serve(str(tmp_path / "run"), CLOUDBURST_METRICS__ENABLED="false") == "None"
