"""Reading the cluster's logs (``cloudburst local logs``, ``cloudburst logs``).

Each log file (``<run_dir>/logs/<role>.log``) is in time order; lines are either text
starting with the ``asctime`` of :mod:`logging` (``2026-12-01 08:44:47,123 ...``) or
JSON objects with ``"t"`` (``log_format: json``, :mod:`cloudburst.shared.logs`). A
line without a time (a traceback's) goes with the line before it. :func:`merged`
interleaves files by time, :func:`follow` keeps doing it as they grow (``-f``),
:func:`call_lines` picks one call's lines.
"""

from __future__ import annotations

import heapq
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Line:
    t: float
    source: str  # the file's stem: supervisor, kvs, scheduler, executor
    text: str

    def doc(self) -> dict[str, Any] | None:
        """The JSON object of a JSON log line (None for text)."""
        if not self.text.startswith("{"):
            return None
        try:
            doc = json.loads(self.text)
        except ValueError:
            return None
        return doc if isinstance(doc, dict) else None


def line_time(text: str) -> float | None:
    """The time a log line was written (None: no time on it)."""
    if text.startswith("{"):
        try:
            t = json.loads(text).get("t")
        except (ValueError, AttributeError):
            return None
        return float(t) if isinstance(t, int | float) else None
    head = text[:23]  # "2026-12-01 08:44:47,123"
    if len(head) < 19 or head[4] != "-" or head[10] != " ":
        return None
    try:
        base = time.mktime(time.strptime(head[:19], "%Y-%m-%d %H:%M:%S"))
    except ValueError:
        return None
    ms = head[20:23]
    return base + (int(ms) / 1000 if ms.isdigit() else 0.0)


def parse(lines: Iterable[str], source: str, last: float = 0.0) -> Iterator[Line]:
    """``Line`` s of one file; an untimed line takes the time of the one before."""
    for raw in lines:
        text = raw.rstrip("\n")
        if not text:
            continue
        t = line_time(text)
        if t is not None:
            last = t
        yield Line(last, source, text)


def log_files(run_dir: str | os.PathLike[str]) -> list[Path]:
    d = Path(run_dir) / "logs"
    return sorted(d.glob("*.log")) if d.is_dir() else []


def read(path: Path) -> list[Line]:
    try:
        with open(path, errors="replace") as f:
            return list(parse(f, path.stem))
    except OSError:
        return []


def merged(paths: Iterable[Path]) -> list[Line]:
    """Every line of ``paths``, in time order (stable within a file)."""
    return list(heapq.merge(*(read(p) for p in paths), key=lambda line: line.t))


def call_lines(paths: Iterable[Path], call_id: str) -> list[Line]:
    """The lines about call ``call_id`` (its id in the text, or JSON ``call_id``)."""
    out = []
    for line in merged(paths):
        if call_id not in line.text:
            continue
        doc = line.doc()
        if doc is not None and call_id not in str(doc.get("msg", "")) + str(doc.get("call_id")):
            continue
        out.append(line)
    return out


def follow(
    paths_of: Callable[[], list[Path]],
    emit: Callable[[Line], None],
    lines: int = 40,
    poll_s: float = 0.25,
    stop: Callable[[], bool] = lambda: False,
) -> None:
    """Print the last ``lines`` lines of every file merged by time, then every new
    line as the files grow (each poll's new lines merged by time), until ``stop()``.
    New files (a process that starts later) are picked up; a truncated file (reset)
    is read from its start again."""
    offsets: dict[Path, int] = {}
    last_t: dict[Path, float] = {}
    start = merged(paths_of())[-lines:] if lines else []
    for line in start:
        emit(line)
    for p in paths_of():
        try:
            offsets[p] = p.stat().st_size
        except OSError:
            offsets[p] = 0
    while not stop():
        batch: list[list[Line]] = []
        for p in paths_of():
            try:
                size = p.stat().st_size
            except OSError:
                continue
            pos = offsets.get(p, 0)
            if size < pos:
                pos = 0
            if size == pos:
                offsets[p] = pos
                continue
            with open(p, "rb") as f:
                f.seek(pos)
                chunk = f.read(size - pos)
            end = chunk.rfind(b"\n") + 1  # whole lines only; the rest next time
            offsets[p] = pos + end
            text = chunk[:end].decode(errors="replace")
            got = list(parse(text.splitlines(), p.stem, last_t.get(p, 0.0)))
            if got:
                last_t[p] = got[-1].t
                batch.append(got)
        for line in heapq.merge(*batch, key=lambda line: line.t):
            emit(line)
        time.sleep(poll_s)
