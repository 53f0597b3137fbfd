"""The local cluster's supervisor: ``python -m cloudburst.supervisor --config <run_dir>/config.yml``.

``cloudburst.local start`` runs one per cluster, detached, and records its PID in
``<run_dir>/cluster.json``. It owns the top-level role processes and restarts what
dies, with the back-off of :mod:`cloudburst.supervision`::

    supervisor                  logs/supervisor.log, state/supervisor.json
    |- kvs        anna.local    logs/kvs.log,        state/kvs.json
    |  |- routing, shard0..       (anna.local restarts them)
    |- scheduler  scheduler.server  logs/scheduler.log
    |- executor   executor.node logs/executor.log,   state/executor.json
       |- cache, worker0..        (executor.node restarts them)

Every supervisor of the tree uses :class:`Supervised` below: one restart policy, one
log line per exit (with the exit status), one JSON state file (pid, state, restarts,
last exit of every child) rewritten atomically on every change, which
``cloudburst local status`` reads. Every child gets ``PR_SET_PDEATHSIG``, so a
supervisor killed with SIGKILL takes its subtree with it; the next ``start`` sweeps
anything that survived.

SIGTERM/SIGINT stops the children (executor, scheduler, then the KVS, so in-flight
writes land) and exits 0.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from cloudburst.supervision import Child, RestartPolicy

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
#: How often a supervisor looks at its children (a restart waits at most this long
#: beyond its back-off).
POLL_S = 0.1
#: Top-level children in start order (stopped in reverse).
ROLES = (("kvs", "anna.local"), ("scheduler", "scheduler.server"), ("executor", "executor.node"))


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A ``preexec_fn`` that makes the child receive ``sig`` when its parent dies."""
    parent = os.getpid()

    def preexec() -> None:  # between fork and exec, in the child
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig))
        except OSError:
            return
        if os.getppid() != parent:  # the parent died before prctl: nobody would signal
            os.kill(os.getpid(), sig)

    return preexec


def terminate(
    procs: Sequence[Any], grace: float, clock: Callable[[], float] = time.monotonic
) -> None:
    """SIGTERM every live process of ``procs`` (Popen-like), wait for them together
    up to ``grace`` seconds, then SIGKILL and reap whichever is left."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = clock() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(0.05, deadline - clock()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` so that a reader sees the old or the new file, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def own_log_path() -> str | None:
    """The file this process's stdout goes to (its children inherit it), if any."""
    try:
        target = os.readlink("/proc/self/fd/1")
    except OSError:
        return None
    return target if target.startswith("/") and os.path.isfile(target) else None


@dataclass
class Spec:
    """How to start one supervised process."""

    argv: Sequence[str]
    env: Mapping[str, str] | None = None
    log_path: Path | None = None  # None: inherit this process's stdout/stderr
    pdeathsig: int = signal.SIGKILL
    after_start: Callable[[subprocess.Popen[bytes]], None] | None = None


