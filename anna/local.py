"""Local-mode KVS: ``python -m anna.local --config c.yml [--seed HOST:PORT]``.

Starts one routing process and ``cfg.kvs.shards`` storage shard processes as its
children, restarts a child that dies unexpectedly, and stops them all on SIGTERM or
SIGINT. Before stopping, if other live nodes exist, the node departs cleanly
(:func:`anna.admin.depart_and_wait`: tombstone through its own routing, then its shards
hand every key off), for at most ``kvs.depart_timeout_s`` (0: never); a second signal
cuts the wait short. A single-node cluster just stops. Children run in their own
process group, so a terminal's Ctrl-C or a group-wide SIGTERM reaches only this
launcher, which then stops them in order; they also get ``PR_SET_PDEATHSIG`` so they
die even if this process is killed with SIGKILL (no orphans). Only the configured ports are bound (by the children):
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
from collections.abc import Callable

from anna.admin import depart_and_wait
from cloudburst.shared.config import Config, load_config
from cloudburst.shared.processes import SERVER_ENV

log = logging.getLogger(__name__)


def _pdeathsig() -> None:
    try:
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def clean_depart(cfg: Config, abort: Callable[[], bool]) -> None:
    """Hand this node's keys to the other live nodes (bounded), logging what happened."""
    kv = cfg.kvs
    if kv.depart_timeout_s <= 0:
        return
    own = [f"tcp://{cfg.ip}:{kv.shard_base_port + t}" for t in range(kv.shards)]
    node_id = f"{cfg.ip}:{kv.shard_base_port}"
    try:
        out = depart_and_wait(
            f"tcp://{cfg.ip}:{kv.routing_port}",
            node_id,
            own,
            cfg.ip,
            timeout=kv.depart_timeout_s,
            settle=max(1.0, 3 * kv.gossip_period_s),
            abort=abort,
        )
    except Exception:
        log.exception("clean depart of %s failed; stopping anyway", node_id)
        return
    if out.status == "alone":
        log.info("no other live node: stopping without a hand-off")
    elif out.status == "departed":
        log.info(
            "node %s departed (%d shard(s) of other nodes take its keys) in %.2f s",
            node_id,
            out.others,
            out.seconds,
        )
    else:
        log.warning(
            "clean depart of %s did not complete (%s%s) after %.2f s; stopping anyway",
            node_id,
            out.status,
            f": {out.detail}" if out.detail else "",
            out.seconds,
        )


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
            specs[name],
            env=env,
            stdin=subprocess.DEVNULL,
            preexec_fn=_pdeathsig,
            process_group=0,  # a group-wide signal must not stop them before the depart
        )

    signals = 0
    gave_up = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping, signals
        stopping = True
        signals += 1

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
                        stopping = gave_up = True
                        break
                    log.warning("%s exited with %s; restarting it", name, proc.returncode)
                    recent.append(time.monotonic())
                    restarts[name] = recent
                    start(name)
        if signals and not gave_up and children["routing"].poll() is None:
            clean_depart(cfg, abort=lambda: signals > 1)
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
