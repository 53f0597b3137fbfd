"""Local mode: start, stop, inspect and reset a cluster on this host.

``cloudburst local start|stop|status|reset|logs`` (also ``python -m cloudburst.local
...`` and the ``scripts/*-cloudburst-local.sh`` wrappers; see :mod:`cloudburst.cli`).

``start`` checks every port the cluster will bind (failing at once, naming the port
and the program holding it), writes the effective configuration to
``<run_dir>/config.yml``, starts one detached supervisor (:mod:`cloudburst.supervisor`,
its PID in ``<run_dir>/cluster.json``) which starts and restarts the KVS, the
scheduler and the executor node, and waits until the scheduler sees every executor
worker. A process that exits while the cluster starts fails the start within seconds,
naming the process and printing the end of its log, and nothing is left running.

``stop`` stops the supervisor (which stops its children in order), sweeps anything
left from a crash, removes sockets and state files and **keeps the KVS data**: the
next ``start`` serves every object, function and DAG again (WAL replay). Only
``start --fresh`` and ``reset`` delete data, and say what they delete.

A start after a crash (any process killed with SIGKILL, the supervisor included)
needs no cleanup: leftovers of the previous run (processes started with this run
directory's config, PID and state files, ipc sockets) are removed first.

The run directory is ``run_dir`` of the config (default ``.local`` in the repository),
or ``--run-dir`` / ``CLOUDBURST_RUN_DIR``; ``kvs.data_dir`` and ``cache.ipc_dir`` left
at their defaults follow it (``<run_dir>/kvs``, ``<run_dir>/ipc``). Ports (defaults,
see ``cloudburst/shared/config.py``): KVS routing 6450, shard t 6200+t (gossip 6250+t,
cache subscriptions 6300+t), scheduler 5000; executor workers ``executor.base_port+i``
(0: random ports).

Tests and benchmarks use :func:`free_port_config` (every port free, never the
defaults), :func:`write_config` and :func:`wait_ready`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cache.protocol import socket_dir
from cloudburst.shared.config import Config, load_config, replace
from cloudburst.shared.processes import SERVER_ENV, port_open
from cloudburst.supervisor import read_json, state_dir, write_json_atomic

ROOT = Path(__file__).resolve().parent.parent
DEFAULTS = Config()
CACHE_PORT_OFFSET = 100  # anna.shard: cache subscriptions on shard_base_port + t + 100
#: How long a start waits for the previous run's leftovers to exit.
SWEEP_GRACE_S = 5.0


class StartFailed(Exception):
    """The cluster did not come up; the message says why (printed by the CLI)."""


# -- configuration -----------------------------------------------------------------


def resolve(cfg: Config, run_dir: str | os.PathLike[str] | None = None) -> Config:
    """``cfg`` with absolute paths: relative ones are relative to the repository;
    ``kvs.data_dir`` and ``cache.ipc_dir`` left at their defaults move under the run
    directory (so ``--run-dir /tmp/x`` keeps everything in ``/tmp/x``)."""
    run = Path(run_dir) if run_dir is not None else Path(cfg.run_dir)
    run = (run if run.is_absolute() else ROOT / run).resolve()

    def under(value: str, default: str, leaf: str) -> str:
        if value == default:
            return str(run / leaf)
        path = Path(value)
        return str(path if path.is_absolute() else (ROOT / path).resolve())

    return replace(
        cfg,
        run_dir=str(run),
        kvs={"data_dir": under(cfg.kvs.data_dir, DEFAULTS.kvs.data_dir, "kvs")},
        cache={"ipc_dir": under(cfg.cache.ipc_dir, DEFAULTS.cache.ipc_dir, "ipc")},
        security={"keys_dir": under(cfg.security.keys_dir, DEFAULTS.security.keys_dir, "keys")},
    )


def client_keys_dir(cfg: Config) -> str | None:
    """Where a client of this (resolved) cluster finds its keys: None without CURVE."""
    if cfg.security.curve != "true":
        return None
    return cfg.security.keys_dir or str(Path(cfg.run_dir) / "keys")


def ensure_keys(cfg: Config, out: Callable[[str], None] = print) -> None:
    """With CURVE on, generate the cluster's keys if its keys directory has none."""
    keys = client_keys_dir(cfg)
    if keys and not (Path(keys) / "cluster.key_secret").exists():
        from cloudburst.shared.security import generate_keys

        generate_keys(keys)
        out(f"generated CURVE keys in {keys} (cluster, client, authorized_clients/)")