@dataclass
class Supervised:
    """The shell of one supervisor: starts its children, restarts them by the policy,
    logs every exit, keeps ``state_path`` current. Call :meth:`poll` in a loop."""

    name: str
    state_path: Path | None = None
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    extra: dict[str, Any] = field(default_factory=dict)
    specs: dict[str, Spec] = field(default_factory=dict)
    children: dict[str, Child] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    stopping: bool = False
    clock: Callable[[], float] = time.monotonic

    def add(self, name: str, spec: Spec) -> None:
        self.specs[name] = spec
        self.children[name] = Child(name, self.policy)

    def start(self, name: str) -> subprocess.Popen[bytes]:
        spec = self.specs[name]
        out: IO[bytes] | None = None
        if spec.log_path is not None:
            spec.log_path.parent.mkdir(parents=True, exist_ok=True)
            out = open(spec.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            proc = subprocess.Popen(
                list(spec.argv),
                env=dict(spec.env) if spec.env is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT if out else None,
                preexec_fn=die_with_parent(spec.pdeathsig),
                # Own group: a Ctrl-C or group signal reaches the supervisor, which
                # stops children in order.
                process_group=0,
            )
        finally:
            if out is not None:
                out.close()
        self.procs[name] = proc
        self.children[name].started(proc.pid, self.clock())
        self.write_state()
        if spec.after_start is not None:
            spec.after_start(proc)
        return proc

    def start_all(self) -> None:
        for name in self.specs:
            self.start(name)

    def poll(self) -> bool:
        """Reap exits and restart what is due; True if anything changed."""
        changed = False
        for name, proc in list(self.procs.items()):
            code = proc.poll()
            if code is None:
                continue
            del self.procs[name]
            child = self.children[name]
            pid = proc.pid
            decision = child.exited(code, self.clock(), self.stopping)
            changed = True
            if decision.action == "restart":
                log.warning(
                    "%s (pid %d) exited: %s; restarting in %.1fs (restart %d)",
                    name,
                    pid,
                    child.last_exit,
                    decision.delay_s,
                    child.restarts + 1,
                )
            elif decision.action == "fail":
                log.error(
                    "%s (pid %d) exited: %s; crash loop (%s): not restarting it",
                    name,
                    pid,
                    child.last_exit,
                    decision.reason,
                )
        now = self.clock()
        for name, child in self.children.items():
            if not self.stopping and child.due(now):
                changed = True
                try:
                    self.start(name)
                except OSError as exc:  # fork/exec failed: back off as after an exit
                    decision = child.exited(None, now, why=f"could not start: {exc}")
                    log.error("%s: %s (%s)", name, child.last_exit, decision.action)
        if changed:
            self.write_state()
        return changed

    def live(self) -> list[str]:
        return [n for n, p in self.procs.items() if p.poll() is None]

    def failed(self) -> list[str]:
        return [n for n, c in self.children.items() if c.state == "failed"]

    def stop(self, order: Sequence[str] = (), grace: float = 5.0) -> None:
        """SIGTERM the children named in ``order`` one after the other (each waited
        for), then the rest together; SIGKILL whatever outlives ``grace``."""
        self.stopping = True
        batches = [[n] for n in order] + [[n for n in self.procs if n not in order]]
        for batch in batches:
            terminate([self.procs[n] for n in batch if n in self.procs], grace, self.clock)
        self.poll()
        self.write_state()

    def snapshot(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pid": os.getpid(),
            "state": "stopping" if self.stopping else "running",
            "log": own_log_path(),
            "updated": time.time(),
            **self.extra,
            "children": {
                n: {**c.snapshot(), "log": _log_of(self.specs[n])} for n, c in self.children.items()
            },
        }

    def write_state(self) -> None:
        if self.state_path is None:
            return
        try:
            write_json_atomic(self.state_path, self.snapshot())
        except OSError as exc:  # status is a convenience; never die for it
            log.debug("cannot write %s: %s", self.state_path, exc)


def _log_of(spec: Spec) -> str | None:
    return str(spec.log_path) if spec.log_path is not None else own_log_path()


def state_dir(run_dir: str | os.PathLike[str]) -> Path:
    return Path(run_dir) / "state"


def main(argv: list[str] | None = None) -> int:
    from cloudburst.shared.config import load_config
    from cloudburst.shared.processes import SERVER_ENV

    parser = argparse.ArgumentParser(prog="python -m cloudburst.supervisor")
    parser.add_argument("--config", required=True, help="the cluster's config.yml")
    args = parser.parse_args(argv)
    config = str(Path(args.config).resolve())
    cfg = load_config(config)
    from cloudburst.shared import metrics
    from cloudburst.shared.logs import setup_logging

    setup_logging(
        cfg, "supervisor", "supervisor", "%(asctime)s supervisor %(levelname)s: %(message)s"
    )
    run_dir = Path(cfg.run_dir)
    states = state_dir(run_dir)
    sup = Supervised("supervisor", states / "supervisor.json", extra={"run_dir": str(run_dir)})
    env = {**os.environ, **SERVER_ENV}
    for name, module in ROLES:
        extra: list[str] = []
        if module in ("anna.local", "executor.node"):
            extra = ["--state-file", str(states / f"{name}.json")]
        sup.add(
            name,
            Spec(
                [sys.executable, "-m", module, "--config", config, *extra],
                env=env,
                log_path=run_dir / "logs" / f"{name}.log",
                # A SIGTERM lets the role stop its own children in order.
                pdeathsig=signal.SIGTERM,
            ),
        )
    stop_signals = 0

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop_signals
        stop_signals += 1

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    metrics.export_restarts(sup)
    metrics.serve(cfg, "supervisor", "supervisor")
    sup.start_all()
    log.info("supervising %s", {n: p.pid for n, p in sup.procs.items()})
    while not stop_signals:
        sup.poll()
        time.sleep(POLL_S)
    log.info("stopping")
    sup.stop(["executor", "scheduler", "kvs"], grace=8.0)
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
