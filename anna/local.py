"""Local-mode KVS: ``python -m anna.local --config c.yml [--seed HOST:PORT]``.

Starts one routing process and ``cfg.kvs.shards`` storage shard processes as its
children, restarts a child that dies unexpectedly (the back-off and crash-loop policy
of :mod:`cloudburst.supervision`; ``--state-file`` keeps their pids and restarts in a
JSON file for ``cloudburst local status``), and stops them all on SIGTERM or SIGINT.
Before stopping, if other live nodes exist, the node departs cleanly
(:func:`anna.admin.depart_and_wait`: tombstone through its own routing, then its shards
hand every key off), for at most ``kvs.depart_timeout_s`` (0: never); a second signal
cuts the wait short. A single-node cluster just stops. Children run in their own
process group, so a terminal's Ctrl-C or a group-wide SIGTERM reaches only this
launcher, which then stops them in order; they also get ``PR_SET_PDEATHSIG`` (SIGKILL)
so they die, and free their ports, even if this process is killed with SIGKILL (no
orphans). Only the configured ports are bound (by the children): routing
``routing_port``, shard t ``shard_base_port+t`` (requests), ``gossip_base_port+t``
(gossip) and ``shard_base_port+t+100`` (cache subscriptions). ``--seed`` joins an
existing cluster through its routing.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from anna.admin import depart_and_wait
from cloudburst.shared import metrics
from cloudburst.shared.config import Config, load_config
from cloudburst.shared.logs import setup_logging
from cloudburst.shared.processes import SERVER_ENV
from cloudburst.supervisor import POLL_S, Spec, Supervised

log = logging.getLogger(__name__)


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
    parser.add_argument(
        "--state-file", help="keep this JSON file current with the children's pids and restarts"
    )
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    from cloudburst.shared import security

    security.server_security(cfg)  # this launcher's departs use the cluster key
    setup_logging(cfg, "kvs", "kvs", "%(asctime)s %(levelname)s anna.local %(message)s")
    env = {**os.environ, **SERVER_ENV}
    common = ["--config", args.config] if args.config else []
    sup = Supervised(
        "kvs", Path(args.state_file) if args.state_file else None, extra={"role": "anna.local"}
    )
    # Children get SIGKILL if this process dies: they free their ports at once for the
    # next launcher, and the WAL keeps every acknowledged write.
    sup.add(
        "routing",
        Spec(
            [sys.executable, "-m", "anna.routing", *common]
            + [a for s in args.seed for a in ("--seed", s)],
            env=env,
        ),
    )
    for t in range(cfg.kvs.shards):
        sup.add(
            f"shard{t}",
            Spec([sys.executable, "-m", "anna.shard", *common, "--shard", str(t)], env=env),
        )
    signals = 0

    def stop(signum: int, frame: object) -> None:
        nonlocal signals
        signals += 1

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    metrics.export_restarts(sup)
    metrics.serve(cfg, "kvs", "kvs")
    sup.start_all()
    log.info(
        "KVS on %s: routing :%d, %d shard(s) from :%d (pids %s)",
        cfg.ip,
        cfg.kvs.routing_port,
        cfg.kvs.shards,
        cfg.kvs.shard_base_port,
        {n: p.pid for n, p in sup.procs.items()},
    )
    try:
        while not signals:
            sup.poll()
            if "routing" in sup.failed():
                log.error("routing keeps dying; the KVS stops")
                return 1
            time.sleep(POLL_S)
        if "routing" in sup.live():
            clean_depart(cfg, abort=lambda: signals > 1)
    finally:
        sup.stop(grace=5.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
