"""KVS benchmark: our Anna-compatible KVS vs a real redis-server, side by side.

    .venv/bin/python bench/kvs.py            # full run (~1-2 min)
    .venv/bin/python bench/kvs.py --quick    # a few seconds

Starts our KVS in local mode (routing + 1 shard, free ports, WAL fsync policy from
``--fsync``, default ``never`` to match redis with persistence off) and
``redis-server`` (127.0.0.1, free port, ``--save '' --appendonly no``), then measures
in one run: single-key GET and PUT latency (median, p99) of our Python client vs
redis-py; 100-key batches (our batched get/put vs a redis-py pipeline of 100
commands); 1 MB values. Measurements alternate between the two systems in short
rounds so machine noise hits both alike. Writes ``bench/results/kvs.json`` and
``bench/results/kvs.md``.
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

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from anna.client import AnnaTcpClient  # noqa: E402
from cloudburst.shared.processes import (  # noqa: E402
    SERVER_ENV,
    ProcessGroup,
    free_port,
    port_free,
    port_open,
    wait_until,
)
from lattices import LWWPairLattice, make_timestamp  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def ensure_redis() -> str:
    path = shutil.which("redis-server")
    if path:
        return path
    subprocess.run(["bash", "-c", f"source {ROOT}/scripts/ensure-env.sh; ensure_redis"], check=True)
    path = shutil.which("redis-server")
    if not path:
        raise SystemExit("redis-server is not installed and could not be installed")
    return path


def kvs_ports() -> dict[str, int]:
    while True:
        base, gossip, routing = free_port(), free_port(), free_port()
        if (
            base + 100 < 65535
            and all(port_free("127.0.0.1", p) for p in (base, base + 100, gossip, routing))
            and len({base, base + 100, gossip, routing}) == 4
        ):
            return {"routing_port": routing, "shard_base_port": base, "gossip_base_port": gossip}


def start_kvs(
    group: ProcessGroup,
    tmp: Path,
    fsync: str,
    name: str,
    spin_us: int | None = None,
    curve: bool = False,
) -> AnnaTcpClient:
    """Routing + 1 shard and a client; ``spin_us`` (None: the defaults) sets both the
    shard's ``shard_spin_us`` and the client's ``spin_us``; ``curve``: CURVE on (keys
    generated under ``tmp``), the client with its client keys."""
    ports = kvs_ports()
    kvs: dict[str, Any] = {
        **ports,
        "shards": 1,
        "data_dir": str(tmp / f"data-{name}"),
        "wal_fsync": fsync,
    }
    if spin_us is not None:
        kvs["shard_spin_us"] = spin_us
    cfg: dict[str, Any] = {"ip": "127.0.0.1", "log_level": "WARNING", "kvs": kvs}
    if curve:
        from cloudburst.shared.security import Security, generate_keys

        keys = generate_keys(tmp / f"keys-{name}")
        cfg["security"] = {"curve": "true", "keys_dir": str(keys)}
        extra_curve: dict[str, Any] = {
            "curve": Security.from_dir(keys, role="client").zmtp_client()
        }
    else:
        extra_curve = {}
    path = tmp / f"{name}.yml"
    path.write_text(yaml.safe_dump(cfg))
    group.start(name, [sys.executable, "-m", "anna.local", "--config", str(path)])
    extra = {} if spin_us is None else {"spin_us": spin_us}
    client = AnnaTcpClient(
        "127.0.0.1",
        local=True,
        routing_port=ports["routing_port"],
        timeout=10,
        **extra,
        **extra_curve,
    )

    def ready() -> bool:
        try:
            client.get("__ready")
            return True
        except Exception:
            return False

    wait_until(ready, 30, f"KVS {name}", interval=0.1)
    return client


def start_redis(group: ProcessGroup, name: str = "redis", aof_dir: Path | None = None) -> Any:
    """redis-server on a free port; with ``aof_dir``: an append-only file there with
    ``appendfsync no`` (what our WAL does with ``wal_fsync: never``), else no
    persistence at all."""
    import redis

    port = free_port()
    persist = (
        ["--appendonly", "yes", "--appendfsync", "no", "--dir", str(aof_dir)]
        if aof_dir
        else ["--appendonly", "no"]
    )
    group.start(
        name,
        [
            ensure_redis(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            *persist,
            "--protected-mode",
            "no",
        ],
    )
    wait_until(lambda: port_open("127.0.0.1", port), 10, "redis-server")
    r = redis.Redis(host="127.0.0.1", port=port)
    wait_until(lambda: bool(r.ping()), 10, "redis PING")
    return r


ECHO_SERVER = """
import sys, zmq
ctx = zmq.Context()
pull = ctx.socket(zmq.PULL)
pull.bind(sys.argv[1])
out = {}
while True:
    msg = pull.recv()
    addr, _, body = msg.partition(b" ")
    sock = out.get(addr)
    if sock is None:
        sock = out[addr] = ctx.socket(zmq.PUSH)
        sock.connect(addr.decode())
    sock.send(body)
