"""What the autoscaler measures between two evaluations. Pure: no I/O, no clock.

Worker utilization
    A worker's ``busy`` flag is a point sample: a periodic load read at a fixed phase
    (calls every 0.5 s, the autoscaler every 0.5 s) reads the same value every time,
    busy or idle, for as long as the two periods stay aligned. Workers also report
    ``busy_s`` (seconds spent running calls since they started, the running call's
    so far included) and ``uptime_s`` (their age), both on their own clock;
    :class:`BusyMeter` turns two reports of the same worker into the share of the
    interval it was busy. A worker seen for the first time (or restarted: a new pid)
    falls back to its flag; so does one that does not report ``busy_s`` (older).

>>> m = BusyMeter()
>>> m.utilization("a", pid=1, busy=True, busy_s=1.0, uptime_s=10.0)
1.0
>>> m.utilization("a", pid=1, busy=True, busy_s=1.5, uptime_s=12.0)
0.25
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass
class _Reading:
    pid: int
    busy_s: float
    uptime_s: float
    value: float  # the utilization computed at this reading
    seen: int  # the round it was last seen in


class BusyMeter:
    """Per worker (by address) utilization over the interval since its last report."""

    def __init__(self) -> None:
        self.last: dict[str, _Reading] = {}
        self.round = 0

    def utilization(
        self, address: str, pid: int, busy: bool, busy_s: float, uptime_s: float
    ) -> float:
        prev = self.last.get(address)
        value = 1.0 if busy else 0.0
        if uptime_s > 0 and prev is not None and prev.pid == pid:
            span = uptime_s - prev.uptime_s
            if span > 0:
                value = min(1.0, max(0.0, (busy_s - prev.busy_s) / span))
            else:  # no new heartbeat since the last evaluation: the same interval
                value = prev.value
                busy_s, uptime_s = prev.busy_s, prev.uptime_s
        self.last[address] = _Reading(pid, busy_s, uptime_s, value, self.round)
        return value

    def end_round(self) -> None:
        """Forget workers not seen this round (gone, or replaced)."""
        self.last = {a: r for a, r in self.last.items() if r.seen == self.round}
        self.round += 1


def key_access_counts(before: Mapping[str, float], now: Mapping[str, float]) -> dict[str, int]:
    """Accesses per key between two readings of cumulative per-key counters (a key
    missing from ``before`` counts from 0: new, or just entered the reported top keys;
    a counter that went down restarted with its shard)."""
    out = {}
    for key, count in now.items():
        prev = before.get(key, 0.0)
        out[key] = int(count - prev if count >= prev else count)
    return out


def mean_latencies(
    before: Mapping[str, Mapping[str, tuple[float, float]]],
    now: Mapping[str, Mapping[str, tuple[float, float]]],
) -> dict[str, float]:
    """Mean latency per function over the interval, from cumulative ``(sum of seconds,
    count)`` pairs (a histogram's ``_sum`` and ``_count``) per source (a worker's
    ``/metrics``: ``source -> function -> pair``); a source whose count went down
    restarted. Functions without calls in the interval are left out."""
    total: dict[str, tuple[float, float]] = {}
    for source, fns in now.items():
        old = before.get(source, {})
        for name, (secs, count) in fns.items():
            prev_secs, prev_count = old.get(name, (0.0, 0.0))
            if count < prev_count:
                prev_secs, prev_count = 0.0, 0.0
            t, c = total.get(name, (0.0, 0.0))
            total[name] = (t + secs - prev_secs, c + count - prev_count)
    return {name: t / c for name, (t, c) in total.items() if c > 0}
