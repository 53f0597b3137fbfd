"""Gathering 1,000 concurrent calls: ``wait(futures)`` against ``get()`` on each.

``python bench/gather.py`` starts a private local cluster (free ports, a temp dir,
3 workers), then alternates the two ways ``--rounds`` times: ``sq.map`` starts 1,000
calls of a square (no bound on in-flight calls), then they are gathered; it prints
the wall and client CPU time of the gathering (from the end of ``map`` until every
future is done: ``wait`` returning, or the last ``get``) per round and the medians. Issue 14: "1,000 concurrent calls gathered with wait cost no more than
calling get() on each".
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from cloudburst.client import wait


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ (run from anywhere)
    from tests.integration.conftest import start_cluster

    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = start_cluster(Path(tmp), workers=3)
        try:
            with cluster.connect(timeout=30) as cloud:
                sq = cloud.register(lambda _, x: x * x, "bench_gather_sq")
                sq(1).get(timeout=30)
                res: dict[str, list[tuple[float, float, float]]] = {"wait": [], "get": []}
                for rnd in range(args.rounds):
                    # Alternate which way goes first: the cluster warms up over a run.
                    order = ("get", "wait") if rnd % 2 == 0 else ("wait", "get")
                    for how in order:
                        t0 = time.perf_counter()
                        futs = sq.map(range(args.calls), max_in_flight=None)
                        w0, c0 = time.perf_counter(), time.process_time()
                        if how == "wait":
                            done, not_done = wait(futs, timeout=300)
                            assert not not_done
                        else:
                            values = [f.get(timeout=300) for f in futs]
                        end = time.perf_counter()
                        wall, cpu, total = end - w0, time.process_time() - c0, end - t0
                        if how == "wait":  # (the values, once all are here: not timed)
                            values = [f.get(0) for f in futs]
                        assert values == [x * x for x in range(args.calls)]
                        res[how].append((wall, cpu, total))
                        print(
                            f"{how}: start+gather {total * 1e3:.1f} ms; gather wall"
                            f" {wall * 1e3:.1f} ms, client CPU {cpu * 1e3:.1f} ms"
                        )
                for how, rows in res.items():
                    print(
                        f"median {how}: start+gather {statistics.median(r[2] for r in rows) * 1e3:.1f}"
                        f" ms; gather wall {statistics.median(r[0] for r in rows) * 1e3:.1f} ms,"
                        f" client CPU {statistics.median(r[1] for r in rows) * 1e3:.1f} ms"
                    )
        finally:
            cluster.group.stop_all()


if __name__ == "__main__":
    main()
