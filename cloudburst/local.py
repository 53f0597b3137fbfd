"""Local-mode launcher: ``python -m cloudburst.local start|stop|status``.

``start`` writes the effective configuration to ``<run_dir>/config.yml``, starts the
KVS (``anna.local``), one scheduler (``scheduler.server``) and one executor node
(``executor.node``: its cache and workers) as background processes, records their
PIDs in ``<run_dir>/cluster.json``, waits until the scheduler sees every executor
worker, and prints how to connect. ``stop`` stops them by recorded PID (their process
groups, so children go too) and removes the run directory's sockets, state files and
the KVS data (``--keep-data`` keeps it).

Ports (defaults, see ``cloudburst/shared/config.py``): KVS routing 6450, shard t
6200+t (gossip 6250+t), scheduler 5000; executor workers bind random ports (or
``executor.base_port + i`` when set) and report them in their heartbeats.

Tests and benchmarks use :func:`free_port_config` (every port free, never the
defaults), :func:`write_config` and :func:`wait_ready`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from cloudburst.shared.config import Config, load_config, replace
from cloudburst.shared.processes import SERVER_ENV, port_open, wait_until

ROOT = Path(__file__).resolve().parent.parent


def _state_file(cfg: Config) -> Path:
    return Path(cfg.run_dir) / "cluster.json"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _spawn(name: str, module: str, cfg_path: Path, log_dir: Path, *args: str) -> int:
    import subprocess

    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"{name}.log", "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, "--config", str(cfg_path), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **SERVER_ENV},
            start_new_session=True,
        )
    return proc.pid


def start(cfg: Config, timeout: float) -> int:
    run_dir = Path(cfg.run_dir)
    state_path = _state_file(cfg)
    if state_path.exists():
        state = json.loads(state_path.read_text())
        if any(_pid_alive(p["pid"]) for p in state["processes"]):
            print(
                f"a local cluster is already running (see {state_path}); stop it first with "
                "./scripts/stop-cloudburst-local.sh",
                file=sys.stderr,
            )
            return 1
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir / "config.yml"
    cfg_path.write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    log_dir = run_dir / "logs"
    processes: list[dict[str, Any]] = []
    for name, module in (
        ("kvs", "anna.local"),
        ("scheduler", "scheduler.server"),
        ("executor", "executor.node"),
    ):
        pid = _spawn(name, module, cfg_path, log_dir)
        processes.append({"name": name, "pid": pid})
        state_path.write_text(json.dumps({"processes": processes}, indent=2))
    try:
        wait_until(lambda: port_open(cfg.ip, cfg.kvs.routing_port), timeout, "KVS routing")
        wait_until(lambda: port_open(cfg.ip, cfg.scheduler.port), timeout, "scheduler")
        _wait_ready(cfg, timeout)
    except Exception as exc:
        print(f"the local cluster did not come up: {exc}", file=sys.stderr)
        for proc in processes:
            if not _pid_alive(proc["pid"]):
                print(f"  {proc['name']} exited; see {log_dir / proc['name']}.log", file=sys.stderr)
        stop(cfg)
        return 1
    print(f"Cloudburst is running locally (logs in {log_dir}).")
    print("Connect from Python (.venv/bin/python):")
    print("    from cloudburst.client.client import CloudburstConnection")
    print(f"    local_cloud = CloudburstConnection('{cfg.ip}', '{cfg.ip}', local=True)")
    print("Stop it with ./scripts/stop-cloudburst-local.sh")
    return 0


def _wait_ready(cfg: Config, timeout: float) -> None:
    wait_ready(cfg, cfg.executor.workers, timeout)


def wait_ready(cfg: Config, workers: int, timeout: float) -> None:
    """Wait until the scheduler at ``cfg.ip:cfg.scheduler.port`` sees ``workers`` live
    executor workers; raises ``TimeoutError`` saying what is missing."""
    from cloudburst.client.client import CloudburstConnection

    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            conn = CloudburstConnection(
                cfg.ip,
                cfg.ip,
                local=True,
                timeout=2.0,
                port=cfg.scheduler.port,
                connect_timeout=2.0,
            )
            try:
                count = conn.status().get("executors", 0)
                if count >= workers:
                    return
                last = f"{count} of {workers} executor workers registered"
            finally:
                conn.close()
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"the cluster was not ready within {timeout}s ({last})")


def free_port_config(
    run_dir: str | os.PathLike[str],
    workers: int = 3,
    shards: int = 1,
    ip: str = "127.0.0.1",
    **sections: object,
) -> Config:
    """A configuration whose every port was free a moment ago (tests, benchmarks):
    the same shape as local mode, never the default ports."""
    from cloudburst.shared.processes import free_port, free_port_block

    run = Path(run_dir)
    shard_base = free_port_block(101 + shards, ip)  # requests, gossip (+50), cache (+100)
    base = load_config(
        None,
        env={},
        ip=ip,
        run_dir=str(run),
        kvs={
            "routing_port": free_port(ip),
            "shard_base_port": shard_base,
            "gossip_base_port": shard_base + 50,  # inside the checked block
            "shards": shards,
            "data_dir": str(run / "kvs"),
            "wal_fsync": "never",
        },
        scheduler={"port": free_port(ip)},
        executor={"workers": workers, "base_port": 0},
        cache={"ipc_dir": str(run / "ipc")},
    )
    return replace(base, **sections) if sections else base


def write_config(cfg: Config, path: str | os.PathLike[str]) -> Path:
    """Write ``cfg`` as YAML (what ``--config`` reads)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    return out


