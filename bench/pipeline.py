"""Streaming DDT pipeline vs whole values vs redis vs one fused function.

A three-stage workflow over ``N`` MB of text records in 1 MB chunks:

* **parse**: text chunk -> float64 array (``np.fromstring``, the real parsing cost);
* **transform**: ``sort(sqrt(|x|) * 3 + 1)``, repeated to cost about what parse costs;
* **aggregate**: a 64-bin histogram and a running sum, repeated likewise.

Variants, each on the same local cluster (KVS, scheduler, one executor node with 3
workers and its cache, free ports) and measured in one run:

(a) ``streaming``: a DAG of three generator functions; each chunk flows
    parse -> transform -> aggregate through the node cache's DDT streams while the
    upstream stage is still working;
(b) ``whole``: the same DAG passing each stage's whole output (a list of arrays)
    when the stage ends;
(c) ``redis``: the same DAG, stages exchanging chunks through ``redis-server`` (started
    on a free port; installed with ``scripts/ensure-env.sh`` if missing);
(d) ``fused``: one function doing all three stages chunk by chunk (the floor).

Reports per size: end-to-end median (and min/max) over ``--reps`` calls, the time to
the first output of the last stage, and a timeline PNG of when each stage is busy (the
median run of the largest size). Results: ``bench/results/pipeline.{json,md,png}``.

Run: ``.venv/bin/python bench/pipeline.py`` (sizes 16, 64, 256 MB, 3 reps) or
``--quick`` (4 and 16 MB, 1 rep).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from plotting import pyplot  # noqa: E402 (bench/, the script's own directory)

RESULTS = ROOT / "bench" / "results"
#: SERVER_ENV raises the mmap threshold; without a matching trim threshold glibc gives
#: freed 1 MB buffers back to the OS at once and every numpy temporary page-faults again
#: (measured: the aggregate stage 2.7x slower). Set for the executors of this benchmark.
MALLOC_ENV = {"MALLOC_TRIM_THRESHOLD_": str(256 << 20)}
CHUNK_BYTES = 1 << 20
VARIANTS = ("streaming", "whole", "redis", "fused")


# --- the per-chunk work (shipped to the executors by value with cloudpickle) -----------


def make_raw(chunk_bytes: int) -> bytes:
    """One chunk of text records: space-separated decimals (deterministic)."""
    import numpy as np

    vals = np.random.default_rng(7).random(chunk_bytes // 6) * 1000.0
    raw = " ".join(f"{v:.3f}" for v in vals).encode()[:chunk_bytes]
    return raw[: raw.rfind(b" ")]


def parse(raw: bytes) -> Any:
    import numpy as np

    return np.fromstring(raw, sep=" ")


def transform(arr: Any, reps: int) -> Any:
    import numpy as np

    out = arr
    for _ in range(reps):
        out = np.sort(np.sqrt(np.abs(arr)) * 3.0 + 1.0)
    return out


def aggregate(acc: Any, arr: Any, reps: int) -> Any:
    import numpy as np

    hist = None
    for _ in range(reps):
        hist = np.histogram(arr, bins=64, range=(0.0, 100.0))[0]
    return (acc[0] + hist, acc[1] + float(arr.sum()))


def zero_acc() -> Any:
    import numpy as np

    return (np.zeros(64, dtype=np.int64), 0.0)


def result_of(acc: Any) -> tuple[int, float]:
    return int(acc[0].sum()), round(acc[1], 3)


def record(cb: Any, run: str, stage: str, spans: list[tuple[float, float]]) -> None:
    cb.put(f"pipeline-tl/{run}/{stage}", spans)


# --- (a) streaming: generators ------------------------------------------------------------


def s_parse(cb: Any, n: int, chunk: int, reps: list[int], run: str) -> Any:
    import time as _t

    raw = make_raw(chunk)
    spans = []
    for _ in range(n):
        t0 = _t.time()
        arr = parse(raw)
        spans.append((t0, _t.time()))
        yield arr
    record(cb, run, "parse", spans)


def s_transform(cb: Any, reps: list[int], run: str, items: Any) -> Any:
    import time as _t

    spans = []
    for arr in items:
        t0 = _t.time()
        out = transform(arr, reps[0])
        spans.append((t0, _t.time()))
        yield out
    record(cb, run, "transform", spans)


def s_aggregate(cb: Any, reps: list[int], run: str, items: Any) -> Any:
    import time as _t

    acc, spans = zero_acc(), []
    for arr in items:
        t0 = _t.time()
        acc = aggregate(acc, arr, reps[1])
        spans.append((t0, _t.time()))
    record(cb, run, "aggregate", spans)
    return result_of(acc), spans[0][1] if spans else None


# --- (b) whole values ----------------------------------------------------------------------


def w_parse(cb: Any, n: int, chunk: int, reps: list[int], run: str) -> Any:
    import time as _t

    raw = make_raw(chunk)
    out, spans = [], []
    for _ in range(n):
        t0 = _t.time()
        out.append(parse(raw))
        spans.append((t0, _t.time()))
    record(cb, run, "parse", spans)
    return out, reps, run


def w_transform(cb: Any, items: list[Any], reps: list[int], run: str) -> Any:
    import time as _t

    out, spans = [], []
    for arr in items:
        t0 = _t.time()
        out.append(transform(arr, reps[0]))
        spans.append((t0, _t.time()))
    record(cb, run, "transform", spans)
    return out, reps, run


def w_aggregate(cb: Any, items: list[Any], reps: list[int], run: str) -> Any:
    import time as _t

    acc, spans = zero_acc(), []
    for arr in items:
        t0 = _t.time()
        acc = aggregate(acc, arr, reps[1])
        spans.append((t0, _t.time()))
    record(cb, run, "aggregate", spans)
    return result_of(acc), spans[0][1] if spans else None


# --- (c) through redis ---------------------------------------------------------------------


def _redis(port: int) -> Any:
    import redis

    return redis.Redis(host="127.0.0.1", port=port)


def r_parse(cb: Any, n: int, chunk: int, reps: list[int], run: str, port: int) -> Any:
    import time as _t

    r = _redis(port)
    raw = make_raw(chunk)
    spans = []
    for i in range(n):
        t0 = _t.time()
        arr = parse(raw)
        spans.append((t0, _t.time()))
        r.set(f"{run}:p:{i}", arr.tobytes())
    r.close()
    record(cb, run, "parse", spans)
    return n, reps, run, port


def r_transform(cb: Any, n: int, reps: list[int], run: str, port: int) -> Any:
    import time as _t

    import numpy as np

    r = _redis(port)
    spans = []
    for i in range(n):
        arr = np.frombuffer(r.get(f"{run}:p:{i}"), dtype=np.float64)
        t0 = _t.time()
        out = transform(arr, reps[0])
        spans.append((t0, _t.time()))
        r.set(f"{run}:t:{i}", out.tobytes())
    r.close()
    record(cb, run, "transform", spans)
    return n, reps, run, port


def r_aggregate(cb: Any, n: int, reps: list[int], run: str, port: int) -> Any:
    import time as _t

    import numpy as np

    r = _redis(port)
    acc, spans = zero_acc(), []
    for i in range(n):
        arr = np.frombuffer(r.get(f"{run}:t:{i}"), dtype=np.float64)
        t0 = _t.time()
        acc = aggregate(acc, arr, reps[1])
        spans.append((t0, _t.time()))
    r.delete(*[f"{run}:{s}:{i}" for s in "pt" for i in range(n)])
    r.close()
    record(cb, run, "aggregate", spans)
    return result_of(acc), spans[0][1] if spans else None


# --- (d) fused -----------------------------------------------------------------------------


def fused(cb: Any, n: int, chunk: int, reps: list[int], run: str) -> Any:
    import time as _t

    raw = make_raw(chunk)
    acc = zero_acc()
    spans: dict[str, list[tuple[float, float]]] = {"parse": [], "transform": [], "aggregate": []}
    first = None
    for _ in range(n):
        t0 = _t.time()
        arr = parse(raw)
        t1 = _t.time()
        out = transform(arr, reps[0])
        t2 = _t.time()
        acc = aggregate(acc, out, reps[1])
        t3 = _t.time()
        first = first or t3
        spans["parse"].append((t0, t1))
        spans["transform"].append((t1, t2))
        spans["aggregate"].append((t2, t3))
    for stage, s in spans.items():
        record(cb, run, stage, s)
    return result_of(acc), first


# --- driver --------------------------------------------------------------------------------


def calibrate(chunk: int) -> list[int]:
    """Repeats of transform and aggregate so each costs about what parse costs."""
    raw = make_raw(chunk)
    arr = parse(raw)

    def cost(fn: Any) -> float:
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        return best

    out = transform(arr, 1)
    p = cost(lambda: parse(raw))
    t = cost(lambda: transform(arr, 1))
    a = cost(lambda: aggregate(zero_acc(), out, 1))  # on what it gets: transformed data
    return [max(1, round(p / t)), max(1, round(p / a))]


def start_redis(run: Path) -> tuple[subprocess.Popen[bytes], int]:
    from cloudburst.shared.processes import free_port, port_open, wait_until

    if shutil.which("redis-server") is None:
        subprocess.run(
            ["bash", "-c", "source scripts/ensure-env.sh; ensure_redis"], cwd=ROOT, check=True
        )
    port = free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(run),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: port_open("127.0.0.1", port), timeout=10, what="redis-server")
    return proc, port


def run_bench(sizes: list[int], reps: int, variants: list[str]) -> dict[str, Any]:
    from cloudburst.client.client import CloudburstConnection
    from cloudburst.local import free_port_config, wait_ready, write_config
    from cloudburst.shared.processes import ProcessGroup

    stage_reps = calibrate(CHUNK_BYTES)
    print(f"calibrated repeats (transform, aggregate): {stage_reps}", flush=True)
    run_dir = Path(tempfile.mkdtemp(prefix="cb-pipeline-"))
    cfg = free_port_config(
        run_dir,
        workers=3,
        log_level="WARNING",
        scheduler={"call_timeout_s": 900.0},
        executor={"workers": 3, "base_port": 0},
    )
    path = write_config(cfg, run_dir / "config.yml")
    results: dict[str, Any] = {
        "sizes_mb": sizes,
        "reps": reps,
        "stage_repeats": stage_reps,
        "runs": {},
    }
    redis_proc, redis_port = None, 0
    with ProcessGroup(log_dir=run_dir / "logs") as group:
        group.python("kvs", "anna.local", "--config", str(path))
        group.python("scheduler", "scheduler.server", "--config", str(path))
        group.python("executor", "executor.node", "--config", str(path), env=MALLOC_ENV)
        wait_ready(cfg, 3, 90)
        conn = CloudburstConnection(cfg.ip, cfg.ip, port=cfg.scheduler.port, timeout=900.0)
        try:
            if "redis" in variants:
                redis_proc, redis_port = start_redis(run_dir)
            for fn in (
                s_parse,
                s_transform,
                s_aggregate,
                w_parse,
                w_transform,
                w_aggregate,
                r_parse,
                r_transform,
                r_aggregate,
                fused,
            ):
                conn.register(fn, fn.__name__)
            dags = {
                "streaming": ["s_parse", "s_transform", "s_aggregate"],
                "whole": ["w_parse", "w_transform", "w_aggregate"],
                "redis": ["r_parse", "r_transform", "r_aggregate"],
            }
            for name, fns in dags.items():
                conn.register_dag(f"pipe-{name}", fns, [(fns[0], fns[1]), (fns[1], fns[2])])
            conn.register_dag("pipe-fused", ["fused"], [])
            expected: dict[int, Any] = {}
            # Warm up every function (loads, imports, page faults) on a small input.
            for variant in variants:
                call_variant(conn, variant, 2, stage_reps, f"warm-{variant}", redis_port)
            for size in sizes:
                for rep in range(reps):
                    for variant in variants:
                        run_id = f"{variant}-{size}-{rep}-{time.time_ns()}"
                        t0 = time.time()
                        value, first = call_variant(
                            conn,
                            variant,
                            size,
                            stage_reps,
                            run_id,
                            redis_port,
                        )
                        t1 = time.time()
                        tl = {
                            stage: conn.get_object(f"pipeline-tl/{run_id}/{stage}")
                            for stage in ("parse", "transform", "aggregate")
                        }
                        expected.setdefault(size, value)
                        if value != expected[size]:
                            raise AssertionError(
                                f"{variant} {size} MB: {value} != {expected[size]}"
                            )
                        results["runs"].setdefault(f"{variant}/{size}", []).append(
                            {
                                "total_s": t1 - t0,
                                "first_output_s": (first or t1) - t0,
                                "start": t0,
                                "timeline": tl,
                            }
                        )
                        print(
                            f"{variant:>9} {size:>4} MB rep {rep}: {t1 - t0:7.2f} s, "
                            f"first output of the last stage after {(first or t1) - t0:6.2f} s",
                            flush=True,
                        )
        finally:
            conn.close()
            if redis_proc is not None:
                redis_proc.terminate()
                redis_proc.wait(timeout=10)
    return results


def call_variant(conn: Any, variant: str, n: int, reps: list[int], run: str, port: int) -> Any:
    if variant == "streaming":
        # A function's own arguments come first, then what its upstream sends (the stream).
        args = {
            "s_parse": [n, CHUNK_BYTES, reps, run],
            "s_transform": [reps, run],
            "s_aggregate": [reps, run],
        }
        return conn.call_dag("pipe-streaming", args).get(timeout=900)
    if variant == "whole":
        return conn.call_dag("pipe-whole", {"w_parse": [n, CHUNK_BYTES, reps, run]}).get(
            timeout=900
        )
    if variant == "redis":
        return conn.call_dag("pipe-redis", {"r_parse": [n, CHUNK_BYTES, reps, run, port]}).get(
            timeout=900
        )
    return conn.call_dag("pipe-fused", {"fused": [n, CHUNK_BYTES, reps, run]}).get(timeout=900)


def summarize(results: dict[str, Any], variants: list[str]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for size in results["sizes_mb"]:
        row: dict[str, Any] = {}
        for v in variants:
            runs = results["runs"].get(f"{v}/{size}", [])
            if not runs:
                continue
            tot = [r["total_s"] for r in runs]
            first = [r["first_output_s"] for r in runs]
            row[v] = {
                "median_s": statistics.median(tot),
                "min_s": min(tot),
                "max_s": max(tot),
                "first_output_median_s": statistics.median(first),
            }
        if "streaming" in row:
            a = row["streaming"]["median_s"]
            for v in ("whole", "redis", "fused"):
                if v in row:
                    row[f"streaming_over_{v}"] = a / row[v]["median_s"]
        table[str(size)] = row
    return table


def plot(results: dict[str, Any], variants: list[str], out: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    size = max(results["sizes_mb"])
    fig, axes = plt.subplots(len(variants), 1, figsize=(11, 1.6 * len(variants) + 1), sharex=True)
    colors = {"parse": "tab:blue", "transform": "tab:orange", "aggregate": "tab:green"}
    for ax, v in zip(axes, variants, strict=True):
        runs = results["runs"].get(f"{v}/{size}", [])
        if not runs:
            continue
        runs = sorted(runs, key=lambda r: r["total_s"])
        run = runs[len(runs) // 2]
        for row, stage in enumerate(("parse", "transform", "aggregate")):
            spans = run["timeline"].get(stage) or []
            bars = [(s - run["start"], e - s) for s, e in spans]
            ax.broken_barh(bars, (row - 0.4, 0.8), color=colors[stage])
        ax.axvline(run["total_s"], color="black", lw=1)
        ax.set_yticks([0, 1, 2], ["parse", "transform", "aggregate"])
        ax.set_title(
            f"({'abcd'[VARIANTS.index(v)]}) {v}: {run['total_s']:.1f} s", fontsize=9, loc="left"
        )
    axes[-1].set_xlabel(f"seconds since the call ({size} MB in 1 MB chunks; black line: result)")
    fig.suptitle("When each stage is busy (median run)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def write_md(
    results: dict[str, Any], table: dict[str, Any], variants: list[str], out: Path
) -> None:
    lines = [
        "# Pipeline benchmark: streaming DDTs vs whole values vs redis vs fused",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; {results['reps']} reps per cell, medians. Stage "
        f"repeats (transform, aggregate) = {results['stage_repeats']} so that each stage "
        "costs about what parsing a 1 MB chunk costs.",
        "",
        "| MB | "
        + " | ".join(f"{v} median s (first output s)" for v in variants)
        + " | (a)/(b) | (a)/(d) |",
        "|---|" + "---|" * (len(variants) + 2),
    ]
    for size, row in table.items():
        cells = []
        for v in variants:
            c = row.get(v)
            cells.append(f"{c['median_s']:.2f} ({c['first_output_median_s']:.2f})" if c else "-")
        ab = row.get("streaming_over_whole")
        ad = row.get("streaming_over_fused")
        lines.append(f"| {size} | " + " | ".join(cells) + f" | {ab:.2f} |" if ab else " | - |")
        lines[-1] += f" {ad:.2f} |" if ad else " - |"
    lines += ["", "Timeline of the largest size: `pipeline.png`.", ""]
    out.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    import signal

    # SIGTERM unwinds (the ProcessGroup context then stops the cluster).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="16,64,256", help="MB, comma-separated")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="4 and 16 MB, 1 rep")
    parser.add_argument("--only", default=",".join(VARIANTS))
    parser.add_argument("--out", default=str(RESULTS), help="results directory")
    args = parser.parse_args(argv)
    sizes = [4, 16] if args.quick else [int(s) for s in args.sizes.split(",")]
    reps = 1 if args.quick else args.reps
    variants = [v for v in VARIANTS if v in args.only.split(",")]
    results = run_bench(sizes, reps, variants)
    table = summarize(results, variants)
    results["summary"] = table
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "pipeline-quick" if args.quick else "pipeline"
    (out / f"{stem}.json").write_text(json.dumps(results, indent=1))
    write_md(results, table, variants, out / f"{stem}.md")
    plot(results, variants, out / f"{stem}.png")
    print(json.dumps(table, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
