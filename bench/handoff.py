"""A large array passed f -> g on one node (issue 16, point 4), against one in-process
memcpy of it, and Ray, side by side in one run.

    .venv/bin/python bench/handoff.py            # 100 MB, 20 calls per variant
    .venv/bin/python bench/handoff.py --mb 10 --calls 10

``src(n)`` returns an array of ``n`` float64 that its worker keeps (built once, so
``f`` itself costs nothing); ``look(arr)`` returns two floats (touches nothing big).
The DAG ``src -> look`` runs with chain inlining off (``CB_INLINE_CHAINS=0``: an
inlined chain passes the object itself, with no transfer at all), so the array
crosses from one worker's call to the next through the trigger:

* **shm**: ``cache.shm_threshold_bytes`` 64 KiB: written once into a shared-memory
  file, mapped read-only by ``look`` (``executor/handoff.py``);
* **socket**: the same with ``shm_threshold_bytes: 0``: pickled into the trigger over
  TCP and copied back into a fresh array (the path before);
* **tiny**: the same DAG with an 8-float array on the *shm* cluster: the call's own
  cost, so ``shm - tiny`` is what moving the array costs;
* **memcpy (fresh)**: ``arr.copy()`` in the bench process (new pages, like a new
  array); **memcpy (reused)**: ``np.copyto`` into an array allocated once;
* **ray**: ``ray.get(look.remote(src.remote(n)))`` on ``ray.init(num_cpus=2)`` (its
  object store: one copy into shared memory, zero-copy read), when Ray is installed.

All variants are interleaved in rounds of one call each. Writes
``bench/results/handoff.{json,md}``.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cloudburst.client.client import CloudburstConnection  # noqa: E402
from cloudburst.local import free_port_config, wait_ready, write_config  # noqa: E402
from cloudburst.shared.processes import ProcessGroup  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def src(_lib: Any, n: int) -> Any:
    """The producer: an array of n float64, built once per worker process."""
    import builtins

    import numpy as np

    held = builtins.__dict__.setdefault("_cb_bench_arrays", {})
    arr = held.get(n)
    if arr is None:
        arr = held[n] = np.arange(n, dtype=np.float64)
    return arr


def look(_lib: Any, arr: Any) -> tuple[float, float]:
    """The consumer: touches two elements only."""
    return float(arr[0]), float(arr[-1])


def summarize(s: list[float]) -> dict[str, float]:
    s = sorted(s)
    return {
        "median_ms": statistics.median(s) * 1e3,
        "p99_ms": s[min(len(s) - 1, round(0.99 * (len(s) - 1)))] * 1e3,
        "n": len(s),
    }


def start(group: ProcessGroup, run: Path, name: str, shm: bool) -> CloudburstConnection:
    d = run / name
    d.mkdir(parents=True)
    cfg = free_port_config(
        d,
        workers=2,
        executor={"workers": 2, "base_port": 0, "heartbeat_period_s": 0.25},
        cache={"shm_threshold_bytes": 64 * 1024 if shm else 0, "capacity_bytes": 1 << 30},
        scheduler={"call_timeout_s": 120.0, "heartbeat_timeout_s": 30.0},
        kvs={"request_timeout_s": 30.0},
        log_level="WARNING",
    )
    path = write_config(cfg, d / "config.yml")
    env = {"CB_INLINE_CHAINS": "0"}
    group.python(f"{name}-kvs", "anna.local", "--config", str(path))
    group.python(f"{name}-scheduler", "scheduler.server", "--config", str(path))
    group.python(f"{name}-executor", "executor.node", "--config", str(path), env=env)
    wait_ready(cfg, 2, timeout=120.0)
    cloud = CloudburstConnection(cfg.ip, cfg.ip, port=cfg.scheduler.port, timeout=120.0)
    cloud.register(src, "src")
    cloud.register(look, "look")
    ok, err = cloud.register_dag("pass", ["src", "look"], [("src", "look")])
    assert ok, err
    return cloud


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=float, default=100.0)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()
    n = int(args.mb * 1e6 / 8)
    arr = np.arange(n, dtype=np.float64)
    dst = np.empty_like(arr)
    expect = (0.0, float(n - 1))
    fns: dict[str, Callable[[], Any]] = {}
    skipped: dict[str, str] = {}
    ray = None
    with tempfile.TemporaryDirectory(prefix="handoff-") as tmp, ProcessGroup() as group:
        run = Path(tmp)
        shm = start(group, run, "shm", True)
        sock = start(group, run, "socket", False)
        fns["shm"] = lambda: shm.call_dag("pass", {"src": [n]}).get(timeout=120)
        fns["socket"] = lambda: sock.call_dag("pass", {"src": [n]}).get(timeout=120)
        fns["tiny"] = lambda: shm.call_dag("pass", {"src": [8]}).get(timeout=120)
        fns["memcpy (fresh)"] = lambda: arr.copy()
        fns["memcpy (reused)"] = lambda: np.copyto(dst, arr)
        if not args.no_ray:
            try:
                import ray

                ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
                r_src, r_look = ray.remote(src), ray.remote(look)
                fns["ray"] = lambda: ray.get(r_look.remote(None, r_src.remote(None, n)))
            except Exception as exc:  # ImportError, or Ray failing to start
                skipped["ray"] = f"{type(exc).__name__}: {exc}"
                ray = None
        try:
            for name, fn in fns.items():  # warm-up: every worker builds its array
                for _ in range(4):
                    got = fn()
                    if name in ("shm", "socket", "ray"):
                        assert tuple(got) == expect, (name, got)
            samples: dict[str, list[float]] = {k: [] for k in fns}
            for _ in range(args.calls):
                for name, fn in fns.items():
                    t0 = time.perf_counter()
                    fn()
                    samples[name].append(time.perf_counter() - t0)
        finally:
            shm.close()
            sock.close()
            if "ray" in fns:
                import ray

                ray.shutdown()
    res = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, load average {os.getloadavg()[0]:.2f}",
        "mb": args.mb,
        "calls": args.calls,
        "variants": {k: summarize(v) for k, v in samples.items()},
        "skipped": skipped,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "handoff.json").write_text(json.dumps(res, indent=2))
    v = res["variants"]
    fresh = v["memcpy (fresh)"]["median_ms"]
    lines = [
        f"# {args.mb:g} MB array passed f -> g on one node",
        "",
        f"`bench/handoff.py`, {res['when']}, {res['machine']}; {args.calls} calls per "
        "variant, interleaved. Median / p99 in ms.",
        "",
        "| variant | median | p99 | median / memcpy (fresh) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, s in v.items():
        lines.append(
            f"| {name} | {s['median_ms']:.1f} | {s['p99_ms']:.1f} | {s['median_ms'] / fresh:.2f} |"
        )
    moved = v["shm"]["median_ms"] - v["tiny"]["median_ms"]
    lines += [
        "",
        f"Moving the array (shm - tiny): {moved:.1f} ms = {moved / fresh:.2f}x a fresh memcpy, "
        f"{moved / v['memcpy (reused)']['median_ms']:.2f}x a memcpy into reused memory; "
        f"socket / shm: {v['socket']['median_ms'] / v['shm']['median_ms']:.1f}x.",
    ]
    if skipped:
        lines += ["", f"Skipped: {skipped}"]
    (RESULTS / "handoff.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