def config_path(cfg: Config) -> Path:
    return Path(cfg.run_dir) / "config.yml"


def _cluster_file(cfg: Config) -> Path:
    return Path(cfg.run_dir) / "cluster.json"


def write_config(cfg: Config, path: str | os.PathLike[str]) -> Path:
    """Write ``cfg`` as YAML (what ``--config`` reads)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    return out


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
        metrics={"base_port": 0},  # random ports, recorded in <run_dir>/metrics/
    )
    return replace(base, **sections) if sections else base


# -- ports ---------------------------------------------------------------------------


def cluster_ports(cfg: Config) -> list[tuple[int, str]]:
    """Every TCP port the cluster binds, with what binds it. Executor worker ports are
    not here: a worker whose port is taken binds a random one (see :func:`start`)."""
    kv = cfg.kvs
    ports = [(kv.routing_port + r, "KVS routing") for r in range(max(1, kv.routing_threads))]
    for t in range(kv.shards):
        ports += [
            (kv.shard_base_port + t, f"KVS shard {t}"),
            (kv.gossip_base_port + t, f"KVS shard {t} gossip"),
            (kv.shard_base_port + t + CACHE_PORT_OFFSET, f"KVS shard {t} cache subscriptions"),
        ]
    ports.append((cfg.scheduler.port, "scheduler"))
    return ports


def port_bindable(ip: str, port: int) -> bool:
    """Whether a server could bind ``ip:port`` now (as ours do: with SO_REUSEADDR, so
    connections of a stopped run in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((ip, port))
        except OSError:
            return False
        return True


def _socket_inodes(port: int) -> set[str]:
    """Inodes of the sockets listening on ``port`` (any address, IPv4 or IPv6)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) > 9 and parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(parts[9])
    return inodes


def port_holders(port: int) -> list[tuple[int, str]]:
    """``(pid, command line)`` of the processes listening on ``port``, as far as
    ``/proc`` lets this user see them (empty when it does not)."""
    inodes = _socket_inodes(port)
    if not inodes:
        return []
    found = []
    for pid, _ in _processes():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                found.append((pid, _cmdline(pid)))
                break
    return found


def busy_ports(cfg: Config) -> list[str]:
    """One line per port of the cluster that cannot be bound, naming who holds it."""
    out = []
    for port, what in cluster_ports(cfg):
        if port_bindable(cfg.ip, port):
            continue
        holders = port_holders(port)
        who = (
            ", ".join(f"pid {pid} ({_short(cmd)})" for pid, cmd in holders)
            if holders
            else "a process this user cannot see"
        )
        out.append(f"port {port} ({what}) on {cfg.ip} is in use by {who}")
    return out


# -- processes -----------------------------------------------------------------------


def _processes() -> Iterator[tuple[int, bytes]]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    yield int(entry), f.read()
            except OSError:
                continue


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def _short(cmd: str, width: int = 80) -> str:
    cmd = " ".join(cmd.split())
    return cmd if len(cmd) <= width else cmd[: width - 3] + "..."


def alive(pid: int) -> bool:
    """Whether ``pid`` runs. A zombie does not, but a process whose main thread is
    a zombie while its other threads still exit does: it may still hold its sockets."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for tid in tasks or [str(pid)]:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                    return True
        except (OSError, IndexError):
            continue
    return False


def cluster_pids(cfg: Config) -> list[int]:
    """Every live process started for this run directory: each one's command line
    names its ``config.yml`` (the supervisor, the roles, shards, cache, workers)."""
    marker = str(config_path(cfg)).encode()
    me = os.getpid()
    found = [
        pid
        for pid, cmd in _processes()
        if marker in cmd and pid != me and _started_with(cmd, marker) and alive(pid)
    ]
    return found + [p for p in _legacy_pids(cfg) if p not in found]


def _started_with(cmdline: bytes, config: bytes) -> bool:
    """Whether a command line has ``--config <config>`` (an editor or ``tail`` of the
    file does not)."""
    args = cmdline.split(b"\0")
    return any(a == b"--config" and b == config for a, b in zip(args, args[1:], strict=False))


def _legacy_pids(cfg: Config) -> list[int]:
    """Role processes recorded by the launcher before the supervisor existed
    (``{"processes": [{"name", "pid"}]}``, started with a relative config path)."""
    data = read_json(_cluster_file(cfg))
    if not data or not isinstance(data.get("processes"), list):
        return []
    pids = []
    for entry in data["processes"]:
        pid = entry.get("pid") if isinstance(entry, dict) else None
        if isinstance(pid, int) and alive(pid) and "config.yml" in _cmdline(pid):
            pids.append(pid)
    return pids


def supervisor_pid(cfg: Config) -> int | None:
    """The recorded supervisor's PID if it still runs (and is ours, not a reused PID)."""
    data = read_json(_cluster_file(cfg))
    if not data or not isinstance(data.get("supervisor"), int):
        return None
    pid = int(data["supervisor"])
    return pid if pid in cluster_pids(cfg) else None


def _kill_all(pids: list[int], grace: float) -> None:
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    for pid in pids:
        if alive(pid):
            _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _clean_run_files(cfg: Config) -> list[str]:
    """Remove PID/state files and ipc sockets of a run (never data or logs)."""
    removed = []
    for path in (_cluster_file(cfg), state_dir(cfg.run_dir)):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(str(path))
        elif path.exists():
            path.unlink(missing_ok=True)
            removed.append(str(path))
    for ipc in {Path(cfg.cache.ipc_dir), Path(socket_dir(cfg.cache.ipc_dir))}:
        if not ipc.is_dir():
            continue
        for sock in ipc.iterdir():
            if sock.is_socket() or sock.suffix == ".sock":
                sock.unlink(missing_ok=True)
                removed.append(str(sock))
    short = Path(socket_dir(cfg.cache.ipc_dir))
    if short != Path(cfg.cache.ipc_dir).absolute() and short.is_dir():
        try:
            short.rmdir()  # the short fallback (cache.protocol.socket_dir), once empty
        except OSError:
            pass
    return removed


# -- start ---------------------------------------------------------------------------


def start(
    cfg: Config,
    timeout: float = 60.0,
    fresh: bool = False,
    out: Callable[[str], None] = print,
) -> None:
    """Start the cluster of ``cfg`` (resolved) and wait until it serves calls.

    Raises :class:`StartFailed` saying why, with nothing left running."""
    if supervisor_pid(cfg) is not None:
        raise StartFailed(
            f"a local cluster is already running in {cfg.run_dir} (pid "
            f"{supervisor_pid(cfg)}); stop it first with ./scripts/stop-cloudburst-local.sh"
        )
    leftovers = cluster_pids(cfg)
    if leftovers:
        out(f"stopping {len(leftovers)} process(es) left from a previous run: {leftovers}")
        _kill_all(leftovers, SWEEP_GRACE_S)
    _clean_run_files(cfg)
    busy = busy_ports(cfg)
    if busy:
        raise StartFailed(
            "cannot start, "
            + "\n  ".join(busy)
            + "\nStop that program or choose other ports (--config, CLOUDBURST_<SECTION>__<FIELD>)."
        )
    if cfg.executor.base_port:
        for i in range(cfg.executor.workers):
            port = cfg.executor.base_port + i
            if not port_bindable(cfg.ip, port):
                out(f"note: executor port {port} is taken; worker {i} will bind a random port")
    if fresh:
        for line in wipe_data(cfg):
            out(f"--fresh: deleted {line}")
    ensure_keys(cfg, out)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = write_config(cfg, config_path(cfg))
    log_dir = run_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / "supervisor.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cloudburst.supervisor", "--config", str(path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **SERVER_ENV},
            cwd=ROOT,
            start_new_session=True,  # detached: outlives this command and its terminal
        )
    write_json_atomic(
        _cluster_file(cfg),
        {"supervisor": proc.pid, "config": str(path), "started": time.time()},
    )
    try:
        _wait_started(cfg, proc, timeout)
    except BaseException:  # StartFailed, or Ctrl-C while waiting
        # Nothing was served yet: no need for the ordered stop, just stop it all now.
        _kill_all([proc.pid, *cluster_pids(cfg)], grace=1.0)
        proc.poll()
        _kill_all(cluster_pids(cfg), grace=1.0)
        _clean_run_files(cfg)
        raise
    proc.returncode = 0  # detached on purpose: no ResourceWarning for an unwaited child


