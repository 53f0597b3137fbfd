"""Elasticity: a 50 ms sleep function under rising and stepped load, an elastic worker
pool against a fixed pool of the same maximum size.

Two local clusters (KVS, scheduler, one executor node) on free ports, one after the
other:

- ``elastic``: ``executor.workers`` = ``--min`` (3), ``max_workers`` = ``--max`` (8),
  ``grow_after_s`` 0.2, ``idle_retire_s`` 3 (docs/elasticity.md);
- ``fixed``: ``--max`` workers, ``elastic: false``.

On each, an open-loop client (calls sent at a fixed rate whatever the answers) runs

1. a **ramp**: ``--rates`` calls/s (default 10,20,40,80,120,160), ``--phase`` seconds
   each;
   throughput = calls answered during the phase per second (whichever phase sent
   them), p99 = latency of the calls the phase sent;
2. a **step**: 10 calls/s for 5 s, 100 calls/s (x10) for 10 s, 10 calls/s for 10 s;
   every call's latency against its send time, and the live worker count (scheduler
   status every 0.5 s).

Writes ``bench/results/scaling.json``, ``scaling.md`` and ``scaling.png``. Run:
``.venv/bin/python bench/scaling.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from plotting import pyplot  # noqa: E402 (bench/, the script's own directory)

from cloudburst.client.client import CloudburstConnection  # noqa: E402
from cloudburst.local import free_port_config, wait_ready, write_config  # noqa: E402
from cloudburst.shared.processes import ProcessGroup  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def sleep50(_: Any, x: int) -> int:
    import time

    time.sleep(0.05)
    return x


class Cluster:
    def __init__(
        self, run_dir: Path, workers: int, executor: dict[str, Any], log_level: str = "WARNING"
    ) -> None:
        self.cfg = free_port_config(
            run_dir,
            workers=workers,
            scheduler={"call_timeout_s": 60.0},
            executor={"workers": workers, "base_port": 0, "heartbeat_period_s": 0.25, **executor},
            log_level=log_level,
        )
        path = write_config(self.cfg, run_dir / "config.yml")
        self.group = ProcessGroup(log_dir=run_dir / "logs")
        try:
            self.group.python("kvs", "anna.local", "--config", str(path))
            self.group.python("scheduler", "scheduler.server", "--config", str(path))
            self.group.python("executor", "executor.node", "--config", str(path))
            wait_ready(self.cfg, workers, timeout=120.0)
        except BaseException:
            self.group.stop_all()
            raise

    def connect(self, **kw: Any) -> CloudburstConnection:
        return CloudburstConnection(
            self.cfg.ip, self.cfg.ip, port=self.cfg.scheduler.port, timeout=30.0, **kw
        )

    def close(self) -> None:
        self.group.stop_all()


class Sampler(threading.Thread):
    """The live worker count every ``period`` seconds."""

    def __init__(self, cluster: Cluster, t0: float, period: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.conn = cluster.connect(direct=False)
        self.t0, self.period = t0, period
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                n = int(self.conn.status()["executors"])
                self.samples.append((time.monotonic() - self.t0, n))
            except Exception:
                pass
            self.stop.wait(self.period)

    def finish(self) -> list[tuple[float, int]]:
        self.stop.set()
        self.join(timeout=10)
        self.conn.close()
        return self.samples


def open_loop(
    conn: CloudburstConnection, phases: list[tuple[float, float]], t0: float
) -> list[dict[str, Any]]:
    """Send calls at each phase's rate for its duration; every call's send time,
    phase and latency (None: failed or not answered within 10 s of the end)."""
    calls: list[dict[str, Any]] = []
    pending = []

    def done(rec: dict[str, Any]) -> Any:
        def cb(fut: Any) -> None:
            ok = fut.exception(timeout=0) is None
            rec["done"] = time.monotonic()
            rec["latency"] = rec["done"] - rec["sent"] if ok else None

        return cb

    for index, (duration, rate) in enumerate(phases):
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < duration:
            due = start + n / rate
            while time.monotonic() < due:
                if pending:
                    pending[0].done()  # receive what arrived (runs the callbacks)
                    while pending and pending[0].done():
                        pending.pop(0)
                time.sleep(0.0005)
            rec = {"phase": index, "sent": time.monotonic(), "latency": None, "done": None}
            fut = conn.exec_func("sleep50", [n])
            fut.add_done_callback(done(rec))
            calls.append(rec)
            pending.append(fut)
            n += 1
    deadline = time.monotonic() + 10.0
    for fut in pending:
        try:
            fut.get(timeout=max(0.1, deadline - time.monotonic()))
        except Exception:
            pass
    for rec in calls:
        rec["sent"] -= t0
        if rec["done"] is not None:
            rec["done"] -= t0
    return calls


def run_config(name: str, cluster: Cluster, rates: list[float], phase_s: float) -> dict[str, Any]:
    conn = cluster.connect()
    try:
        conn.register(sleep50, "sleep50")
        assert conn.exec_func("sleep50", [1]).get(timeout=30) == 1
        t0 = time.monotonic()
        sampler = Sampler(cluster, t0)
        sampler.start()
        ramp = open_loop(conn, [(phase_s, r) for r in rates], t0)
        ramp_workers = sampler.finish()
        time.sleep(5.0)  # let an elastic pool shrink before the step
        t1 = time.monotonic()
        sampler = Sampler(cluster, t1)
        sampler.start()
        step = open_loop(conn, [(5.0, 10.0), (10.0, 100.0), (10.0, 10.0)], t1)
        step_workers = sampler.finish()
    finally:
        conn.close()
    throughput = []
    for i, rate in enumerate(rates):
        recs = [c for c in ramp if c["phase"] == i]
        ok = [c for c in recs if c["latency"] is not None]
        lat = sorted(c["latency"] for c in ok)
        # answers that arrived during the phase (whichever phase sent them)
        lo, hi = i * phase_s, (i + 1) * phase_s
        answered = sum(1 for c in ramp if c["latency"] is not None and lo <= c["done"] < hi)
        throughput.append(
            {
                "offered": rate,
                "throughput": answered / phase_s,
                "failed": len(recs) - len(ok),
                "p50_ms": 1e3 * lat[len(lat) // 2] if lat else None,
                "p99_ms": 1e3 * lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None,
            }
        )
    return {
        "name": name,
        "throughput": throughput,
        "ramp_workers": ramp_workers,
        "step": [(c["sent"], c["latency"]) for c in step],
        "step_workers": step_workers,
        "avg_workers_ramp": _time_avg(ramp_workers),
        "avg_workers_step": _time_avg(step_workers),
    }


def _time_avg(samples: list[tuple[float, int]]) -> float:
    if len(samples) < 2:
        return float(samples[0][1]) if samples else 0.0
    total = sum((b[0] - a[0]) * a[1] for a, b in zip(samples, samples[1:], strict=False))
    return total / (samples[-1][0] - samples[0][0])


def write(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "min_workers": args.min,
        "max_workers": args.max,
        "phase_s": args.phase,
        "loadavg": os.getloadavg()[0],
    }
    (RESULTS / "scaling.json").write_text(json.dumps({"meta": meta, "runs": results}, indent=1))
    by = {r["name"]: r for r in results}
    lines = [
        f"50 ms sleep function, open loop; elastic pool {args.min}..{args.max} workers vs "
        f"a fixed pool of {args.max}; {meta['cpus']} CPUs, load average {meta['loadavg']:.1f}.",
        "",
        "| offered calls/s | elastic calls/s | fixed calls/s | elastic/fixed | elastic p99 ms "
        "| fixed p99 ms |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for e, f in zip(by["elastic"]["throughput"], by["fixed"]["throughput"], strict=True):
        ratio = e["throughput"] / f["throughput"] if f["throughput"] else float("nan")
        lines.append(
            f"| {e['offered']:g} | {e['throughput']:.1f} | {f['throughput']:.1f} | "
            f"{ratio:.0%} | {_ms(e['p99_ms'])} | {_ms(f['p99_ms'])} |"
        )
    lines += [
        "",
        "| | elastic | fixed |",
        "| --- | --- | --- |",
        f"| workers on average, ramp | {by['elastic']['avg_workers_ramp']:.1f} | "
        f"{by['fixed']['avg_workers_ramp']:.1f} |",
        f"| workers on average, step | {by['elastic']['avg_workers_step']:.1f} | "
        f"{by['fixed']['avg_workers_step']:.1f} |",
    ]
    for r in results:
        step = r["step"]
        during = sorted(lat for t, lat in step if lat is not None and 5.0 <= t < 15.0)
        if during:
            lines.append(
                f"| step: p50 / p99 ms at 100 calls/s ({r['name']}) | "
                f"{1e3 * during[len(during) // 2]:.0f} / "
                f"{1e3 * during[int(len(during) * 0.99)]:.0f} | |"
            )
    (RESULTS / "scaling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plt = pyplot()
    if plt is None:
        return
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for r in results:
        xs = [t["offered"] for t in r["throughput"]]
        a1.plot(xs, [t["throughput"] for t in r["throughput"]], marker="o", label=r["name"])
    a1.plot(xs, xs, ":", color="grey", label="offered")
    a1.set_xlabel("offered load (calls/s)")
    a1.set_ylabel("throughput (calls/s)")
    a1.set_title("50 ms function: throughput vs offered load")
    a1.legend()
    a3 = a2.twinx()
    for r, color in zip(results, ("tab:blue", "tab:orange"), strict=False):
        pts = [(t, lat * 1e3) for t, lat in r["step"] if lat is not None]
        a2.scatter([p[0] for p in pts], [p[1] for p in pts], s=3, color=color, label=r["name"])
        ws = r["step_workers"]
        a3.step([w[0] for w in ws], [w[1] for w in ws], where="post", color=color, alpha=0.6)
    a2.axvspan(5.0, 15.0, color="grey", alpha=0.1)
    a2.set_yscale("log")
    a2.set_xlabel("time (s); shaded: 100 calls/s, else 10")
    a2.set_ylabel("latency (ms, dots)")
    a3.set_ylabel("workers (lines)")
    a2.set_title("latency and workers through a x10 load step")
    a2.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(RESULTS / "scaling.png", dpi=120)


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--min", type=int, default=3)
    parser.add_argument("--max", type=int, default=8)
    parser.add_argument("--rates", default="10,20,40,80,120,160")
    parser.add_argument("--phase", type=float, default=6.0)
    parser.add_argument("--quick", action="store_true", help="3 s phases, rates 20,80,160")
    args = parser.parse_args()
    if args.quick:
        args.phase, args.rates = 3.0, "20,80,160"
    rates = [float(r) for r in args.rates.split(",")]
    results = []
    for name in ("elastic", "fixed"):
        with tempfile.TemporaryDirectory(prefix=f"cb-scaling-{name}-") as tmp:
            if name == "elastic":
                executor = {"max_workers": args.max, "grow_after_s": 0.2, "idle_retire_s": 3.0}
                cluster = Cluster(Path(tmp), args.min, executor)
            else:
                cluster = Cluster(Path(tmp), args.max, {"elastic": False})
            try:
                print(f"[scaling] {name}", flush=True)
                results.append(run_config(name, cluster, rates, args.phase))
            finally:
                cluster.close()
    write(results, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