"""


def start_echo(group: ProcessGroup) -> Callable[[int], Any]:
    """The transport floor: a PUSH -> PULL echo with PUSH back, no KVS work at all."""
    import zmq

    port = free_port()
    group.start("echo", [sys.executable, "-c", ECHO_SERVER, f"tcp://127.0.0.1:{port}"])
    wait_until(lambda: port_open("127.0.0.1", port), 10, "echo server")
    ctx = zmq.Context.instance()
    pull = ctx.socket(zmq.PULL)
    back = pull.bind_to_random_port("tcp://127.0.0.1")
    push = ctx.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{port}")
    msg = f"tcp://127.0.0.1:{back} ".encode() + b"x" * 100

    def rtt(i: int) -> Any:
        push.send(msg)
        return pull.recv()

    rtt(0)
    return rtt


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and all its descendants (Linux /proc)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{p}/task").iterdir():
                kids = (task / "children").read_text().split()
                todo.extend(int(k) for k in kids)
        except (OSError, IndexError, ValueError):
            continue
    return total


def timed(fn: Callable[[int], Any], n: int) -> list[float]:
    """Per-call latency in microseconds."""
    out = []
    pc = time.perf_counter_ns
    for i in range(n):
        t0 = pc()
        fn(i)
        out.append((pc() - t0) / 1000.0)
    return out


def summary(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {
        "median_us": round(statistics.median(s), 1),
        "p99_us": round(s[min(len(s) - 1, int(len(s) * 0.99))], 1),
        "n": len(s),
    }


def alternate(
    pairs: dict[str, Callable[[int], Any]],
    n: int,
    rounds: int,
    cpu: dict[str, list[float]] | None = None,
    servers: dict[str, int] | None = None,
) -> dict[str, list[float]]:
    """Run every function n/rounds times per round, alternating, after a warm-up.

    With ``cpu``: CPU seconds per call are added to ``cpu[name]`` as
    ``[client, server]``, the server being the process tree ``servers[name]``.
    """
    for fn in pairs.values():
        timed(fn, max(10, n // 20))
    out: dict[str, list[float]] = {k: [] for k in pairs}
    per = max(1, n // rounds)
    for _ in range(rounds):
        for name, fn in pairs.items():
            spid = (servers or {}).get(name)
            c0, s0 = time.process_time(), tree_cpu_s(spid) if spid else 0.0
            out[name] += timed(fn, per)
            if cpu is not None:
                c1, s1 = time.process_time(), tree_cpu_s(spid) if spid else 0.0
                acc = cpu.setdefault(name, [0.0, 0.0])
                acc[0] += (c1 - c0) / (per * rounds)
                acc[1] += (s1 - s0) / (per * rounds)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    n = 2000 if args.quick else 20000
    nb = 100 if args.quick else 1000
    nbig = 30 if args.quick else 200
    rounds = 5 if args.quick else 10
    value = os.urandom(100)
    big = os.urandom(1 << 20)
    keys = [f"key{i}" for i in range(1000)]
    results: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "config": {"quick": args.quick, "fsync": args.fsync, "single_ops": n, "batches": nb},
    }
    with tempfile.TemporaryDirectory(prefix="kvs-bench-") as tmpdir, ProcessGroup() as group:
        tmp = Path(tmpdir)
        ours = start_kvs(group, tmp, args.fsync, "kvs")
        # The same KVS with the spin-before-sleep windows off on both sides.
        calm = start_kvs(group, tmp, args.fsync, "kvs-nospin", spin_us=0)
        # The same KVS with CURVE (docs/security.md) on every connection.
        sealed = start_kvs(group, tmp, args.fsync, "kvs-curve", curve=True)
        r = start_redis(group)
        for k in keys:
            ours.put(k, LWWPairLattice(make_timestamp(), value))
            calm.put(k, LWWPairLattice(make_timestamp(), value))
            sealed.put(k, LWWPairLattice(make_timestamp(), value))
            r.set(k, value)
        nk = len(keys)

        echo = start_echo(group)
        pids = {
            name: group.procs[name].pid
            for name in ("kvs", "kvs-nospin", "kvs-curve", "redis", "echo")
        }
        cpu: dict[str, list[float]] = {}
        lat = alternate(
            {
                "zmq_floor": echo,
                "ours_get": lambda i: ours.get(keys[i % nk]),
                "ours_curve_get": lambda i: sealed.get(keys[i % nk]),
                "ours_nospin_get": lambda i: calm.get(keys[i % nk]),
                "redis_get": lambda i: r.get(keys[i % nk]),
                "ours_put": lambda i: ours.put(
                    keys[i % nk], LWWPairLattice(make_timestamp(), value)
                ),
                "ours_curve_put": lambda i: sealed.put(
                    keys[i % nk], LWWPairLattice(make_timestamp(), value)
                ),
                "ours_nospin_put": lambda i: calm.put(
                    keys[i % nk], LWWPairLattice(make_timestamp(), value)
                ),
                "redis_put": lambda i: r.set(keys[i % nk], value),
            },
            n,
            rounds,
            cpu,
            {
                "zmq_floor": pids["echo"],
                "ours_get": pids["kvs"],
                "ours_put": pids["kvs"],
                "ours_curve_get": pids["kvs-curve"],
                "ours_curve_put": pids["kvs-curve"],
                "ours_nospin_get": pids["kvs-nospin"],
                "ours_nospin_put": pids["kvs-nospin"],
                "redis_get": pids["redis"],
                "redis_put": pids["redis"],
            },
        )
        single = {k: summary(v) for k, v in lat.items()}
        for k, (ccpu, scpu) in cpu.items():
            single[k]["client_cpu_us"] = round(ccpu * 1e6, 1)
            single[k]["server_cpu_us"] = round(scpu * 1e6, 1)
        calm.close()

        ours.put("big", LWWPairLattice(make_timestamp(), big))
        sealed.put("big", LWWPairLattice(make_timestamp(), big))
        curve_big = {
            k: summary(v)
            for k, v in alternate(
                {
                    "null_get": lambda i: ours.get("big"),
                    "curve_get": lambda i: sealed.get("big"),
                },
                nbig,
                min(rounds, 5),
            ).items()
        }
        sealed.close()

        batch_keys = [keys[j : j + 100] for j in range(0, nk, 100)]
        batch_vals = [value] * 100

        def ours_bget(i: int) -> Any:
            return ours.get(batch_keys[i % len(batch_keys)])

        def ours_bput(i: int) -> Any:
            ts = make_timestamp()
            return ours.put(
                batch_keys[i % len(batch_keys)], [LWWPairLattice(ts, v) for v in batch_vals]
            )

        def ours_pget(i: int) -> Any:
            p = ours.pipeline()
            for k in batch_keys[i % len(batch_keys)]:
                p.get(k)
            return p.execute()

        def ours_pput(i: int) -> Any:
            ts = make_timestamp()
            p = ours.pipeline()
            for k in batch_keys[i % len(batch_keys)]:
                p.put(k, LWWPairLattice(ts, value))
            return p.execute()

        def redis_bget(i: int) -> Any:
            p = r.pipeline(transaction=False)
            for k in batch_keys[i % len(batch_keys)]:
                p.get(k)
            return p.execute()

        def redis_bput(i: int) -> Any:
            p = r.pipeline(transaction=False)
            for k in batch_keys[i % len(batch_keys)]:
                p.set(k, value)
            return p.execute()

        blat = alternate(
            {
                "ours_get": ours_bget,
                "ours_pipeline_get": ours_pget,
                "redis_get": redis_bget,
                "ours_put": ours_bput,
                "ours_pipeline_put": ours_pput,
                "redis_put": redis_bput,
            },
            nb,
            rounds,
        )
        batched = {
            k: {**summary(v), "ops_per_s": round(100 * len(v) / (sum(v) / 1e6))}
            for k, v in blat.items()
        }

        (tmp / "aof").mkdir()
        raof = start_redis(group, "redis-aof", tmp / "aof")
        ours.put("big", LWWPairLattice(make_timestamp(), big))
        r.set("big", big)
        raof.set("big", big)
        biglat = alternate(
            {
                "ours_get": lambda i: ours.get("big"),
                "redis_get": lambda i: r.get("big"),
                "ours_put": lambda i: ours.put("big", LWWPairLattice(make_timestamp(), big)),
                "redis_put": lambda i: r.set("big", big),
                "redis_aof_put": lambda i: raof.set("big", big),
            },
            nbig,
            min(rounds, 5),
        )
        large = {k: summary(v) for k, v in biglat.items()}

        extra: dict[str, Any] = {}
        if args.fsync != "always" and not args.no_fsync_always:
            durable = start_kvs(group, tmp, "always", "kvs-always")
            for k in keys[:100]:
                durable.put(k, LWWPairLattice(make_timestamp(), value))
            m = max(200, n // 10)
            extra["ours_put_fsync_always"] = summary(
                timed(
                    lambda i: durable.put(keys[i % 100], LWWPairLattice(make_timestamp(), value)), m
                )
            )
            durable.close()
        ours.close()
        r.close()

    def ratio(a: float, b: float) -> float:
        return round(a / b, 2)

    results["single_key_100B"] = single
    results["batched_100_keys"] = batched
    results["value_1MB"] = large
    results["extra"] = extra
    results["curve_1MB"] = curve_big
    results["ratios"] = {
        "get_median_ours_over_redis": ratio(
            single["ours_get"]["median_us"], single["redis_get"]["median_us"]
        ),
        "put_median_ours_over_redis": ratio(
            single["ours_put"]["median_us"], single["redis_put"]["median_us"]
        ),
        "batched_get_throughput_ours_over_redis": ratio(
            batched["ours_get"]["ops_per_s"], batched["redis_get"]["ops_per_s"]
        ),
        "batched_put_throughput_ours_over_redis": ratio(
            batched["ours_put"]["ops_per_s"], batched["redis_put"]["ops_per_s"]
        ),
        "pipeline_get_throughput_ours_over_redis": ratio(
            batched["ours_pipeline_get"]["ops_per_s"], batched["redis_get"]["ops_per_s"]
        ),
        "pipeline_put_throughput_ours_over_redis": ratio(
            batched["ours_pipeline_put"]["ops_per_s"], batched["redis_put"]["ops_per_s"]
        ),
        "1MB_get_median_ours_over_redis": ratio(
            large["ours_get"]["median_us"], large["redis_get"]["median_us"]
        ),
        "1MB_put_median_ours_over_redis": ratio(
            large["ours_put"]["median_us"], large["redis_put"]["median_us"]
        ),
        "get_median_nospin_over_redis": ratio(
            single["ours_nospin_get"]["median_us"], single["redis_get"]["median_us"]
        ),
        "put_median_nospin_over_redis": ratio(
            single["ours_nospin_put"]["median_us"], single["redis_put"]["median_us"]
        ),
        "1MB_put_median_ours_over_redis_aof": ratio(
            large["ours_put"]["median_us"], large["redis_aof_put"]["median_us"]
        ),
        "get_median_curve_over_null": ratio(
            single["ours_curve_get"]["median_us"], single["ours_get"]["median_us"]
        ),
        "put_median_curve_over_null": ratio(
            single["ours_curve_put"]["median_us"], single["ours_put"]["median_us"]
        ),
        "1MB_get_median_curve_over_null": ratio(
            curve_big["curve_get"]["median_us"], curve_big["null_get"]["median_us"]
        ),
        "zmq_floor_over_redis_get": ratio(
            single["zmq_floor"]["median_us"], single["redis_get"]["median_us"]
        ),
    }
    results["targets_met"] = {
        "median_get_put_le_1.5x": results["ratios"]["get_median_ours_over_redis"] <= 1.5
        and results["ratios"]["put_median_ours_over_redis"] <= 1.5,
        "batched_ge_0.5x": results["ratios"]["batched_get_throughput_ours_over_redis"] >= 0.5
        and results["ratios"]["batched_put_throughput_ours_over_redis"] >= 0.5,
        "curve_get_le_1.3x_null": results["ratios"]["get_median_curve_over_null"] <= 1.3,
    }
    return results


def markdown(res: dict[str, Any]) -> str:
    lines = [
        "# KVS benchmark: ours vs redis-server",
        "",
        f"Python {res['machine']['python']}, {res['machine']['cpus']} CPUs; "
        f"WAL fsync `{res['config']['fsync']}`; quick={res['config']['quick']}.",
        "",
        "| measurement | ours median µs | ours p99 µs | redis median µs | redis p99 µs | ratio (ours/redis) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    sk = res["single_key_100B"]
    for op in ("get", "put"):
        o, rd = sk[f"ours_nospin_{op}"], sk[f"redis_{op}"]
        lines.append(
            f"| single key 100 B {op.upper()}, spin off (`spin_us=0`, `shard_spin_us: 0`) | "
            f"{o['median_us']} | {o['p99_us']} | {rd['median_us']} | {rd['p99_us']} | "
            f"{o['median_us'] / rd['median_us']:.2f} |"
        )
    for section, label in (("single_key_100B", "single key 100 B"), ("value_1MB", "1 MB value")):
        for op in ("get", "put"):
            o, rd = res[section][f"ours_{op}"], res[section][f"redis_{op}"]
            lines.append(
                f"| {label} {op.upper()} | {o['median_us']} | {o['p99_us']} | {rd['median_us']} | "
                f"{rd['p99_us']} | {o['median_us'] / rd['median_us']:.2f} |"
            )
    o, rd = res["value_1MB"]["ours_put"], res["value_1MB"]["redis_aof_put"]
    lines.append(
        f"| 1 MB value PUT vs redis with AOF (`appendfsync no`, like our `wal_fsync: never`) | "
        f"{o['median_us']} | {o['p99_us']} | {rd['median_us']} | {rd['p99_us']} | "
        f"{o['median_us'] / rd['median_us']:.2f} |"
    )
    f = res["single_key_100B"]["zmq_floor"]
    lines.append(
        f"| transport floor: bare pyzmq PUSH/PULL echo, 100 B | {f['median_us']} | {f['p99_us']} | | | |"
    )
    lines += [
        "",
        "CURVE vs NULL (the same KVS, CURVE on every connection; docs/security.md):",
        "",
        "| measurement | NULL median µs | CURVE median µs | NULL p99 µs | CURVE p99 µs | ratio |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for op in ("get", "put"):
        o, c = sk[f"ours_{op}"], sk[f"ours_curve_{op}"]
        lines.append(
            f"| single key 100 B {op.upper()} | {o['median_us']} | {c['median_us']} | "
            f"{o['p99_us']} | {c['p99_us']} | {c['median_us'] / o['median_us']:.2f} |"
        )
    if "curve_1MB" in res:
        o, c = res["curve_1MB"]["null_get"], res["curve_1MB"]["curve_get"]
        lines.append(
            f"| 1 MB value GET | {o['median_us']} | {c['median_us']} | {o['p99_us']} | "
            f"{c['p99_us']} | {c['median_us'] / o['median_us']:.2f} |"
        )
    lines += [
        "",
        "CPU per single-key call (µs; client = this process, server = the server's "
        "process tree, routing included for ours):",
        "",
        "| call | client CPU | server CPU |",
        "| --- | --- | --- |",
    ]
    for name, v in sk.items():
        if "client_cpu_us" in v:
            lines.append(f"| {name} | {v['client_cpu_us']} | {v['server_cpu_us']} |")
    lines += [
        "",
        "| 100-key batches | ours ops/s | redis pipeline ops/s | ratio (ours/redis) |",
        "| --- | --- | --- | --- |",
    ]
    for op in ("get", "put"):
        b = res["batched_100_keys"]
        rd = b[f"redis_{op}"]
        for label, o in (
            (f"{op.upper()} (one multi-key request per shard)", b[f"ours_{op}"]),
            (f"{op.upper()} (`pipeline()` of 100 single-key ops)", b[f"ours_pipeline_{op}"]),
        ):
            lines.append(
                f"| {label} | {o['ops_per_s']} | {rd['ops_per_s']} | "
                f"{o['ops_per_s'] / rd['ops_per_s']:.2f} |"
            )
    if res["extra"]:
        e = res["extra"]["ours_put_fsync_always"]
        lines += [
            "",
            f"Ours PUT with `wal_fsync: always`: median {e['median_us']} µs, p99 {e['p99_us']} µs.",
        ]
    lines += ["", f"Targets: {res['targets_met']}", ""]
    return "\n".join(lines)


def main() -> int:
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:
        # Fresh 1 MB allocations page-fault (PERF_NOTES.md); the platform's processes
        # run with this setting, so the benchmark client does too (redis-py alike).
        env = {**os.environ, **SERVER_ENV, "MALLOC_TRIM_THRESHOLD_": str(512 << 20)}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="a short run (seconds)")
    parser.add_argument("--fsync", default="never", choices=("always", "interval", "never"))
    parser.add_argument(
        "--no-fsync-always", action="store_true", help="skip the fsync=always PUT row"
    )
    parser.add_argument("--out", default=str(RESULTS), help="results directory")
    parser.add_argument("--runs", type=int, default=1, help="repeat the whole run (noise)")
    args = parser.parse_args()
    runs = []
    for i in range(args.runs):
        res = run(args)
        runs.append(res)
        print(f"## run {i + 1}/{args.runs}\n\n{markdown(res)}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"runs": runs, "ratios_by_run": [r["ratios"] for r in runs]}
    (out / "kvs.json").write_text(json.dumps(doc, indent=2) + "\n")
    text = "\n".join(f"## Run {i + 1}\n\n{markdown(r)}" for i, r in enumerate(runs))
    if len(runs) > 1:
        text = summary_table(runs) + "\n" + text
    (out / "kvs.md").write_text(text)
    return 0


def summary_table(runs: list[dict[str, Any]]) -> str:
    """Ratios (ours/redis) per run: latency ratios lower is better, throughput higher."""
    names = list(runs[0]["ratios"])
    lines = [
        "# KVS vs redis: ratios over runs",
        "",
        "| ratio | " + " | ".join(f"run {i + 1}" for i in range(len(runs))) + " | median |",
        "| --- | " + " | ".join("---" for _ in runs) + " | --- |",
    ]
    for n in names:
        vals = [r["ratios"][n] for r in runs]
        lines.append(
            f"| {n} | " + " | ".join(str(v) for v in vals) + f" | {statistics.median(vals)} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
