"""A client that keeps GETting one small key and records each latency (a helper
process of ``test_large_values.py``): ``python -m tests.anna.small_reader PORT KEY
OUT STOPFILE``. Stops when STOPFILE exists (or after 600 s), then writes
``{"lat": [seconds...], "errors": [...]}`` to OUT."""

from __future__ import annotations

import json
import os
import sys
import time

from anna.client import AnnaTcpClient


def main() -> None:
    port, key, out, stop = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    client = AnnaTcpClient("127.0.0.1", local=True, routing_port=port, timeout=30.0)
    lat: list[float] = []
    errors: list[str] = []
    end = time.monotonic() + 600
    try:
        while time.monotonic() < end and not os.path.exists(stop):
            t = time.perf_counter()
            try:
                if client.get(key)[key] is None:
                    errors.append("missing")
            except Exception as exc:
                errors.append(repr(exc))
            lat.append(time.perf_counter() - t)
    finally:
        client.close()
        with open(out + ".tmp", "w") as f:
            json.dump({"lat": lat, "errors": errors[:20], "n_errors": len(errors)}, f)
        os.replace(out + ".tmp", out)


if __name__ == "__main__":
    main()
