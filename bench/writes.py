"""What ``cb.put`` / ``put_object`` of a large array costs before it leaves the process
(issue 16, point 5): the value's ``Value`` message and its LWW payload, protobuf's way
(the first path) vs by one join each (``serializer.to_bytes``, ``LWWPairLattice.serialize``,
the previous round) vs what ``cb.put`` does now (one ``pwrite`` into a new shared-memory
file the node cache adopts) and ``put_object`` now (the ``Value``'s pieces, views of the
array, no copy), against one in-process memcpy of the array. Interleaved rounds.

    .venv/bin/python bench/writes.py [--mb 100] [--rounds 15]

Writes ``bench/results/writes.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from anna.proto import anna_pb2  # noqa: E402
from cloudburst.shared import serializer  # noqa: E402
from cloudburst.shared.proto import cloudburst_pb2 as pb  # noqa: E402
from lattices import codec, make_timestamp  # noqa: E402
from lattices.lww import LWWPairLattice  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def before(arr: np.ndarray) -> bytes:
    """The path before: protobuf builds both messages."""
    value = pb.Value(type=serializer.NUMPY, body=serializer._encode_array(arr))
    body = value.SerializeToString()
    out: bytes = anna_pb2.LWWValue(timestamp=make_timestamp(), value=body).SerializeToString()
    return out


def after(arr: np.ndarray) -> bytes:
    """Now: what ``cb.put`` runs (``to_lattice`` then the cache client's payload)."""
    lattice = LWWPairLattice(make_timestamp(), serializer.to_bytes(arr))
    return codec.to_payload(lattice)[1]


def segment(arr: np.ndarray) -> None:
    """``cb.put`` now: the LWW payload written once into a new /dev/shm file (which the
    node cache adopts; here unlinked at once)."""
    from cache.shm import lww_file_pieces, write_segment

    lay = serializer.layout(arr)
    assert lay is not None
    size, _, pieces = lww_file_pieces(make_timestamp(), lay)
    name = f"cb-writes-bench-{os.getpid()}"
    write_segment("/dev/shm", name, size, pieces)
    os.unlink(os.path.join("/dev/shm", name))


def pieces(arr: np.ndarray) -> list:
    """``put_object`` now: the ``Value``'s pieces, views of the array (sent by sendmsg)."""
    out = serializer.large_value_pieces(arr)
    assert out is not None
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=float, default=100.0)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    arr = np.arange(int(args.mb * 1e6 / 8), dtype=np.float64)
    assert len(before(arr)) == len(after(arr))
    fns = {
        "protobuf (before)": before,
        "joins (cb.put/put_object, previous round)": after,
        "cb.put now: one pwrite into a /dev/shm segment": segment,
        "put_object now: pieces, no copy": pieces,
        "memcpy (fresh)": np.copy,
    }
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(args.rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            out = fn(arr)
            samples[name].append(time.perf_counter() - t0)
            del out
    med = {k: statistics.median(v) * 1e3 for k, v in samples.items()}
    p99 = {k: max(v) * 1e3 for k, v in samples.items()}
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load = os.getloadavg()[0]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "writes.json").write_text(
        json.dumps({"when": when, "load": load, "mb": args.mb, "median_ms": med, "max_ms": p99})
    )
    copy = med["memcpy (fresh)"]
    lines = [
        f"# Serializing a {args.mb:g} MB array for cb.put / put_object",
        "",
        f"`bench/writes.py`, {when}, load average {load:.1f}, {args.rounds} interleaved rounds.",
        "",
        "| path | median (ms) | max (ms) | / memcpy |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [f"| {k} | {med[k]:.1f} | {p99[k]:.1f} | {med[k] / copy:.2f} |" for k in fns]
    (RESULTS / "writes.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
