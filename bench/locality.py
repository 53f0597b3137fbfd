"""Locality benchmark (after Cloudburst's): a function sums 10 numpy arrays passed as
KVS references, for 1e3 .. 1e7 float64 elements per array.

    .venv/bin/python bench/locality.py            # full run (a few minutes)
    .venv/bin/python bench/locality.py --quick    # fewer calls, smaller sizes

Platform section (real Cloudburst calls, client -> executor -> client, timed by the
client around ``fn(*refs).get()``), one executor node with 2 workers:

* **warm**: the node cache is on and already holds the arrays (after warm-up calls);
  arrays over ``cache.shm_threshold_bytes`` (64 KiB) are in shared memory and the
  worker maps them read-only (no copy, ``cache/shm.py``);
* **warm-heap**: the same with shared memory off (``shm_threshold_bytes: 0``): the
  arrays travel from the cache over the ipc socket and are copied (the old path);
* **floor**: compute only, the same sum over arrays already in the bench process;
* **cold**: the node cache is off: the executor reads all 10 arrays from the KVS on
  every call;
* **ray**: Ray on ``ray.init(num_cpus=2)`` in the bench process, the 10 arrays
  ``ray.put`` once, the same function called as ``ray.get(f.remote(*refs))`` (Ray
  hands numpy arrays to its workers zero-copy from its shared-memory object store);
  skipped with a note when Ray is not installed (``--no-ray`` to leave it out);
* **redis**: the same cluster as *cold*, but the function reads the 10 arrays from a
  redis-server (started here on a free port, persistence off) with one ``MGET``; the
  arrays are stored in redis with the same serialization as in the KVS.

Data-path section (no platform: the bench process itself reads the 10 arrays, decodes
and sums them): CacheClient through the node cache (warm), AnnaTcpClient (KVS), redis-py.

Freshness section: a value cached by a node cache is overwritten directly in the KVS;
the time from the PUT's acknowledgement to the moment a read through the cache
returns the new value (cfg.cache.push_period_ms = 50).

Writes ``bench/results/locality.{json,md,png}``.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from plotting import pyplot  # noqa: E402 (bench/, the script's own directory)

from anna.client import AnnaTcpClient  # noqa: E402
from cache.client import CacheClient  # noqa: E402
from cache.protocol import ipc_address  # noqa: E402
from cloudburst.client.client import CloudburstConnection  # noqa: E402
from cloudburst.local import free_port_config, wait_ready, write_config  # noqa: E402
from cloudburst.shared import serializer  # noqa: E402
from cloudburst.shared.config import Config  # noqa: E402
from cloudburst.shared.processes import ProcessGroup, free_port, port_open, wait_until  # noqa: E402
from cloudburst.shared.reference import CloudburstReference  # noqa: E402
from cloudburst.shared.values import from_lattice  # noqa: E402
from lattices import LWWPairLattice, make_timestamp  # noqa: E402

RESULTS = ROOT / "bench" / "results"
#: Results file name (``--out``).
OUT = ["locality"]
NARRAYS = 10
WORKERS = 2


def ensure_redis() -> str:
    path = shutil.which("redis-server")
    if path:
        return path
    subprocess.run(["bash", "-c", f"source {ROOT}/scripts/ensure-env.sh; ensure_redis"], check=True)
    path = shutil.which("redis-server")
    if not path:
        raise SystemExit("redis-server is not installed and could not be installed")
    return path


def summarize(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    p99 = s[min(len(s) - 1, int(round(0.99 * (len(s) - 1))))]
    return {
        "median_ms": statistics.median(s) * 1e3,
        "p99_ms": p99 * 1e3,
        "mean_ms": statistics.fmean(s) * 1e3,
        "n": len(s),
    }


def timed(fn: Callable[[], Any], n: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def iterations(size: int, quick: bool) -> int:
    base = {1_000: 200, 10_000: 150, 100_000: 60, 1_000_000: 30, 10_000_000: 5}.get(size, 30)
    if size >= 10_000_000:
        return base
    return max(10, base // 5) if quick else base


# ---- user functions (shipped to executors by value) ------------------------------------


def sum_arrays(_lib: Any, *arrays: Any) -> float:
    """The benchmark function: the sum of all elements of the argument arrays."""
    return float(sum(float(a.sum()) for a in arrays))


def sum_arrays_timed(_lib: Any, *arrays: Any) -> tuple[float, float]:
    """The same, and how long the sum took inside the function (seconds)."""
    import time

    t0 = time.perf_counter()
    total = float(sum(float(a.sum()) for a in arrays))
    return total, time.perf_counter() - t0


_REDIS: dict[int, Any] = {}


def sum_from_redis(_lib: Any, port: int, keys: list[str]) -> float:
    """The same, reading the arrays from redis-server (one MGET)."""
    import redis

    from cloudburst.shared import serializer

    conn = _REDIS.get(port)
    if conn is None:
        conn = _REDIS[port] = redis.Redis(host="127.0.0.1", port=port)
    values = conn.mget(keys)
    return float(sum(float(serializer.from_bytes(v).sum()) for v in values))


# ---- cluster --------------------------------------------------------------------------------


class Cluster:
    def __init__(self, cfg: Config, cloud: CloudburstConnection) -> None:
        self.cfg = cfg
        self.cloud = cloud
        self.kvs_addr = f"{cfg.ip}:{cfg.kvs.routing_port}"

    def node_ids(self) -> list[str]:
        return sorted({e["node_id"] for e in self.cloud.status()["executor_list"]})


def put_arrays(kvs: AnnaTcpClient, redis_conn: Any, sizes: list[int]) -> dict[int, list[str]]:
    keys: dict[int, list[str]] = {}
    rng = np.random.default_rng(0)
    for size in sizes:
        keys[size] = []
        for i in range(NARRAYS):
            key = f"locality/{size}/{i}"
            body = serializer.to_bytes(rng.random(size))
            assert kvs.put(key, LWWPairLattice(make_timestamp(), body))
            if redis_conn is not None:
                redis_conn.set(key, body)
            keys[size].append(key)
    return keys


def bench_config(run_dir: Path, cache_enabled: bool, shm: bool = True) -> Config:
    """A free-port local-mode config for one benchmark cluster."""
    return free_port_config(
        run_dir,
        workers=WORKERS,
        executor={"workers": WORKERS, "base_port": 0, "heartbeat_period_s": 0.25},
        cache={
            "enabled": cache_enabled,
            "push_period_ms": 50,
            "capacity_bytes": 2 << 30,
            "shm_threshold_bytes": 64 * 1024 if shm else 0,
        },
        # (a long heartbeat timeout: a worker copying 800 MB under load may beat late)
        scheduler={"call_timeout_s": 120.0, "heartbeat_timeout_s": 60.0},
        kvs={"request_timeout_s": 120.0},
        log_level="WARNING",
    )


def start_ray() -> Any:
    """``ray`` initialised with 2 CPUs, or None (with the reason printed)."""
    try:
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    except Exception as exc:
        print(f"  ray skipped: {type(exc).__name__}: {exc}", flush=True)
        return None
    return ray


def platform_section(
    run: Path,
    redis_port: int,
    sizes: list[int],
    quick: bool,
    use_ray: bool = True,
    skip: frozenset[str] = frozenset(),
    iters: int = 0,
) -> dict[str, Any]:
    """Two clusters up at once (cache on / off); warm, cold and redis calls alternate
    in short rounds so machine noise hits all three alike."""
    import redis

    out: dict[str, Any] = {}
    ray = start_ray() if use_ray else None
    r_sum = ray.remote(sum_arrays_timed) if ray is not None else None
    rconn = redis.Redis(host="127.0.0.1", port=redis_port)
    with ProcessGroup(log_dir=run / "logs-platform") as group:
        clusters: dict[str, Cluster] = {}
        try:
            modes = ["warm", "warm-heap", "cold"]
            if "warm-heap" in skip:
                modes.remove("warm-heap")
            if {"cold", "redis"} <= skip:
                modes.remove("cold")
            for mode in modes:
                run_dir = run / mode
                run_dir.mkdir(parents=True, exist_ok=True)
                cfg = bench_config(run_dir, mode != "cold", shm=mode == "warm")
                clusters[mode] = _start(group, mode, cfg, run_dir)
            keys: dict[int, list[str]] = {}
            for mode, cl in clusters.items():
                with AnnaTcpClient(cl.kvs_addr, timeout=30.0) as kvs:
                    keys = put_arrays(kvs, rconn if mode == "cold" else None, sizes)
            fns = {"warm": (clusters["warm"].cloud.register(sum_arrays_timed, "sum_arrays"), False)}
            if "warm-heap" in clusters:
                fns["warm-heap"] = (
                    clusters["warm-heap"].cloud.register(sum_arrays, "sum_arrays"),
                    False,
                )
            if "cold" in clusters and "cold" not in skip:
                fns["cold"] = (clusters["cold"].cloud.register(sum_arrays, "sum_arrays"), False)
            if "cold" in clusters and "redis" not in skip:
                fns["redis"] = (
                    clusters["cold"].cloud.register(sum_from_redis, "sum_redis"),
                    True,
                )
            names = [*fns, "floor"] + (["ray"] if ray is not None else [])
            # The sum's own time inside the function (warm, Ray): what the platform adds
            # is the rest of the call.
            inner: dict[str, list[float]] = {"warm": [], "ray": []}
            for size in sizes:
                refs = [CloudburstReference(k) for k in keys[size]]
                expected = None
                with AnnaTcpClient(clusters["warm"].kvs_addr, timeout=60.0) as kvs:
                    got_local = kvs.get(keys[size])
                    local = [from_lattice(got_local[k]) for k in keys[size]]
                ray_refs = [ray.put(a) for a in local] if ray is not None else []

                def call(
                    name: str,
                    refs: list[CloudburstReference] = refs,
                    size: int = size,
                    local: list[Any] = local,
                    ray_refs: list[Any] = ray_refs,
                ) -> Any:
                    if name == "floor":  # compute only: the arrays are in this process
                        return sum_arrays(None, *local)
                    if name == "ray":
                        total, took = ray.get(r_sum.remote(None, *ray_refs), timeout=120)
                        inner["ray"].append(took)
                        return total
                    fn, via_redis = fns[name]
                    if via_redis:
                        return fn(redis_port, keys[size]).get(timeout=120)
                    got = fn(*refs).get(timeout=120)
                    if name == "warm":
                        inner["warm"].append(got[1])
                        return got[0]
                    return got

                try:
                    # warm-up: every worker loads the functions (and, warm, the arrays)
                    for name in names:
                        for _ in range(2 * WORKERS + 2 if size < 10_000_000 else WORKERS + 1):
                            got = call(name)
                            expected = got if expected is None else expected
                            assert abs(got - expected) < 1e-6 * max(1.0, abs(expected)), (name, got)
                    n = iters or iterations(size, quick)
                    per_round = min(5, n)
                    for took in inner.values():
                        took.clear()
                    samples: dict[str, list[float]] = {name: [] for name in names}
                    while len(samples["warm"]) < n:
                        for name in names:
                            for _ in range(per_round):
                                t0 = time.perf_counter()
                                call(name)
                                samples[name].append(time.perf_counter() - t0)
                    for name, s in samples.items():
                        out.setdefault(name, {})[str(size)] = summarize(s)
                    for name, took in inner.items():
                        if took:
                            out.setdefault(f"{name} (sum in function)", {})[str(size)] = summarize(
                                took
                            )
                    print(
                        f"  platform {size:>9,d}: "
                        + ", ".join(
                            f"{name} {out[name][str(size)]['median_ms']:.2f}/{out[name][str(size)]['p99_ms']:.2f}"
                            for name in names
                        )
                        + " ms (median/p99)",
                        flush=True,
                    )
                except Exception as exc:  # (a size that fails is reported, the rest kept)
                    print(f"  platform {size:>9,d}: failed: {exc!r}", flush=True)
                    out.setdefault("failed", {})[str(size)] = f"{type(exc).__name__}: {exc}"
                ray_refs.clear()  # (Ray frees them from its object store)
            out["warm_cache_stats"] = _node_cache_stats(clusters["warm"])
        finally:
            if ray is not None:
                ray.shutdown()
            for cl in clusters.values():
                cl.cloud.close()
            group.stop_all()
    rconn.close()
    return out


def _start(group: ProcessGroup, mode: str, cfg: Config, run_dir: Path) -> Cluster:
    path = write_config(cfg, run_dir / "config.yml")
    group.python(f"{mode}-kvs", "anna.local", "--config", str(path))
    group.python(f"{mode}-scheduler", "scheduler.server", "--config", str(path))
    group.python(f"{mode}-executor", "executor.node", "--config", str(path))
    wait_ready(cfg, WORKERS, timeout=90.0)
    return Cluster(cfg, CloudburstConnection(cfg.ip, cfg.ip, port=cfg.scheduler.port, timeout=60.0))


def _node_cache_stats(cl: Cluster) -> dict[str, Any]:
    stats = {}
    for node in cl.node_ids():
        with CacheClient(
            cfg=cl.cfg, address=ipc_address(cl.cfg.cache.ipc_dir, node), kvs_addr=cl.kvs_addr
        ) as cc:
            stats[node] = cc.stats()
    return stats


def freshness(kvs: AnnaTcpClient, cc: CacheClient, trials: int) -> dict[str, Any]:
    """Lag from a KVS-acknowledged PUT to the value being read through the cache."""
    key = "locality/freshness"
    assert kvs.put(key, LWWPairLattice(make_timestamp(), b"0"))
    assert cc.get(key)[key] is not None
    lags = []
    for i in range(1, trials + 1):
        value = str(i).encode()
        assert kvs.put(key, LWWPairLattice(make_timestamp(), value))
        acked = time.perf_counter()
        while True:
            got = cc.get(key)[key]
            if got is not None and got.reveal() == value:
                break
            if time.perf_counter() - acked > 5:
                raise RuntimeError("an update never reached the cache")
        lags.append(time.perf_counter() - acked)
        time.sleep(0.003 + (i % 7) * 0.007)  # spread writes over the push period
    s = summarize(lags)
    s["max_ms"] = max(lags) * 1e3
    return s


LABELS = {
    "warm": "ours, warm (shared memory)",
    "warm-heap": "ours, warm (socket copy)",
    "cold": "ours, cold (KVS)",
    "ray": "Ray (ray.put refs)",
    "redis": "Redis",
    "floor": "compute only",
    "cache": "node cache",
    "kvs": "KVS",
}


def plot(platform_res: dict[str, Any], datapath: dict[str, Any], sizes: list[int]) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    series = [
        (
            axes[0],
            platform_res,
            ("warm", "warm-heap", "ray", "cold", "redis", "floor"),
            "Cloudburst call (client-timed)",
        ),
        (axes[1], datapath, ("cache", "kvs", "redis"), "data path only (10 reads + decode + sum)"),
    ]
    colors = {
        "warm": "tab:green",
        "ray": "tab:purple",
        "warm-heap": "tab:olive",
        "floor": "black",
        "cache": "tab:green",
        "cold": "tab:blue",
        "kvs": "tab:blue",
        "redis": "tab:red",
    }
    for ax, res, names, title in series:
        for name in names:
            if name not in res:
                continue
            ss = [s for s in sizes if str(s) in res[name]]
            med = [res[name][str(s)]["median_ms"] for s in ss]
            p99 = [res[name][str(s)]["p99_ms"] for s in ss]
            label = LABELS.get(name, name)
            ax.plot(ss, med, "o-", color=colors[name], label=f"{label} median")
            ax.plot(ss, p99, "x--", color=colors[name], alpha=0.6, label=f"{label} p99")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("floats per array (10 arrays)")
        ax.set_ylabel("latency (ms)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    fig.savefig(RESULTS / f"{OUT[0]}.png", dpi=120)


def write_md(res: dict[str, Any], sizes: list[int]) -> None:
    lines = [
        "# Locality benchmark",
        "",
        f"Generated by `bench/locality.py` on {res['meta']['date']} "
        f"({res['meta']['machine']}). A function sums {NARRAYS} float64 numpy arrays passed as "
        "KVS references. Latencies in ms (median / p99).",
        "",
        "## Cloudburst calls (client -> executor -> client)",
        "",
        "| floats per array | warm (shm) | warm-heap (socket copy) | Ray | cold (KVS every call) "
        "| Redis | compute-only floor | warm / floor | warm / Ray | heap / warm | Redis / warm |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    pr = res["platform"]
    none = {"median_ms": float("nan"), "p99_ms": float("nan")}
    for s in sizes:
        k = str(s)
        if k not in pr["warm"]:
            continue
        w, h, ry, c, r, f0 = (
            pr.get(m, {}).get(k, none)
            for m in ("warm", "warm-heap", "ray", "cold", "redis", "floor")
        )
        cells = " | ".join(
            f"{x['median_ms']:.2f} / {x['p99_ms']:.2f}" for x in (w, h, ry, c, r, f0)
        )
        lines.append(
            f"| {s:,} | {cells} | {w['median_ms'] / f0['median_ms']:.2f}x | "
            f"{w['median_ms'] / ry['median_ms']:.2f}x | "
            f"{h['median_ms'] / w['median_ms']:.1f}x | {r['median_ms'] / w['median_ms']:.1f}x |"
        )
    for k, why in pr.get("failed", {}).items():
        lines.append(f"| {int(k):,} | failed: {why} | | | | | | | | | |")
    split = [
        (s, pr["warm (sum in function)"][str(s)], pr.get("ray (sum in function)", {}).get(str(s)))
        for s in sizes
        if str(s) in pr.get("warm (sum in function)", {})
    ]
    if split:
        lines += [
            "",
            "The sum alone, timed inside the function (median / p99 ms; the rest of a "
            "call is the platform's):",
            "",
            "| floats per array | warm: sum in function | warm: rest of the call "
            "| Ray: sum in function | Ray: rest of the call |",
            "| ---: | ---: | ---: | ---: | ---: |",
        ]
        for s, w_in, r_in in split:
            w = pr["warm"][str(s)]
            r = pr.get("ray", {}).get(str(s))
            rest_w = w["median_ms"] - w_in["median_ms"]
            ray_cells = (
                f"{r_in['median_ms']:.2f} / {r_in['p99_ms']:.2f} | "
                f"{r['median_ms'] - r_in['median_ms']:.2f}"
                if r_in and r
                else "- | -"
            )
            lines.append(
                f"| {s:,} | {w_in['median_ms']:.2f} / {w_in['p99_ms']:.2f} | {rest_w:.2f} | "
                f"{ray_cells} |"
            )
    dp = res["datapath"]
    sizes = [s for s in sizes if str(s) in dp.get("cache", {})]
    lines += [
        "",
        "## Data path only (bench process reads 10 arrays, decodes, sums)",
        "",
        "| floats per array | node cache (CacheClient) | KVS (AnnaTcpClient) | redis-py MGET |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for s in sizes:
        k = str(s)
        a, b, c = dp["cache"][k], dp["kvs"][k], dp["redis"][k]
        lines.append(
            f"| {s:,} | {a['median_ms']:.2f} / {a['p99_ms']:.2f} | {b['median_ms']:.2f} / "
            f"{b['p99_ms']:.2f} | {c['median_ms']:.2f} / {c['p99_ms']:.2f} |"
        )
    f = res["freshness"]
    if f is None:
        lines += ["", f"![latency vs size]({OUT[0]}.png)", ""]
        (RESULTS / f"{OUT[0]}.md").write_text("\n".join(lines))
        return
    lines += [
        "",
        "## Freshness (push period 50 ms)",
        "",
        f"Lag from a KVS-acknowledged PUT to the new value being read through a node cache "
        f"that held the old one, {f['n']} trials: median {f['median_ms']:.1f} ms, "
        f"p99 {f['p99_ms']:.1f} ms, max {f['max_ms']:.1f} ms.",
        "",
        f"![latency vs size]({OUT[0]}.png)",
        "",
    ]
    (RESULTS / f"{OUT[0]}.md").write_text("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", default="1000,10000,100000,1000000,10000000")
    parser.add_argument("--no-ray", action="store_true", help="leave Ray out")
    parser.add_argument(
        "--skip", default="", help="variants to leave out: warm-heap,cold,redis (comma list)"
    )
    parser.add_argument("--iterations", type=int, default=0, help="calls per variant")
    parser.add_argument(
        "--out", default="locality", help="results name (bench/results/<out>.{json,md,png})"
    )
    parser.add_argument("--platform-only", action="store_true", help="no data path/freshness")
    args = parser.parse_args()
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    OUT[0] = args.out
    if args.quick and args.sizes == parser.get_default("sizes"):
        sizes = [1000, 100_000]
    redis_bin = ensure_redis()
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="locality-") as tmp:
        run = Path(tmp)
        redis_port = free_port()
        with ProcessGroup(log_dir=run / "logs") as group:
            group.start(
                "redis",
                [
                    redis_bin,
                    "--port",
                    str(redis_port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--protected-mode",
                    "no",
                ],
            )
            wait_until(lambda: port_open("127.0.0.1", redis_port), timeout=10, what="redis")
            print("platform section", flush=True)
            platform_res = platform_section(
                run,
                redis_port,
                sizes,
                args.quick,
                use_ray=not args.no_ray,
                skip=frozenset(x for x in args.skip.split(",") if x),
                iters=args.iterations,
            )
            datapath: dict[str, Any] = {}
            fresh: dict[str, Any] | None = None
            if not args.platform_only:
                print("data path + freshness", flush=True)
                # The data path reuses the arrays: write them into a fresh KVS + redis keys.
                import redis

                dp_cfg = free_port_config(
                    run / "dp",
                    cache={"push_period_ms": 50, "capacity_bytes": 1 << 30},
                    kvs={"request_timeout_s": 30.0},
                    log_level="WARNING",
                )
                dp_sizes = [s for s in sizes if s <= 1_000_000]  # the data path: up to 1e6
                datapath, fresh = _datapath(dp_cfg, run, redis_port, dp_sizes, args.quick, redis)
    res = {
        "meta": {
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
            "narrays": NARRAYS,
            "workers": WORKERS,
            "quick": args.quick,
            "sizes": sizes,
            "load_average": os.getloadavg(),
        },
        "platform": platform_res,
        "datapath": datapath,
        "freshness": fresh,
    }
    (RESULTS / f"{OUT[0]}.json").write_text(json.dumps(res, indent=2, default=str))
    write_md(res, sizes)
    plot(platform_res, datapath, sizes)
    print((RESULTS / f"{OUT[0]}.md").read_text())
    return 0


def _datapath(
    cfg: Config, run: Path, redis_port: int, sizes: list[int], quick: bool, redis: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    run_dir = run / "datapath"
    run_dir.mkdir(parents=True, exist_ok=True)
    path = write_config(cfg, run_dir / "config.yml")
    with ProcessGroup(log_dir=run_dir / "logs") as group:
        group.python("kvs", "anna.local", "--config", str(path))
        wait_until(
            lambda: (
                port_open(cfg.ip, cfg.kvs.routing_port)
                and port_open(cfg.ip, cfg.kvs.shard_base_port)
            ),
            timeout=30,
            what="KVS",
        )
        kvs_addr = f"{cfg.ip}:{cfg.kvs.routing_port}"
        rconn = redis.Redis(host="127.0.0.1", port=redis_port)
        with AnnaTcpClient(kvs_addr, timeout=30.0) as kvs:
            put_arrays(kvs, rconn, sizes)
        rconn.close()
        group.python(
            "cache", "cache.server", "--config", str(path), "--node-id", "bench", "--kvs", kvs_addr
        )
        return _measure_datapath(cfg, kvs_addr, redis_port, sizes, quick, redis)


def _measure_datapath(
    cfg: Config, kvs_addr: str, redis_port: int, sizes: list[int], quick: bool, redis: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    out: dict[str, Any] = {}
    rconn = redis.Redis(host="127.0.0.1", port=redis_port)
    with (
        AnnaTcpClient(kvs_addr, timeout=30.0) as kvs,
        CacheClient("bench", cfg, kvs_addr=kvs_addr, timeout=30.0) as cc,
    ):
        wait_until(lambda: cc.ping(), timeout=20, what="cache")

        def via(client: Any, ks: list[str]) -> float:
            got = client.get(ks)
            return float(sum(float(from_lattice(got[k]).sum()) for k in ks))

        def via_redis(ks: list[str]) -> float:
            return float(sum(float(serializer.from_bytes(v).sum()) for v in rconn.mget(ks)))

        for size in sizes:
            n = iterations(size, quick)
            ks = [f"locality/{size}/{i}" for i in range(NARRAYS)]
            for name, fn in (
                ("cache", lambda ks=ks: via(cc, ks)),
                ("kvs", lambda ks=ks: via(kvs, ks)),
                ("redis", lambda ks=ks: via_redis(ks)),
            ):
                out.setdefault(name, {})[str(size)] = summarize(timed(fn, n))
            print(
                f"  datapath {size:>9,d}: cache {out['cache'][str(size)]['median_ms']:.2f} "
                f"kvs {out['kvs'][str(size)]['median_ms']:.2f} "
                f"redis {out['redis'][str(size)]['median_ms']:.2f} ms (medians)",
                flush=True,
            )
        fresh = freshness(kvs, cc, trials=30 if quick else 200)
        fresh["cache_stats"] = cc.stats()
    rconn.close()
    return out, fresh


if __name__ == "__main__":
    raise SystemExit(main())
