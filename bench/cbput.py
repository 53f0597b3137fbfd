"""``cb.put`` of a large array from a worker (issue 16, point 5): the socket path (the
path before) vs the adopted segment (the worker serializes once into shared memory, the
node cache takes the file over), against one memcpy of the array in the same worker.

    .venv/bin/python bench/cbput.py              # 100 MB, 15 rounds
    .venv/bin/python bench/cbput.py --mb 10 --rounds 10

Every sample is timed *inside* the worker (``perf_counter`` around the operation; the
call's own cost is not in it):

* **put, segment (now)**: ``cb.put(key, arr)``: until the KVS acknowledged it;
* **put, socket (before)**: ``cache_client.put(key, to_lattice(arr))``, what ``cb.put``
  ran before: the ``Value`` and LWW payload built in the worker, sent over the ipc
  socket, copied by the cache into its KeyRequest and later into a segment;
* **serialize, segment**: the worker's part of the segment put alone: the LWW payload
  written into a new ``/dev/shm`` file (``pwrite``: one copy), then unlinked;
* **serialize, socket**: the worker's part before: ``to_lattice`` + the LWW payload
  (two joins, two copies) that then go into the socket;
* **memcpy (fresh)**: ``arr.copy()`` in the worker (new pages, like a new segment).

Both puts go on to the KVS (100 MB over TCP into the shard, which keeps it and writes
its WAL, ``wal_fsync: never`` here): that part is the same for both. All variants are
interleaved in rounds. Writes ``bench/results/cbput.{json,md}``.
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

from cloudburst.client.client import CloudburstConnection  # noqa: E402
from cloudburst.local import free_port_config, wait_ready, write_config  # noqa: E402
from cloudburst.shared.processes import ProcessGroup  # noqa: E402

RESULTS = ROOT / "bench" / "results"
VARIANTS = ("put, segment (now)", "put, socket (before)", "serialize, segment",
            "serialize, socket", "memcpy (fresh)")  # fmt: skip


def timed_put(lib: Any, n: int, variant: str) -> float:
    """Runs on the executor: the time of one ``variant`` on an array of ``n`` float64."""
    import builtins
    import os
    import time

    import numpy as np

    from cache.shm import lww_file_pieces, write_segment
    from cloudburst.shared import serializer
    from cloudburst.shared.values import to_lattice
    from lattices import codec, make_timestamp

    held = builtins.__dict__.setdefault("_cb_bench_arrays", {})
    arr = held.get(n)
    if arr is None:
        arr = held[n] = np.arange(n, dtype=np.float64)
    state = lib._state
    t0 = time.perf_counter()
    if variant == "put, segment (now)":
        assert lib.put("bench/cbput-now", arr)
    elif variant == "put, socket (before)":
        assert state.put("bench/cbput-before", to_lattice(arr))
    elif variant == "serialize, segment":
        lay = serializer.layout(arr)
        size, off, pieces = lww_file_pieces(make_timestamp(), lay)
        name = f"cbput-bench-{os.getpid()}"
        write_segment(state.cfg.cache.shm_dir, name, size, pieces)
        os.unlink(os.path.join(state.cfg.cache.shm_dir, name))
    elif variant == "serialize, socket":
        codec.to_payload(to_lattice(arr))
    elif variant == "memcpy (fresh)":
        arr.copy()
    else:
        raise ValueError(variant)
    return time.perf_counter() - t0


def summarize(s: list[float]) -> dict[str, float]:
    s = sorted(s)
    return {
        "median_ms": statistics.median(s) * 1e3,
        "p99_ms": s[min(len(s) - 1, round(0.99 * (len(s) - 1)))] * 1e3,
        "n": len(s),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=float, default=100.0)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    n = int(args.mb * 1e6 / 8)
    samples: dict[str, list[float]] = {k: [] for k in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="cbput-") as tmp, ProcessGroup() as group:
        d = Path(tmp)
        cfg = free_port_config(
            d,
            workers=1,
            executor={"workers": 1, "base_port": 0},
            cache={"capacity_bytes": 1 << 30},
            scheduler={"call_timeout_s": 120.0, "heartbeat_timeout_s": 30.0},
            kvs={"request_timeout_s": 30.0, "wal_fsync": "never"},
            log_level="WARNING",
        )
        path = write_config(cfg, d / "config.yml")
        group.python("kvs", "anna.local", "--config", str(path))
        group.python("scheduler", "scheduler.server", "--config", str(path))
        group.python("executor", "executor.node", "--config", str(path))
        wait_ready(cfg, 1, timeout=120.0)
        cloud = CloudburstConnection(cfg.ip, cfg.ip, port=cfg.scheduler.port, timeout=120.0)
        try:
            fn = cloud.register(timed_put, "timed_put")
            for v in VARIANTS:  # warm-up: the worker builds its array, the cache its keys
                for _ in range(2):
                    fn(n, v).get(timeout=120)
            for _ in range(args.rounds):
                for v in VARIANTS:
                    samples[v].append(float(fn(n, v).get(timeout=120)))
        finally:
            cloud.close()
    res = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, load average {os.getloadavg()[0]:.2f}",
        "mb": args.mb,
        "rounds": args.rounds,
        "variants": {k: summarize(v) for k, v in samples.items()},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "cbput.json").write_text(json.dumps(res, indent=2))
    v = res["variants"]
    fresh = v["memcpy (fresh)"]["median_ms"]
    lines = [
        f"# cb.put of a {args.mb:g} MB array from a worker",
        "",
        f"`bench/cbput.py`, {res['when']}, {res['machine']}; {args.rounds} rounds, "
        "variants interleaved, timed in the worker. Median / p99 in ms.",
        "",
        "| variant | median | p99 | median / memcpy (fresh) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, s in v.items():
        lines.append(
            f"| {name} | {s['median_ms']:.1f} | {s['p99_ms']:.1f} | {s['median_ms'] / fresh:.2f} |"
        )
    (RESULTS / "cbput.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
