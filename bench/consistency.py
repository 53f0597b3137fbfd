"""Consistency modes in small (the Cloudburst paper's experiment): anomalies and latency.

A local cluster (KVS, scheduler, one executor node with 3 workers, free ports), and:

1. **latency** of the composition DAG ``incr -> square`` where both functions read a
   shared key ``k`` (the state a real pipeline reads), ``--calls`` calls per mode:
   NORMAL, SINGLE, and MULTI (which needs ``output_key``: it stores a causal result,
   so NORMAL with the same ``output_key`` is measured beside it);
2. **anomalies**: a writer thread overwrites ``k`` (LWW) and writes the causal pair
   ``a`` then ``b`` (``b`` depends on that ``a``) continuously: ``a`` straight to the
   KVS, ``k`` and ``b`` from a function through the node cache (so the cache is fresh
   for ``b`` and, until the KVS pushes it, stale for ``a``), while reader threads call
   the DAG ``f -> g``: ``f`` reads ``k`` and ``b``, holds ``--hold-ms``, ``g`` reads
   ``k`` and ``a``. A repeatable-read anomaly: ``g``'s ``k`` differs from
   ``f``'s. A causal anomaly: ``g``'s ``a`` is older than the ``a`` that ``f``'s ``b``
   depends on.

Writes ``bench/results/consistency.json`` and ``consistency.md``.
Run: ``.venv/bin/python bench/consistency.py [--calls 500] [--trials 300]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"


def _stats(lat: list[float]) -> dict[str, float]:
    lat = sorted(lat)
    return {
        "median_us": statistics.median(lat) * 1e6,
        "p99_us": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e6,
    }


def _causal_value(lattice: Any) -> int:
    from executor.session import causal_values

    return max(causal_values(lattice)) if lattice is not None else -1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--trials", type=int, default=300)
    ap.add_argument("--readers", type=int, default=1)
    ap.add_argument("--hold-ms", type=float, default=2.0)
    args = ap.parse_args(argv)

    from cloudburst.client.client import MULTI, NORMAL, SINGLE, CloudburstConnection
    from cloudburst.local import free_port_config, wait_ready, write_config
    from cloudburst.shared import serializer
    from cloudburst.shared.processes import ProcessGroup
    from lattices import MultiKeyCausalLattice, VectorClock

    modes = {"NORMAL": NORMAL, "SINGLE": SINGLE, "MULTI": MULTI}
    run = Path(tempfile.mkdtemp(prefix="cb-bench-consistency-"))
    cfg = free_port_config(run, workers=3, log_level="WARNING")
    path = write_config(cfg, run / "config.yml")
    report: dict[str, Any] = {"calls": args.calls, "trials": args.trials}
    with ProcessGroup(log_dir=run / "logs") as group:
        group.python("kvs", "anna.local", "--config", str(path))
        group.python("scheduler", "scheduler.server", "--config", str(path))
        group.python("executor", "executor.node", "--config", str(path))
        wait_ready(cfg, 3, 60)
        conn = CloudburstConnection(cfg.ip, cfg.ip, port=cfg.scheduler.port, timeout=30)
        try:
            conn.put_object("bench/k", 1)

            def incr(lib: Any, x: int) -> int:
                return x + (lib.get("bench/k") or 0)

            def square(lib: Any, x: int) -> int:
                return x * x + 0 * (lib.get("bench/k") or 0)

            conn.register(incr, "c_incr")
            conn.register(square, "c_square")
            conn.register_dag("c_comp", ["c_incr", "c_square"], [("c_incr", "c_square")])
            latency: dict[str, Any] = {}
            variants = [
                ("NORMAL", NORMAL, False),
                ("SINGLE", SINGLE, False),
                ("NORMAL+output_key", NORMAL, True),
                ("MULTI", MULTI, True),
            ]
            # Round robin over the modes, call by call: a loaded machine's noise hits
            # every mode alike.
            kws: dict[str, dict[str, Any]] = {}
            for label, mode, out in variants:
                kws[label] = {"consistency": mode}
                if out:  # (a MULTI output is a causal lattice: a key of its own)
                    kws[label].update(output_key=f"bench/out/{label}", client_id="bench")
                for i in range(args.warmup):
                    conn.call_dag("c_comp", {"c_incr": i}, **kws[label]).get(timeout=30)
            lats: dict[str, list[float]] = {label: [] for label in kws}
            for i in range(args.calls):
                for label, kw in kws.items():
                    t0 = time.perf_counter()
                    got = conn.call_dag("c_comp", {"c_incr": i}, **kw).get(timeout=30)
                    lats[label].append(time.perf_counter() - t0)
                    assert got == (i + 1) ** 2, got
            for label in kws:
                latency[label] = _stats(lats[label])
                print(label, latency[label], flush=True)
            base = latency["NORMAL"]["median_us"]
            latency["SINGLE"]["x_normal"] = latency["SINGLE"]["median_us"] / base
            latency["MULTI"]["x_normal"] = latency["MULTI"]["median_us"] / base
            latency["MULTI"]["x_normal_output_key"] = (
                latency["MULTI"]["median_us"] / latency["NORMAL+output_key"]["median_us"]
            )
            report["latency"] = latency

            # --- anomalies ------------------------------------------------------------
            hold = args.hold_ms / 1000

            def f(lib: Any, hold: float) -> tuple[Any, int]:
                k = lib.get("bench/rk")
                b = lib.get("bench/b")
                time.sleep(hold)
                dep = b.dependencies["bench/a"].get("w") if b is not None else -1
                return k, dep

            def g(lib: Any, k: Any, dep: int) -> tuple[Any, Any, int, int]:
                a = lib.get("bench/a")
                return k, lib.get("bench/rk"), dep, (a.vector_clock.get("w") if a else -1)

            def write_through(lib: Any, n: int) -> None:
                from cloudburst.shared import serializer
                from lattices import MultiKeyCausalLattice, VectorClock

                lib.put("bench/rk", n)
                deps = {"bench/a": VectorClock({"w": n})}
                lib.put("bench/b", MultiKeyCausalLattice({"w": n}, deps, {serializer.to_bytes(n)}))

            conn.register(write_through, "c_w")
            conn.register(f, "c_f")
            conn.register(g, "c_g")
            conn.register_dag("c_anom", ["c_f", "c_g"], [("c_f", "c_g")])

            def causal(n: int, deps: dict[str, Any]) -> Any:
                return MultiKeyCausalLattice({"w": n}, deps, {serializer.to_bytes(n)})

            conn.put_object("bench/rk", 0)
            conn.put_object("bench/a", causal(0, {}))
            conn.put_object("bench/b", causal(0, {"bench/a": VectorClock({"w": 0})}))
            stop = threading.Event()

            def writer() -> None:
                n = 0
                w = CloudburstConnection(cfg.ip, cfg.ip, port=cfg.scheduler.port, timeout=30)
                try:
                    while not stop.is_set():
                        n += 1
                        # a straight to the KVS (the node cache learns it by a push, up to
                        # a push period later); rk and b through the node cache (seen
                        # there at once): a cache that is fresh for b, stale for a.
                        w.put_object("bench/a", causal(n, {}))
                        w.exec_func("c_w", [n]).get(timeout=30)
                finally:
                    w.close()

            anomalies: dict[str, Any] = {}
            for label, mode in modes.items():
                counts = {"repeatable_read": 0, "causal": 0, "calls": 0}
                lock = threading.Lock()

                def reader(
                    r: int, mode: int = mode, counts: dict[str, int] = counts, lock: Any = lock
                ) -> None:
                    c = CloudburstConnection(cfg.ip, cfg.ip, port=cfg.scheduler.port, timeout=30)
                    try:
                        for _ in range(args.trials // args.readers):
                            kw: dict[str, Any] = {"consistency": mode}
                            if mode == MULTI:
                                kw.update(output_key=f"bench/o{r}", client_id=f"reader{r}")
                            fk, gk, dep, a = c.call_dag("c_anom", {"c_f": hold}, **kw).get(
                                timeout=30
                            )
                            with lock:
                                counts["calls"] += 1
                                counts["repeatable_read"] += fk != gk
                                counts["causal"] += a < dep
                    finally:
                        c.close()

                stop.clear()
                wt = threading.Thread(target=writer, daemon=True)
                wt.start()
                readers = [threading.Thread(target=reader, args=(r,)) for r in range(args.readers)]
                for t in readers:
                    t.start()
                for t in readers:
                    t.join(timeout=300)
                stop.set()
                wt.join(timeout=30)
                anomalies[label] = counts
                print(label, counts, flush=True)
            report["anomalies"] = anomalies
            stats = conn.status()
            report["executors"] = stats["executors"]
        finally:
            conn.close()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "consistency.json").write_text(json.dumps(report, indent=2))
    lines = [
        "| mode | median µs | p99 µs | × NORMAL |",
        "| --- | --- | --- | --- |",
    ]
    for label, st in report["latency"].items():
        ratio = st.get("x_normal")
        lines.append(
            f"| {label} | {st['median_us']:.0f} | {st['p99_us']:.0f} | "
            f"{'' if ratio is None else f'{ratio:.2f}'} |"
        )
    lines += [
        "",
        "| mode | calls | repeatable-read anomalies | causal anomalies |",
        "| --- | --- | --- | --- |",
    ]
    for label, c in report["anomalies"].items():
        lines.append(f"| {label} | {c['calls']} | {c['repeatable_read']} | {c['causal']} |")
    (RESULTS / "consistency.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
