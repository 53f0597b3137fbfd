"""Function composition latency: ``square(incr(x))`` on Cloudburst and its peers.

Measures, in one run, median and p99 over ``--calls`` (default 1000) calls after
``--warmup`` calls, ``--repeat`` times (default 3; the figures are medians over the
runs), each system with 2 worker processes where it has workers:

(a) ``cloudburst``: a DAG ``incr -> square`` on a local cluster (KVS, scheduler, one
    executor node with 2 workers) on free ports, client with the placement cache
    (``cloudburst``) and without it, every call through the scheduler
    (``cloudburst-scheduled``), and with executors forwarding the chain between two
    workers instead of running it in place (``cloudburst-no-inline``);
(b) ``dask``: distributed ``LocalCluster(n_workers=2, threads_per_worker=1)``,
    ``client.submit(square, client.submit(incr, x)).result()``; and ``ray``:
    ``ray.init(num_cpus=2)``, ``ray.get(square.remote(incr.remote(x)))``; each
    installed into this interpreter with pip if missing, skipped with a message if
    that fails (``--no-install`` skips installing);
(c) ``zmq-floor``: a raw pyzmq relay, client -> broker -> worker -> worker -> client,
    one process each, no work and no serialization beyond the bytes;
(d) ``processpool``: ``concurrent.futures.ProcessPoolExecutor(2)``, the client chains
    the two calls (``pool.submit(square, pool.submit(incr, x).result()).result()``).

Writes ``bench/results/composition.json``, ``composition.md`` and ``composition.png``
(``composition-partial.*`` when ``--only`` picks a subset; ``--out`` names them).
Run: ``.venv/bin/python bench/composition.py [--calls 1000] [--only cloudburst,zmq-floor]``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import multiprocessing as mp
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from plotting import pyplot  # noqa: E402 (bench/, the script's own directory)

RESULTS = ROOT / "bench" / "results"


def incr(x: int) -> int:
    return x + 1


def square(x: int) -> int:
    return x * x


REPEAT = 3  # measured runs per system (--repeat); figures are medians over the runs

Runs = list[list[float]]


def measure(call: Callable[[int], Any], calls: int, warmup: int, check: bool = True) -> Runs:
    """Warm up, then ``REPEAT`` runs of ``calls`` timed calls each (seconds)."""
    for i in range(warmup):
        got = call(i)
        if check and got != (i + 1) ** 2:
            raise AssertionError(f"wrong result {got!r} for x={i}")
    runs = []
    for _ in range(REPEAT):
        out = []
        for i in range(calls):
            t0 = time.perf_counter()
            got = call(i)
            out.append(time.perf_counter() - t0)
            if check and got != (i + 1) ** 2:
                raise AssertionError(f"wrong result {got!r} for x={i}")
        runs.append(out)
    return runs


def _stats(lat: list[float]) -> dict[str, float]:
    s = sorted(lat)
    n = len(s)
    return {
        "median_us": statistics.median(s) * 1e6,
        "p99_us": s[min(n - 1, int(0.99 * n))] * 1e6,
        "mean_us": statistics.fmean(s) * 1e6,
        "min_us": s[0] * 1e6,
    }


def summary(runs: Runs) -> dict[str, Any]:
    """Per-run figures and their medians over the runs (the machine is shared and
    noisy: one disturbed run does not decide the result)."""
    per_run = [_stats(r) for r in runs]
    out: dict[str, Any] = {key: statistics.median(r[key] for r in per_run) for key in per_run[0]}
    out["calls_per_run"] = len(runs[0])
    out["runs"] = per_run
    return out


def median_run(runs: Runs) -> list[float]:
    """The run whose median is the median (for the plot)."""
    return sorted(runs, key=statistics.median)[len(runs) // 2]


# --- (a) Cloudburst ------------------------------------------------------------


def bench_cloudburst(
    calls: int, warmup: int, inline: bool = True, secure: bool = False
) -> dict[str, Runs]:
    """``secure``: the same cluster with CURVE on every endpoint (``cloudburst-curve``,
    the client with the placement cache, as ``cloudburst``)."""
    from cloudburst.client.client import CloudburstConnection
    from cloudburst.local import free_port_config, wait_ready, write_config
    from cloudburst.shared.processes import ProcessGroup
    from cloudburst.shared.security import generate_keys

    run = Path(tempfile.mkdtemp(prefix="cb-bench-"))
    keys = str(generate_keys(run / "keys")) if secure else None
    extra = {"security": {"curve": "true", "keys_dir": keys}} if secure else {}
    cfg = free_port_config(run, workers=2, log_level="WARNING", **extra)
    path = write_config(cfg, run / "config.yml")
    out: dict[str, Runs] = {}
    variants = [("cloudburst", True), ("cloudburst-scheduled", False)]
    if not inline:  # executors forward incr's result to square's worker (one more hop)
        variants = [("cloudburst-no-inline", True)]
    if secure:
        variants = [("cloudburst-curve", True)]
    with ProcessGroup(log_dir=run / "logs") as group:
        group.python("kvs", "anna.local", "--config", str(path))
        group.python("scheduler", "scheduler.server", "--config", str(path))
        group.python(
            "executor",
            "executor.node",
            "--config",
            str(path),
            env={"CB_INLINE_CHAINS": "1" if inline else "0"},
        )
        wait_ready(cfg, 2, 60)
        for label, direct in variants:
            conn = CloudburstConnection(
                cfg.ip, cfg.ip, port=cfg.scheduler.port, direct=direct, keys_dir=keys
            )
            try:
                conn.register(lambda _, x: x + 1, "incr")
                conn.register(lambda _, x: x * x, "square")
                conn.register_dag("composition", ["incr", "square"], [("incr", "square")])
                out[label] = measure(
                    lambda x, c=conn: c.call_dag("composition", {"incr": x}).get(timeout=30),
                    calls,
                    warmup,
                )
                conn.delete_dag("composition")
            finally:
                conn.close()
    return out


CALL_VARIANTS = [
    "f(x).get()",
    "exec_func",
    "call_dag 1 fn",
    "call_dag output_key",
    "f(x) + obj_id (stored)",
    "put_object (durable)",
    "zmq 1-hop floor",
]


def bench_calls(calls: int, warmup: int) -> dict[str, Runs]:
    """Single calls on one cluster with ``wal_fsync: always``, all variants interleaved
    in rounds of 10 calls, each after one unmeasured call, in a new random order each
    round (side by side: machine noise and neighbours hit them alike):

    * ``f(x).get()`` / ``exec_func``: the README's call form (result straight back);
    * ``call_dag 1 fn``: a one-function DAG; ``call_dag output_key``: the same, stored;
    * ``f(x) + obj_id (stored)``: reading ``obj_id`` makes the client store the result;
    * ``put_object (durable)``: one durable PUT alone;
    * ``zmq 1-hop floor``: pyzmq PUSH client -> worker process -> client, no work.
    """
    import zmq

    from cloudburst.client.client import CloudburstConnection
    from cloudburst.local import free_port_config, wait_ready, write_config
    from cloudburst.shared.processes import ProcessGroup, free_port

    run = Path(tempfile.mkdtemp(prefix="cb-bench-calls-"))
    cfg = free_port_config(run, workers=2, log_level="WARNING", kvs={"wal_fsync": "always"})
    path = write_config(cfg, run / "config.yml")
    addr = f"tcp://127.0.0.1:{free_port()}"
    ev = mp.get_context("spawn").Event()
    relay = mp.get_context("spawn").Process(target=_relay, args=(addr, None, ev), daemon=True)
    relay.start()
    ev.wait(30)
    zctx = zmq.Context()
    reply = zctx.socket(zmq.PULL)
    me = f"tcp://127.0.0.1:{reply.bind_to_random_port('tcp://127.0.0.1')}".encode()
    out_sock = zctx.socket(zmq.PUSH)
    out_sock.connect(addr)
    try:
        with ProcessGroup(log_dir=run / "logs") as group:
            group.python("kvs", "anna.local", "--config", str(path))
            group.python("scheduler", "scheduler.server", "--config", str(path))
            group.python("executor", "executor.node", "--config", str(path))
            wait_ready(cfg, 2, 60)
            conn = CloudburstConnection(cfg.ip, cfg.ip, port=cfg.scheduler.port)
            try:
                fn = conn.register(lambda _, x: (x + 1) ** 2, "one")
                conn.register_dag("one_dag", ["one"], [])

                def stored(x: int) -> int:
                    fut = fn(x)
                    assert fut.obj_id
                    return int(fut.get(timeout=30))

                def floor(x: int) -> int:
                    out_sock.send_multipart([me, b"x"])
                    reply.recv()
                    return (x + 1) ** 2

                variants: dict[str, Callable[[int], Any]] = {
                    "f(x).get()": lambda x: fn(x).get(timeout=30),
                    "exec_func": lambda x: conn.exec_func("one", [x]).get(timeout=30),
                    "call_dag 1 fn": lambda x: conn.call_dag("one_dag", {"one": x}).get(timeout=30),
                    "call_dag output_key": lambda x: conn.call_dag(
                        "one_dag", {"one": x}, output_key="bench/out"
                    ).get(timeout=30),
                    "f(x) + obj_id (stored)": stored,
                    "put_object (durable)": lambda x: (
                        conn.put_object("bench/put", x) and (x + 1) ** 2
                    ),
                    "zmq 1-hop floor": floor,
                }
                for name, call in variants.items():
                    for i in range(max(1, warmup // 4)):
                        got = call(i)
                        if got != (i + 1) ** 2:
                            raise AssertionError(f"{name}: wrong result {got!r}")
                out: dict[str, Runs] = {name: [] for name in variants}
                order = list(variants.items())
                shuffle = random.Random(0).shuffle
                for _ in range(REPEAT):
                    samples: dict[str, list[float]] = {name: [] for name in variants}
                    i = 0
                    while i < calls:
                        # A new order each round: a variant right after the floor ran
                        # ~60 us slower whichever it was; shuffled, no variant keeps
                        # that place.
                        shuffle(order)
                        for name, call in order:
                            # One unmeasured call first: the variant before may not
                            # have touched the cluster (the floor), whose processes
                            # then slept; no variant pays for its neighbour.
                            call(i)
                            for j in range(i, min(calls, i + 10)):
                                t0 = time.perf_counter()
                                call(j)
                                samples[name].append(time.perf_counter() - t0)
                        i += 10
                    for name in variants:
                        out[name].append(samples[name])
                return out
            finally:
                conn.close()
    finally:
        s = zctx.socket(zmq.PUSH)
        s.connect(addr)
        s.send_multipart([b"STOP", b""])
        s.close(linger=1000)
        relay.join(5)
        if relay.is_alive():
            relay.kill()
        out_sock.close(0)
        reply.close(0)
        zctx.term()


# --- (b) Dask and Ray ----------------------------------------------------------


def ensure(module: str, requirement: str, install: bool) -> bool:
    try:
        importlib.import_module(module)
        return True
    except ImportError:
        pass
    if not install:
        print(f"[bench] {module} is not installed (--no-install): skipped")
        return False
    print(f"[bench] installing {requirement} into {sys.prefix} ...")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", requirement],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        print(f"[bench] could not install {requirement}: skipped\n{proc.stderr[-800:]}")
        return False
    importlib.invalidate_caches()
    try:
        importlib.import_module(module)
        return True
    except ImportError as exc:
        print(f"[bench] {module} still not importable ({exc}): skipped")
        return False


def bench_dask(calls: int, warmup: int) -> Runs:
    import logging

    from distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.ERROR)
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        return measure(
            lambda x: client.submit(
                square, client.submit(incr, x, pure=False), pure=False
            ).result(),
            calls,
            warmup,
        )


def bench_ray(calls: int, warmup: int) -> Runs:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        r_incr = ray.remote(incr)
        r_square = ray.remote(square)
        return measure(lambda x: ray.get(r_square.remote(r_incr.remote(x))), calls, warmup)
    finally:
        ray.shutdown()


# --- (c) the pyzmq floor -------------------------------------------------------


def _relay(pull_addr: str, push_addr: str | None, ready: Any) -> None:
    import zmq

    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.bind(pull_addr)
    push = None
    if push_addr:
        push = ctx.socket(zmq.PUSH)
        push.connect(push_addr)
    ready.set()
    socks: dict[bytes, Any] = {}
    while True:
        frames = pull.recv_multipart()
        if frames[0] == b"STOP":
            return
        if push is not None:
            push.send_multipart(frames)
        else:  # the last worker answers the client named in the first frame
            sock = socks.get(frames[0])
            if sock is None:
                sock = socks[frames[0]] = ctx.socket(zmq.PUSH)
                sock.connect(frames[0].decode())
            sock.send(frames[1])


def bench_zmq_floor(calls: int, warmup: int) -> Runs:
    import zmq

    from cloudburst.shared.processes import free_port

    addrs = [f"tcp://127.0.0.1:{free_port()}" for _ in range(3)]  # broker, w1, w2
    ctx = mp.get_context("spawn")
    procs = []
    chain = [(addrs[0], addrs[1]), (addrs[1], addrs[2]), (addrs[2], None)]
    for pull, push in chain:
        ev = ctx.Event()
        p = ctx.Process(target=_relay, args=(pull, push, ev), daemon=True)
        p.start()
        ev.wait(30)
        procs.append(p)
    zctx = zmq.Context()
    reply = zctx.socket(zmq.PULL)
    me = f"tcp://127.0.0.1:{reply.bind_to_random_port('tcp://127.0.0.1')}"
    out = zctx.socket(zmq.PUSH)
    out.connect(addrs[0])
    try:

        def call(x: int) -> int:
            out.send_multipart([me.encode(), b"x"])
            reply.recv()
            return (x + 1) ** 2

        return measure(call, calls, warmup, check=False)
    finally:
        for a in addrs:
            s = zctx.socket(zmq.PUSH)
            s.connect(a)
            s.send_multipart([b"STOP", b""])
            s.close(linger=1000)
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
        out.close(0)
        reply.close(0)
        zctx.term()


# --- (d) ProcessPoolExecutor ---------------------------------------------------


def bench_processpool(calls: int, warmup: int) -> Runs:
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(2) as pool:
        return measure(
            lambda x: pool.submit(square, pool.submit(incr, x).result()).result(), calls, warmup
        )


# --- report --------------------------------------------------------------------


def write_reports(
    results: dict[str, Any], raw: dict[str, Runs], skipped: dict[str, str], stem: str
) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stats = {k: v for k, v in results["systems"].items() if k not in CALL_VARIANTS}
    calls = {k: v for k, v in results["systems"].items() if k in CALL_VARIANTS}
    (RESULTS / f"{stem}.json").write_text(json.dumps(results, indent=2))
    floor = stats.get("zmq-floor", {}).get("median_us")
    ours = stats.get("cloudburst", {}).get("median_us")
    lines = [
        "# Function composition: `square(incr(x))`",
        "",
        f"{results['repeat']} runs of {results['calls']} calls after {results['warmup']} "
        "warm-up calls, figures are medians over the runs; "
        f"{results['machine']}; {results['when']}.",
        "",
        "| system | median (µs) | p99 (µs) | p99 / median | median / floor | median / ours |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, s in sorted(stats.items(), key=lambda kv: kv[1]["median_us"]):
        lines.append(
            f"| {name} | {s['median_us']:.0f} | {s['p99_us']:.0f} | "
            f"{s['p99_us'] / s['median_us']:.2f} | "
            + (f"{s['median_us'] / floor:.2f}" if floor else "-")
            + " | "
            + (f"{s['median_us'] / ours:.2f}" if ours else "-")
            + " |"
        )
    for name, why in skipped.items():
        lines.append(f"| {name} | skipped: {why} | | | | |")
    lines += [
        "",
        "Targets (issue 4): ours <= 3x the floor; >= 5x lower than the best of Dask "
        "and Ray; p99 <= 3x our median; stretch: lower than the process pool.",
    ]
    curve = stats.get("cloudburst-curve", {}).get("median_us")
    if curve and ours:
        lines += [
            "",
            f"CURVE on every endpoint (`cloudburst-curve`) / without (`cloudburst`): "
            f"{curve / ours:.2f}x the median (target issue 12: <= 1.2x).",
        ]
    if calls:
        dag1 = calls.get("call_dag 1 fn", {}).get("median_us")
        floor1 = calls.get("zmq 1-hop floor", {}).get("median_us")
        lines += [
            "",
            "## Single calls (`wal_fsync: always`, variants interleaved in one run)",
            "",
            "| variant | median (µs) | p99 (µs) | median / call_dag 1 fn | median / 1-hop floor |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for name in CALL_VARIANTS:
            if name not in calls:
                continue
            s = calls[name]
            lines.append(
                f"| {name} | {s['median_us']:.0f} | {s['p99_us']:.0f} | "
                + (f"{s['median_us'] / dag1:.2f}" if dag1 else "-")
                + " | "
                + (f"{s['median_us'] / floor1:.2f}" if floor1 else "-")
                + " |"
            )
        lines += [
            "",
            "Targets (issue 16): `f(x).get()` <= 1.1x `call_dag 1 fn`; `call_dag output_key` "
            "<= 1.5x (`call_dag 1 fn` + `put_object (durable)`).",
        ]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, runs in sorted(raw.items(), key=lambda kv: statistics.median(median_run(kv[1]))):
        if name in CALL_VARIANTS:
            continue
        s = sorted(x * 1e6 for x in median_run(runs))
        ax.plot(s, [i / len(s) for i in range(len(s))], label=name)
    ax.set_xscale("log")
    ax.set_xlabel("latency per call (µs, log scale)")
    ax.set_ylabel("fraction of calls (CDF)")
    ax.set_title("square(incr(x)): latency distribution")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / f"{stem}.png", dpi=120)


SYSTEMS = ["cloudburst", "calls", "zmq-floor", "processpool", "dask", "ray"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3, help="measured runs per system")
    parser.add_argument("--only", default=",".join(SYSTEMS), help=f"subset of {SYSTEMS}")
    parser.add_argument("--no-install", action="store_true", help="do not pip install dask/ray")
    parser.add_argument(
        "--out",
        default="",
        help="results file stem (default composition, or composition-partial with --only)",
    )
    args = parser.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    global REPEAT
    REPEAT = max(1, args.repeat)
    raw: dict[str, Runs] = {}
    skipped: dict[str, str] = {}
    for name in only:
        print(f"[bench] {name} ...", flush=True)
        try:
            if name == "cloudburst":
                raw.update(bench_cloudburst(args.calls, args.warmup))
                raw.update(bench_cloudburst(args.calls, args.warmup, inline=False))
                raw.update(bench_cloudburst(args.calls, args.warmup, secure=True))
            elif name == "cloudburst-curve":  # CURVE beside NULL (plain) only
                raw.update(bench_cloudburst(args.calls, args.warmup, secure=True))
                raw.update(bench_cloudburst(args.calls, args.warmup))
            elif name == "calls":
                raw.update(bench_calls(args.calls, args.warmup))
            elif name == "zmq-floor":
                raw[name] = bench_zmq_floor(args.calls, args.warmup)
            elif name == "processpool":
                raw[name] = bench_processpool(args.calls, args.warmup)
            elif name == "dask":
                if ensure("distributed", "distributed", not args.no_install):
                    raw[name] = bench_dask(args.calls, args.warmup)
                else:
                    skipped[name] = "not installable"
            elif name == "ray":
                if ensure("ray", "ray", not args.no_install):
                    raw[name] = bench_ray(args.calls, args.warmup)
                else:
                    skipped[name] = "not installable"
            else:
                parser.error(f"unknown system {name!r}")
        except Exception as exc:  # one peer failing must not lose the others
            print(f"[bench] {name} failed: {exc!r}: skipped")
            skipped[name] = f"failed: {type(exc).__name__}: {exc}"
    results = {
        "benchmark": "composition square(incr(x))",
        "calls": args.calls,
        "warmup": args.warmup,
        "repeat": REPEAT,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.2f}",
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "systems": {name: summary(lat) for name, lat in raw.items()},
        "skipped": skipped,
    }
    stem = args.out or ("composition" if set(only) == set(SYSTEMS) else "composition-partial")
    write_reports(results, raw, skipped, stem)
    print((RESULTS / f"{stem}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
