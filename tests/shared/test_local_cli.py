"""The local launcher's pieces that need no cluster: paths, port checks (naming the
holder), the CLI's commands on a stopped cluster, and the installed console script."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cloudburst import local
from cloudburst.cli import main
from cloudburst.shared.config import Config, load_config
from cloudburst.supervisor import write_json_atomic

ROOT = Path(__file__).resolve().parents[2]


def test_run_dir_moves_default_paths_along(tmp_path: Path) -> None:
    cfg = local.resolve(Config(), tmp_path / "run")
    assert cfg.run_dir == str(tmp_path / "run")
    assert cfg.kvs.data_dir == str(tmp_path / "run" / "kvs")
    assert cfg.cache.ipc_dir == str(tmp_path / "run" / "ipc")
    # Without a run dir: .local in the repository, whatever the current directory.
    default = local.resolve(Config())
    assert default.run_dir == str(ROOT / ".local")
    assert default.kvs.data_dir == str(ROOT / ".local" / "kvs")
    # Explicit paths are kept (made absolute).
    explicit = local.resolve(
        load_config(None, env={}, kvs={"data_dir": "/srv/kvs"}), tmp_path / "run"
    )
    assert explicit.kvs.data_dir == "/srv/kvs"


def test_run_dir_from_the_environment(tmp_path: Path) -> None:
    cfg = local.resolve(load_config(None, env={"CLOUDBURST_RUN_DIR": str(tmp_path)}))
    assert (cfg.run_dir, cfg.kvs.data_dir) == (str(tmp_path), str(tmp_path / "kvs"))


def test_every_bound_port_is_checked() -> None:
    cfg = load_config(None, env={}, kvs={"shards": 2, "routing_threads": 2})
    ports = dict(local.cluster_ports(cfg))
    assert set(ports) == {6450, 6451, 6200, 6201, 6250, 6251, 6300, 6301, 5000}
    assert ports[5000] == "scheduler" and ports[6301] == "KVS shard 1 cache subscriptions"


def test_a_busy_port_names_the_program_holding_it(tmp_path: Path) -> None:
    cfg = local.free_port_config(tmp_path)
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", cfg.scheduler.port))
        sock.listen()
        assert not local.port_bindable(cfg.ip, cfg.scheduler.port)
        assert [pid for pid, _ in local.port_holders(cfg.scheduler.port)] == [os.getpid()]
        busy = local.busy_ports(cfg)
    assert len(busy) == 1
    assert f"port {cfg.scheduler.port} (scheduler)" in busy[0]
    # The holder's command line, as /proc shows it (pytest's, or an xdist worker's).
    own = Path(f"/proc/{os.getpid()}/cmdline").read_bytes().split(b"\0")[0].decode()
    assert f"pid {os.getpid()} ({own}" in busy[0]
    assert local.busy_ports(cfg) == []


def test_commands_on_a_stopped_cluster(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["local", "status", "--run-dir", str(run)]) == 1
    assert "not running" in capsys.readouterr().out
    # Stale files of a crashed run: removed by stop, which says so.
    write_json_atomic(run / "cluster.json", {"supervisor": 999999999})
    (run / "ipc").mkdir()
    (run / "ipc" / "cache-x.sock").touch()
    assert main(["local", "stop", "--run-dir", str(run)]) == 0
    assert "nothing to stop (stale files removed)" in capsys.readouterr().out
    assert not (run / "cluster.json").exists() and not list((run / "ipc").iterdir())
    # reset says what it deletes, and only deletes data and logs.
    (run / "kvs").mkdir()
    (run / "kvs" / "wal").write_bytes(b"x" * 10)
    assert main(["local", "reset", "--run-dir", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"deleted {run / 'kvs'} (10 bytes)" in out
    assert not (run / "kvs").exists() and (run / "ipc").exists()
    assert main(["local", "reset", "--run-dir", str(run)]) == 0
    assert "nothing to delete" in capsys.readouterr().out


def test_legacy_yes_no_arguments_are_ignored_with_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["local", "stop", "--run-dir", str(tmp_path), "y"]) == 0
    err = capsys.readouterr().err
    assert "y/n arguments to stop are not needed here and were ignored (y)" in err
    assert main(["local", "stop", "--run-dir", str(tmp_path), "bogus"]) == 2
    assert "unexpected argument(s) bogus" in capsys.readouterr().err


def test_logs_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "scheduler.log").write_text("one\ntwo\nthree\n")
    assert main(["local", "logs", "--run-dir", str(tmp_path), "scheduler", "-n", "2"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == ["two", "three"]
    assert main(["local", "logs", "--run-dir", str(tmp_path), "nope"]) == 2


@pytest.mark.parametrize(
    "argv",
    [
        [str(Path(sys.executable).parent / "cloudburst"), "local", "--help"],
        [sys.executable, "-m", "cloudburst", "local", "start", "--help"],
        [sys.executable, "-m", "cloudburst.local", "status", "--help"],
    ],
)
def test_entry_points_run(argv: list[str]) -> None:
    if not Path(argv[0]).exists():
        pytest.fail(f"{argv[0]} is not installed: run scripts/ensure-env.sh (pyproject changed)")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd="/")
    assert done.returncode == 0, done.stderr
    assert "Usage:" in done.stdout


def test_stop_sweeps_a_cluster_recorded_by_the_old_launcher(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "--config", ".local/config.yml"]
    )
    try:
        write_json_atomic(
            tmp_path / "cluster.json", {"processes": [{"name": "kvs", "pid": old.pid}]}
        )
        assert main(["local", "stop", "--run-dir", str(tmp_path)]) == 0
        assert "stopped the local cluster (1 processes)" in capsys.readouterr().out
        assert old.wait(timeout=10) == -15
    finally:
        old.kill()
        old.wait(timeout=10)


def test_only_processes_started_with_the_config_count(tmp_path: Path) -> None:
    cfg = local.resolve(Config(), tmp_path)
    path = str(local.config_path(cfg))
    ours = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "--config", path])
    viewer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", path])
    try:
        assert local.cluster_pids(cfg) == [ours.pid]
    finally:
        for proc in (ours, viewer):
            proc.kill()
            proc.wait(timeout=10)
