"""MapReduce word count: 4 mappers streaming ``DMap[str, DCounter]`` deltas into one
reducer, vs the reducer waiting for the mappers' whole outputs.

Input: each mapper counts ``--mb`` MB of synthetic text (Zipf-distributed words over a
20 000-word vocabulary) in 1 MB chunks.

(a) ``streaming``: each mapper is a streaming producer; after each chunk it sends one
    delta of the call's ``counts`` stream (``cb.stream("counts", DMap, writers=4)``:
    the chunk's words with the mapper's running totals); the reducer starts with the
    mappers and merges deltas as they arrive, so it finishes moments after the last
    mapper seals;
(b) ``whole``: each mapper returns its whole ``{word: count}`` dict; the reducer
    (fan-in of 4) starts when all four are done and merges them.

Both run on one local cluster (KVS, scheduler, one executor node with 5 workers and its
cache, free ports). Reports end-to-end medians over ``--reps`` calls and the time to
the reducer's first partial result. Results: ``bench/results/wordcount.{json,md}``.

Run: ``.venv/bin/python bench/wordcount.py [--mb 8] [--reps 3]`` or ``--quick``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"
#: SERVER_ENV raises the mmap threshold; without a matching trim threshold glibc gives
#: freed 1 MB buffers back to the OS at once and every numpy temporary page-faults again
#: (measured: the aggregate stage 2.7x slower). Set for the executors of this benchmark.
MALLOC_ENV = {"MALLOC_TRIM_THRESHOLD_": str(256 << 20)}
CHUNK_BYTES = 1 << 20
MAPPERS = 4


def make_text(seed: int, nbytes: int) -> bytes:
    """``nbytes`` of space-separated words drawn from a Zipf law (deterministic)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = rng.zipf(1.3, size=nbytes // 5) % 20000
    return " ".join(f"w{i}" for i in ids).encode()[:nbytes]


def count_chunk(text: bytes) -> dict[str, int]:
    from collections import Counter

    return dict(Counter(text.decode().split()))


# --- (a) streaming -------------------------------------------------------------------------


def s_mapper(cb: Any, part: int, mb: int) -> Any:
    from cloudburst.ddt import DMap

    # One delta per chunk: the chunk's distinct words with this mapper's running totals.
    out = cb.stream("counts", DMap, writers=MAPPERS, batch_bytes=64 << 20, batch_ms=60_000)
    for c in range(mb):
        out.update_many(count_chunk(make_text(part * 1000 + c, CHUNK_BYTES)))
        out.flush()
    out.seal()
    yield from ()  # a generator: a streaming producer, so the reducer starts now


def s_reducer(cb: Any, *_streams: Any) -> Any:
    import time as _t

    from cloudburst.ddt import DMap

    # Merge each delta as it arrives: DMap[str, DCounter] semantics (per key, per writer
    # max of running totals), kept in plain dicts so a merge costs the delta's size.
    inp = cb.stream("counts", DMap, keep=False)
    per_key: dict[str, dict[str, int]] = {}
    first, deltas = None, 0
    for delta in inp.deltas(timeout=120):
        for word, counter in delta.entries.items():
            mine = per_key.setdefault(word, {})
            for writer, total in counter.counts.items():
                if total > mine.get(writer, -1):
                    mine[writer] = total
        deltas += 1
        if first is None:
            first = _t.time()
    counts = {w: sum(c.values()) for w, c in per_key.items()}
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    return top, sum(counts.values()), first, deltas


# --- (b) whole outputs ---------------------------------------------------------------------


def w_mapper(cb: Any, part: int, mb: int) -> Any:
    total: dict[str, int] = {}
    for c in range(mb):
        for word, n in count_chunk(make_text(part * 1000 + c, CHUNK_BYTES)).items():
            total[word] = total.get(word, 0) + n
    return total


def w_reducer(cb: Any, *outputs: dict[str, int]) -> Any:
    import time as _t

    merged: dict[str, int] = {}
    first = None
    for out in outputs:
        for word, n in out.items():
            merged[word] = merged.get(word, 0) + n
        first = first or _t.time()
    top = sorted(merged.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    return top, sum(merged.values()), first, len(outputs)


def run_bench(mb: int, reps: int) -> dict[str, Any]:
    from cloudburst.client.client import CloudburstConnection
    from cloudburst.local import free_port_config, wait_ready, write_config
    from cloudburst.shared.processes import ProcessGroup

    workers = MAPPERS + 1
    run_dir = Path(tempfile.mkdtemp(prefix="cb-wordcount-"))
    cfg = free_port_config(
        run_dir,
        workers=workers,
        log_level="WARNING",
        scheduler={"call_timeout_s": 600.0},
        executor={"workers": workers, "base_port": 0},
    )
    path = write_config(cfg, run_dir / "config.yml")
    runs: dict[str, list[dict[str, float]]] = {"streaming": [], "whole": []}
    with ProcessGroup(log_dir=run_dir / "logs") as group:
        group.python("kvs", "anna.local", "--config", str(path))
        group.python("scheduler", "scheduler.server", "--config", str(path))
        group.python("executor", "executor.node", "--config", str(path), env=MALLOC_ENV)
        wait_ready(cfg, workers, 90)
        conn = CloudburstConnection(cfg.ip, cfg.ip, port=cfg.scheduler.port, timeout=600.0)
        try:
            for kind, mapper, reducer in (
                ("streaming", s_mapper, s_reducer),
                ("whole", w_mapper, w_reducer),
            ):
                names = [f"{kind}_m{i}" for i in range(MAPPERS)]
                for n in names:
                    conn.register(mapper, n)
                conn.register(reducer, f"{kind}_reduce")
                conn.register_dag(
                    f"wc-{kind}",
                    [*names, f"{kind}_reduce"],
                    [(n, f"{kind}_reduce") for n in names],
                )
            expected = None
            for rep in range(reps + 1):  # the first round warms up
                for kind in ("streaming", "whole"):
                    args = {f"{kind}_m{i}": [i, mb] for i in range(MAPPERS)}
                    t0 = time.time()
                    top, total, first, deltas = conn.call_dag(f"wc-{kind}", args).get(timeout=600)
                    t1 = time.time()
                    if expected is None:
                        expected = (top, total)
                    if (top, total) != expected:
                        raise AssertionError(f"{kind}: {top, total} != {expected}")
                    if rep == 0:
                        continue
                    runs[kind].append(
                        {
                            "total_s": t1 - t0,
                            "first_partial_s": (first or t1) - t0,
                            "deltas": deltas,
                        }
                    )
                    print(
                        f"{kind:>9} rep {rep}: {t1 - t0:6.2f} s, first partial result after "
                        f"{(first or t1) - t0:5.2f} s ({deltas} deltas/outputs), "
                        f"{total} words",
                        flush=True,
                    )
        finally:
            conn.close()
    summary = {
        kind: {
            "median_s": statistics.median(r["total_s"] for r in rs),
            "min_s": min(r["total_s"] for r in rs),
            "max_s": max(r["total_s"] for r in rs),
            "first_partial_median_s": statistics.median(r["first_partial_s"] for r in rs),
            "deltas_median": statistics.median(r["deltas"] for r in rs),
        }
        for kind, rs in runs.items()
    }
    summary["streaming_over_whole"] = (
        summary["streaming"]["median_s"] / summary["whole"]["median_s"]  # type: ignore[index]
    )
    return {
        "mb_per_mapper": mb,
        "mappers": MAPPERS,
        "reps": reps,
        "runs": runs,
        "summary": summary,
        "top10": expected[0] if expected else None,
    }


def main(argv: list[str] | None = None) -> int:
    import signal

    # SIGTERM unwinds (the ProcessGroup context then stops the cluster).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=8, help="MB of text per mapper")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2 MB per mapper, 1 rep")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    mb, reps = (2, 1) if args.quick else (args.mb, args.reps)
    res = run_bench(mb, reps)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "wordcount-quick" if args.quick else "wordcount"
    (out / f"{stem}.json").write_text(json.dumps(res, indent=1))
    s = res["summary"]
    md = [
        "# Word count: 4 mappers streaming DMap[str, DCounter] deltas vs whole outputs",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; {mb} MB of text per mapper, {reps} reps, medians.",
        "",
        "| variant | end-to-end median s (min-max) | first partial result at the reducer s |",
        "|---|---|---|",
    ]
    for kind in ("streaming", "whole"):
        k = s[kind]
        md.append(
            f"| {kind} | {k['median_s']:.2f} ({k['min_s']:.2f}-{k['max_s']:.2f}) | "
            f"{k['first_partial_median_s']:.2f} |"
        )
    md += ["", f"streaming / whole = {s['streaming_over_whole']:.2f}", ""]
    (out / f"{stem}.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
