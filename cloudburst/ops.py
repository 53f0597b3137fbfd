"""What the ``cloudburst`` command shows about a running cluster (status, functions,
DAGs, KVS keys and values), as plain data; :mod:`cloudburst.cli` prints it (tables or
``--json``). The pure parts (value summaries, status assembly, tables) are tested
without a cluster.

Which cluster: ``--address HOST[:PORT]`` (the scheduler), else ``$CLOUDBURST_ADDRESS``,
else the local cluster of the run directory (``<run_dir>/config.yml``: its ip and
scheduler port), else the config's scheduler (default ``127.0.0.1:5000``).
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from cloudburst.shared import serializer
from cloudburst.shared.config import Config, load_config, scheduler_host
from cloudburst.shared.kvs import split_address
from cloudburst.shared.proto import cloudburst_pb2 as cpb
from lattices import Lattice, LWWPairLattice, OrderedSetLattice, SetLattice

ADDRESS_ENV = "CLOUDBURST_ADDRESS"
DAGS_PREFIX = "dags/"
FUNCS_PREFIX = "funcs/"


def resolve_address(address: str | None, local_cfg: Config | None) -> tuple[str, int]:
    """``(host, port)`` of the scheduler to talk to (see the module docstring)."""
    address = address or os.environ.get(ADDRESS_ENV) or None
    if address:
        default = local_cfg.scheduler.port if local_cfg else Config().scheduler.port
        host, port = split_address(address, default)
        return host, port
    if local_cfg is not None:
        return local_cfg.ip, local_cfg.scheduler.port
    cfg = load_config()
    return scheduler_host(cfg), cfg.scheduler.port


def local_config(run_dir: Path) -> Config | None:
    """The config a local cluster in ``run_dir`` was started with (None: none)."""
    path = run_dir / "config.yml"
    if not path.is_file():
        return None
    return load_config(str(path), env={})


# -- values --------------------------------------------------------------------------


def _short(text: str, width: int = 200) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def summarize(obj: Any) -> dict[str, Any]:
    """A readable summary of a user value: its type and, for arrays, shape, dtype and
    statistics; ``value`` is the value itself when it is JSON-representable."""
    out: dict[str, Any] = {"type": type(obj).__name__}
    if isinstance(obj, np.ndarray):
        out.update(shape=list(obj.shape), dtype=str(obj.dtype), nbytes=int(obj.nbytes))
        if obj.size and np.issubdtype(obj.dtype, np.number):
            out.update(
                min=float(np.min(obj)),
                max=float(np.max(obj)),
                mean=float(np.mean(obj)),
            )
        out["repr"] = _short(np.array2string(obj, threshold=8, edgeitems=2))
        return out
    if isinstance(obj, bytes):
        out.update(len=len(obj), repr=_short(repr(obj)))
        return out
    try:
        json.dumps(obj, allow_nan=False)
        out["value"] = obj
    except (TypeError, ValueError):
        pass
    if isinstance(obj, list | tuple | set | frozenset | dict | str):
        out["len"] = len(obj)
    out["repr"] = _short(repr(obj))
    return out


def describe(key: str, lattice: Lattice[Any] | None) -> dict[str, Any]:
    """What ``cloudburst kvs get`` prints: lattice type, stored size, value summary."""
    if lattice is None:
        return {"key": key, "found": False}
    out: dict[str, Any] = {
        "key": key,
        "found": True,
        "lattice": type(lattice).__name__,
        "bytes": len(lattice.serialize()),
    }
    try:
        if isinstance(lattice, LWWPairLattice):
            out["timestamp"] = lattice.timestamp
            out["value"] = summarize(serializer.from_bytes(lattice.value))
        elif isinstance(lattice, SetLattice | OrderedSetLattice):
            items = [serializer.from_bytes(i) for i in lattice.reveal()]
            out["elements"] = len(items)
            out["value"] = summarize(
                items if isinstance(lattice, OrderedSetLattice) else sorted(items, key=repr)
            )
        else:
            out["value"] = {"type": type(lattice).__name__, "repr": _short(repr(lattice))}
    except Exception as exc:  # not a Cloudburst value: show the raw bytes
        out["value"] = {"type": "undecodable", "error": str(exc)}
    return out


def parse_value(text: str, kind: str) -> Any:
    """The value ``cloudburst kvs put KEY VALUE --type KIND`` stores."""
    if kind == "str":
        return text
    if kind == "int":
        return int(text)
    if kind == "float":
        return float(text)
    if kind == "json":
        return json.loads(text)
    if kind == "bytes":
        return text.encode()
    raise ValueError(f"unknown value type {kind!r}")


# -- DAGs ----------------------------------------------------------------------------


def dag_info(name: str, lattice: Lattice[Any] | None) -> dict[str, Any] | None:
    """The DAG stored under ``dags/<name>`` (None: absent or deleted)."""
    if not isinstance(lattice, LWWPairLattice):
        return None
    data = serializer.from_bytes(lattice.value)
    if not isinstance(data, bytes) or not data:
        return None  # a deletion tombstone (see scheduler.registry)
    dag = cpb.Dag.FromString(data)
    info: dict[str, Any] = {
        "name": dag.name or name,
        "functions": list(dag.functions),
        "connections": [[c.source, c.sink] for c in dag.connections],
    }
    # The original's DAG options, when set (docs/client.md, "DAG options").
    options = {
        "multiexec": sorted(dag.multiexec),
        "gpu_functions": list(dag.gpu_functions),
        "batching_functions": list(dag.batching_functions),
        "colocated": [list(g.functions) for g in dag.colocated],
    }
    info.update({k: v for k, v in options.items() if v})
    return info


# -- status --------------------------------------------------------------------------


def cluster_status(
    sched: dict[str, Any],
    kvs_nodes: list[dict[str, Any]] | None,
    processes: list[dict[str, Any]] | None,
    keys: int | None,
    metrics: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The document ``cloudburst status --json`` prints (and the table is made from)."""
    executors = sched.get("executor_list", [])
    return {
        "time": time.time(),
        "scheduler": sched.get("scheduler", ""),
        "kvs_routing": sched.get("kvs", ""),
        "functions": sched.get("functions", 0),
        "dags": sched.get("dags", 0),
        "executors": [
            {
                "address": e["address"],
                "node": e["node_id"],
                "pid": e["pid"],
                "load": e["load"],
                "functions": sorted(e["functions"]),
            }
            for e in sorted(executors, key=lambda e: e["address"])
        ],
        "load": sum(e["load"] for e in executors),
        "kvs_nodes": kvs_nodes,
        "kvs_keys": keys,
        "processes": processes,
        "restarts": sum(p["restarts"] for p in processes) if processes else 0,
        "metrics": metrics,
    }


