"""scripts/docker-env.sh with stand-ins for docker and dockerd (no real daemon): a
daemon that does not answer is started, recorded and stopped again; one that answers
is left alone (CI starts on a machine where no daemon runs)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

FAKE_DOCKER = """#!/bin/sh
# 'docker info' answers while the fake daemon's pid file names a live process.
[ "$1" = info ] || exit 0
pid=$(cat "$STATE/dockerd.pid" 2>/dev/null) || exit 1
kill -0 "$pid" 2>/dev/null
"""
FAKE_DOCKERD = """#!/bin/sh
echo $$ > "$STATE/dockerd.pid"
echo started >> "$STATE/starts"
trap 'echo stopped >> "$STATE/starts"; rm -f "$STATE/dockerd.pid"; exit 0' TERM
while :; do sleep 0.1; done
"""


def _run(tmp_path: Path, script: str) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("docker", FAKE_DOCKER), ("dockerd", FAKE_DOCKERD)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "STATE": str(tmp_path),
        "TMPDIR": str(tmp_path),
    }
    prelude = 'apt_install() { command -v "$2" >/dev/null; }\n'
    prelude += f'source "{ROOT}/scripts/docker-env.sh"\n'
    return subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + prelude + script],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_missing_daemon_is_started_and_stopped(tmp_path: Path) -> None:
    out = _run(
        tmp_path,
        'ensure_docker\n[ -n "$DOCKERD_STARTED" ]\ndocker info\nstop_dockerd\n'
        '[ -z "$DOCKERD_STARTED" ]\n! docker info\necho ok\n',
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().endswith("ok")
    assert (tmp_path / "starts").read_text().split() == ["started", "stopped"]


def test_a_running_daemon_is_left_alone(tmp_path: Path) -> None:
    daemon = subprocess.Popen(
        ["sh", "-c", FAKE_DOCKERD], env={**os.environ, "STATE": str(tmp_path)}
    )
    try:
        deadline = 50
        while not (tmp_path / "dockerd.pid").exists() and deadline:
            subprocess.run(["sleep", "0.1"], check=True)
            deadline -= 1
        out = _run(tmp_path, 'ensure_docker\n[ -z "$DOCKERD_STARTED" ]\nstop_dockerd\necho ok\n')
        assert out.returncode == 0, out.stdout + out.stderr
        assert daemon.poll() is None  # still running: not ours to stop
        assert (tmp_path / "starts").read_text().split() == ["started"]
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)
