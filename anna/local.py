"""Local-mode KVS: ``python -m anna.local --config c.yml [--seed HOST:PORT]``.

Starts one routing process and ``cfg.kvs.shards`` storage shard processes as its
children, restarts a child that dies unexpectedly, and stops them all on SIGTERM or
SIGINT. Children get ``PR_SET_PDEATHSIG`` so they die even if this process is killed
with SIGKILL (no orphans). Only the configured ports are bound (by the children):
routing ``routing_port``, shard t ``shard_base_port+t`` (requests),
``gossip_base_port+t`` (gossip) and ``shard_base_port+t+100`` (cache subscriptions).
``--seed`` joins an existing cluster through its routing.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import signal
import subprocess
import sys
import time

from cloudburst.shared.config import load_config
from cloudburst.shared.processes import SERVER_ENV

log = logging.getLogger(__name__)


def _pdeathsig() -> None:
    try:
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m anna.local")
    parser.add_argument("--config", help="YAML config (cloudburst.shared.config)")
    parser.add_argument("--seed", action="append", default=[], help="routing to join")
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    logging.basicConfig(
        level=cfg.log_level, format="%(asctime)s %(levelname)s anna.local %(message)s"
    )
    import os

    env = {**os.environ, **SERVER_ENV}
    common = ["--config", args.config] if args.config else []
    specs: dict[str, list[str]] = {
        "routing": [sys.executable, "-m", "anna.routing", *common]
        + [a for s in args.seed for a in ("--seed", s)],
    }
    for t in range(cfg.kvs.shards):
        specs[f"shard{t}"] = [sys.executable, "-m", "anna.shard", *common, "--shard", str(t)]
    children: dict[str, subprocess.Popen[bytes]] = {}
    restarts: dict[str, list[float]] = {}
    stopping = False

    def start(name: str) -> None:
        children[name] = subprocess.Popen(
            specs[name], env=env, stdin=subprocess.DEVNULL, preexec_fn=_pdeathsig
        )

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for name in specs:
        start(name)
    log.info(
        "KVS on %s: routing :%d, %d shard(s) from :%d (pids %s)",
        cfg.ip,
        cfg.kvs.routing_port,
        cfg.kvs.shards,
        cfg.kvs.shard_base_port,
        {n: p.pid for n, p in children.items()},
    )
    try:
        while not stopping:
            time.sleep(0.1)
            for name, proc in list(children.items()):
                if proc.poll() is not None and not stopping:
                    recent = [t for t in restarts.get(name, []) if time.monotonic() - t < 30]
                    if len(recent) >= 5:
                        log.error("%s keeps dying (exit %s); giving up", name, proc.returncode)
                        stopping = True
                        break
                    log.warning("%s exited with %s; restarting it", name, proc.returncode)
                    recent.append(time.monotonic())
                    restarts[name] = recent
                    start(name)
    finally:
        for proc in children.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 5
        for proc in children.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