def table(headers: list[str], rows: list[list[Any]], title: str | None = None) -> str:
    """A text table (rich), as a string."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, box=None, header_style="bold", title_justify="left", pad_edge=False)
    for h in headers:
        t.add_column(h, overflow="fold")
    for row in rows:
        t.add_row(*("" if v is None else str(v) for v in row))
    buf = io.StringIO()
    Console(file=buf, width=160, force_terminal=False, color_system=None).print(t)
    return buf.getvalue().rstrip("\n")


def format_status(doc: dict[str, Any]) -> str:
    """The human form of :func:`cluster_status`."""
    parts = [
        f"scheduler {doc['scheduler']}   KVS routing {doc['kvs_routing']}",
        f"functions {doc['functions']}   DAGs {doc['dags']}   executors "
        f"{len(doc['executors'])}   load {doc['load']}"
        + (f"   KVS keys {doc['kvs_keys']}" if doc["kvs_keys"] is not None else "")
        + f"   restarts {doc['restarts']}",
    ]
    if doc["executors"]:
        rows = [
            [e["address"], e["node"], e["pid"], e["load"], ", ".join(e["functions"])]
            for e in doc["executors"]
        ]
        parts.append(table(["executor", "node", "pid", "load", "functions"], rows))
    if doc["kvs_nodes"] is not None:
        rows = [[n["node"], n["state"], len(n["shards"])] for n in doc["kvs_nodes"]]
        parts.append(table(["KVS node", "state", "shards"], rows))
    if doc["processes"]:
        rows = [
            ["  " * p["depth"] + p["name"], p["pid"], p["state"], p["restarts"], p["last_exit"]]
            for p in doc["processes"]
        ]
        parts.append(table(["process", "pid", "state", "restarts", "last exit"], rows))
    tot = doc.get("totals")
    if tot:
        hits, misses = tot["cache_hits"], tot["cache_misses"]
        ratio = f"{hits / (hits + misses):.0%}" if hits + misses else "-"
        line = (
            f"calls: {tot['scheduler_calls']:.0f} scheduled ({tot['scheduler_errors']:.0f} "
            f"refused), {tot['executor_calls']:.0f} functions run ({tot['executor_errors']:.0f} "
            f"failed)   cache: {tot['cache_bytes']:.0f} bytes, hit ratio {ratio}"
        )
        r = doc.get("rates")
        if r:
            line += (
                f"\nper second: {r['scheduler_calls']:.1f} calls scheduled, "
                f"{r['executor_calls']:.1f} functions run, "
                f"{r['executor_errors'] + r['scheduler_errors']:.1f} errors"
            )
        parts.insert(2, line)
    if doc.get("metrics"):
        rows = [[m["name"], m["role"], m["pid"], m["url"]] for m in doc["metrics"]]
        parts.append(table(["metrics of", "role", "pid", "url"], rows))
    return "\n\n".join(parts)


def scrape_totals(texts: list[str]) -> dict[str, float]:
    """Cluster totals from the Prometheus text of every process: calls and errors as
    the scheduler and the executors count them, cache bytes/hits/misses, KVS keys."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {
        "scheduler_calls": 0.0,
        "scheduler_errors": 0.0,
        "executor_calls": 0.0,
        "executor_errors": 0.0,
        "cache_bytes": 0.0,
        "cache_hits": 0.0,
        "cache_misses": 0.0,
    }
    for text in texts:
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                role = s.labels.get("role")
                if s.name == "cloudburst_calls_total" and s.labels.get("kind") == "function":
                    if role in ("scheduler", "executor"):
                        out[f"{role}_calls"] += s.value
                elif s.name == "cloudburst_calls_total" and role == "scheduler":
                    out["scheduler_calls"] += s.value
                elif s.name == "cloudburst_call_errors_total" and role in ("scheduler", "executor"):
                    out[f"{role}_errors"] += s.value
                elif s.name in ("cloudburst_cache_bytes", "cloudburst_cache_hits_total",
                                "cloudburst_cache_misses_total"):  # fmt: skip
                    key = s.name.removeprefix("cloudburst_").removesuffix("_total")
                    out[key] += s.value
    return out


def rates(
    now: dict[str, float], before: dict[str, float] | None, seconds: float
) -> dict[str, float]:
    """Per-second rates of the counters of :func:`scrape_totals` between two scrapes."""
    if not before or seconds <= 0:
        return {}
    return {
        k: max(0.0, now[k] - before.get(k, 0.0)) / seconds
        for k in ("scheduler_calls", "scheduler_errors", "executor_calls", "executor_errors")
    }