def _wait_started(cfg: Config, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: object = "nothing answered yet"
    while True:
        if proc.poll() is not None:
            raise StartFailed(
                f"the supervisor (pid {proc.pid}) exited with {proc.returncode} during start"
                + _tail(Path(cfg.run_dir) / "logs" / "supervisor.log")
            )
        exited = _exited_during_start(cfg)
        if exited:
            raise StartFailed(exited)
        try:
            if port_open(cfg.ip, cfg.kvs.routing_port) and port_open(cfg.ip, cfg.scheduler.port):
                wait_ready(cfg, cfg.executor.workers, timeout=0.0, attempt_timeout=0.5)
                return
        except TimeoutError as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise StartFailed(f"the cluster was not ready within {timeout:g}s ({last})")
        time.sleep(0.1)


def _exited_during_start(cfg: Config) -> str | None:
    for name, info, _depth in walk_state(cfg):
        if info.get("last_exit"):
            pid = info.get("last_pid") or ""
            log = info.get("log")
            return (
                f"{name}{f' (pid {pid})' if pid else ''} exited during start: "
                f"{info['last_exit']}" + (_tail(Path(log)) if log else "")
            )
    return None


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return f"\nlast lines of {path}:\n" + "\n".join("    " + t for t in text)


def wait_ready(cfg: Config, workers: int, timeout: float, attempt_timeout: float = 2.0) -> None:
    """Wait until the scheduler at ``cfg.ip:cfg.scheduler.port`` sees ``workers`` live
    executor workers (at least one attempt); raises ``TimeoutError`` saying what is
    missing."""
    from cloudburst.client.client import CloudburstConnection

    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            conn = CloudburstConnection(
                cfg.ip,
                cfg.ip,
                local=True,
                timeout=attempt_timeout,
                port=cfg.scheduler.port,
                connect_timeout=attempt_timeout,
                keys_dir=client_keys_dir(cfg),
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
        if time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    raise TimeoutError(f"the cluster was not ready within {timeout}s ({last})")


def free_hint(cfg: Config) -> str | None:
    """How a client finds a scheduler that is not on the default port."""
    if cfg.scheduler.port == DEFAULTS.scheduler.port:
        return None
    return (
        f"The scheduler listens on port {cfg.scheduler.port}: pass port={cfg.scheduler.port} "
        f"or export CLOUDBURST_SCHEDULER__PORT={cfg.scheduler.port}."
    )


# -- stop, reset ---------------------------------------------------------------------


def stop(cfg: Config, out: Callable[[str], None] = print) -> int:
    """Stop every process of the cluster; keep the data. Returns how many processes
    were running."""
    sup = supervisor_pid(cfg)
    stopped = 0
    if sup is not None:
        stopped = len(cluster_pids(cfg))
        _signal(sup, signal.SIGTERM)
        # The supervisor stops the executor, the scheduler, then the KVS (each up to 8 s).
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and alive(sup):
            time.sleep(0.05)
    leftovers = cluster_pids(cfg)
    if leftovers:
        stopped = max(stopped, len(leftovers))
        _kill_all(leftovers, SWEEP_GRACE_S)
    removed = _clean_run_files(cfg)
    if not stopped:
        out(
            "no local cluster running; nothing to stop"
            + (" (stale files removed)" if removed else "")
        )
    else:
        out(f"stopped the local cluster ({stopped} processes); data kept in {cfg.kvs.data_dir}")
    return stopped


def wipe_data(cfg: Config) -> list[str]:
    """Delete the KVS data (objects, functions, DAGs) and the logs of a stopped cluster;
    returns what was deleted."""
    deleted = []
    for path in (Path(cfg.kvs.data_dir), Path(cfg.run_dir) / "logs"):
        if path.exists():
            size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            shutil.rmtree(path, ignore_errors=True)
            deleted.append(f"{path} ({size} bytes)")
    return deleted


def reset(cfg: Config, out: Callable[[str], None] = print) -> bool:
    """Delete everything the cluster stored; refused (False) while it runs."""
    running = cluster_pids(cfg)
    if running:
        out(
            f"the local cluster in {cfg.run_dir} is running ({len(running)} processes); "
            "stop it first with ./scripts/stop-cloudburst-local.sh"
        )
        return False
    deleted = wipe_data(cfg) + _clean_run_files(cfg)
    for line in deleted:
        out(f"deleted {line}")
    if not deleted:
        out(f"nothing to delete in {cfg.run_dir}")
    return True


# -- status --------------------------------------------------------------------------


def walk_state(cfg: Config) -> Iterator[tuple[str, dict[str, Any], int]]:
    """``(name, info, depth)`` for every supervised process, from the state files:
    the supervisor's children, then each child's own children (anna.local's routing
    and shards, executor.node's cache and workers) when its state file is current."""
    states = state_dir(cfg.run_dir)
    top = read_json(states / "supervisor.json")
    if top is None:
        return
    for name, info in top.get("children", {}).items():
        yield name, info, 1
        sub = read_json(states / f"{name}.json")
        if sub is None or sub.get("pid") != info.get("pid"):
            continue  # not written yet by this incarnation
        for child, cinfo in sub.get("children", {}).items():
            yield f"{name}/{child}", cinfo, 2


@dataclass(frozen=True)
class StatusLine:
    name: str
    pid: int | None
    state: str
    restarts: int
    last_exit: str | None
    depth: int


def status_lines(cfg: Config) -> list[StatusLine]:
    """The supervision tree as recorded now (empty when no cluster runs)."""
    sup = supervisor_pid(cfg)
    if sup is None:
        return []
    lines = [StatusLine("supervisor", sup, "running", 0, None, 0)]
    for name, info, depth in walk_state(cfg):
        pid = info.get("pid")
        state = str(info.get("state", "?"))
        if state == "running" and (not isinstance(pid, int) or not alive(pid)):
            state = "exited"  # between its exit and the supervisor's next poll
        lines.append(
            StatusLine(
                name.rsplit("/", 1)[-1],
                pid if isinstance(pid, int) else None,
                state,
                int(info.get("restarts", 0)),
                info.get("last_exit"),
                depth,
            )
        )
    return lines


def format_status(lines: list[StatusLine]) -> str:
    rows = [f"{'process':22s} {'pid':>7s}  {'state':8s} {'restarts':>8s}  last exit"]
    for line in lines:
        name = "  " * line.depth + line.name
        pid = str(line.pid) if line.pid else "-"
        rows.append(
            f"{name:22s} {pid:>7s}  {line.state:8s} {line.restarts:8d}  {line.last_exit or ''}"
        )
    return "\n".join(rows)


def status(cfg: Config, out: Callable[[str], None] = print) -> int:
    """Print the tree; 0 when every process runs, 1 when not running, 2 when degraded."""
    lines = status_lines(cfg)
    if not lines:
        stale = cluster_pids(cfg)
        out(
            f"not running ({cfg.run_dir})"
            + (f"; {len(stale)} leftover process(es): {stale}" if stale else "")
        )
        return 1
    out(format_status(lines))
    return 0 if all(line.state == "running" for line in lines) else 2


def main(argv: list[str] | None = None) -> int:
    """``python -m cloudburst.local ARGS`` is ``cloudburst local ARGS``."""
    from cloudburst.cli import main as cli_main

    return cli_main(["local", *(sys.argv[1:] if argv is None else argv)], "python -m cloudburst")


if __name__ == "__main__":
    sys.exit(main())