def stop(cfg: Config, keep_data: bool = False) -> int:
    state_path = _state_file(cfg)
    if not state_path.exists():
        print("no local cluster recorded; nothing to stop")
        return 0
    state = json.loads(state_path.read_text())
    pids = [p["pid"] for p in state["processes"]]
    for pid in pids:
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_pid_alive(p) for p in pids):
        time.sleep(0.05)
    for pid in pids:
        _signal_group(pid, signal.SIGKILL)
    for pid in pids:
        try:
            os.waitpid(pid, 0)
        except (ChildProcessError, OSError):
            pass
    state_path.unlink(missing_ok=True)
    ipc_dir = Path(cfg.cache.ipc_dir)
    if ipc_dir.exists():
        for sock in ipc_dir.iterdir():
            sock.unlink(missing_ok=True)
    # Local mode is a sandbox: its KVS data goes with it (the README example registers
    # the same DAG name on every run), unless asked to keep it.
    data_dir = Path(cfg.kvs.data_dir)
    if not keep_data and data_dir.exists():
        shutil.rmtree(data_dir, ignore_errors=True)
    print(f"stopped {len(pids)} process group(s)")
    return 0


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def status(cfg: Config) -> int:
    state_path = _state_file(cfg)
    if not state_path.exists():
        print("not running")
        return 1
    state = json.loads(state_path.read_text())
    ok = True
    for proc in state["processes"]:
        alive = _pid_alive(proc["pid"])
        ok &= alive
        print(f"{proc['name']:10s} pid {proc['pid']:7d} {'running' if alive else 'DEAD'}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cloudburst.local")
    parser.add_argument("command", choices=("start", "stop", "status"))
    parser.add_argument("--config", help="YAML config file (defaults + env overrides apply)")
    parser.add_argument("--executors", type=int, help="executor worker processes")
    parser.add_argument("--shards", type=int, help="KVS storage shards")
    parser.add_argument("--timeout", type=float, default=60.0, help="readiness timeout (s)")
    parser.add_argument(
        "--keep-data", action="store_true", help="stop: keep the KVS data (default: removed)"
    )
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    cfg = load_config(args.config)
    if args.executors is not None:
        cfg = replace(cfg, executor={"workers": args.executors})
    if args.shards is not None:
        cfg = replace(cfg, kvs={"shards": args.shards})
    if args.command == "start":
        return start(cfg, args.timeout)
    if args.command == "stop":
        return stop(cfg, args.keep_data)
    return status(cfg)


if __name__ == "__main__":
    sys.exit(main())
