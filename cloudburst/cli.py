"""The ``cloudburst`` command (also ``python -m cloudburst``).

::

    cloudburst local start [--fresh] [--executors N] [--shards N] [--config FILE]
                           [--run-dir DIR] [--timeout S]
    cloudburst local stop | status | reset | logs [NAME] [-n LINES] [-f]
    cloudburst [--address HOST[:PORT]] [--debug] status | top
    cloudburst functions list | show NAME | delete NAME
    cloudburst dags list | show NAME | delete NAME
    cloudburst kvs get KEY | put KEY VALUE | delete KEY | keys [PREFIX]
    cloudburst logs [CALL_ID]
    cloudburst keys generate DIR [--client NAME ...]

Read commands take ``--json``. Exit status: 0 done, 1 failed (one line on stderr;
the traceback with ``--debug``), 2 usage error. Shell completion: ``eval
"$(_CLOUDBURST_COMPLETE=bash_source cloudburst)"`` (``zsh_source``, ``fish_source``).

``python -m cloudburst.local ARGS`` and ``scripts/start-cloudburst-local.sh`` /
``scripts/stop-cloudburst-local.sh`` run ``cloudburst local ARGS``. The original
Cloudburst's positional ``y``/``n`` arguments of those scripts are accepted and
ignored, with a note. See :mod:`cloudburst.local` for what each command does.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from cloudburst.shared.config import Config, load_config, replace
from cloudburst.shared.errors import ConfigError

LEGACY_FLAGS = {"y", "n", "yes", "no"}


def _config(
    config: str | None,
    run_dir: str | None,
    executors: int | None = None,
    shards: int | None = None,
) -> Config:
    from cloudburst.local import resolve

    try:
        cfg = load_config(str(Path(config).resolve()) if config else None)
        if executors is not None:
            cfg = replace(cfg, executor={"workers": executors})
        if shards is not None:
            cfg = replace(cfg, kvs={"shards": shards})
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    return resolve(cfg, Path(run_dir).resolve() if run_dir else None)


def _legacy(args: Sequence[str], command: str) -> None:
    bad = [a for a in args if a.lower() not in LEGACY_FLAGS]
    if bad:
        raise click.UsageError(f"unexpected argument(s) {' '.join(bad)}")
    if args:
        click.echo(
            f"note: the original Cloudburst's y/n arguments to {command} are not needed "
            f"here and were ignored ({' '.join(args)})",
            err=True,
        )


def _common(fn: Any) -> Any:
    fn = click.option(
        "--run-dir",
        type=click.Path(file_okay=False),
        help="the cluster's directory (default: run_dir of the config, .local)",
    )(fn)
    fn = click.option(
        "--config",
        type=click.Path(dir_okay=False),
        help="YAML config file (defaults + CLOUDBURST_<SECTION>__<FIELD> env overrides apply)",
    )(fn)
    return fn


DEBUG = {"on": False}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--address",
    envvar="CLOUDBURST_ADDRESS",
    help="the cluster's scheduler HOST[:PORT] (env CLOUDBURST_ADDRESS; default: the "
    "local cluster of the run directory, else 127.0.0.1:5000)",
)
@click.option(
    "--run-dir",
    "top_run_dir",
    type=click.Path(file_okay=False),
    help="a local cluster's directory (default .local or CLOUDBURST_RUN_DIR)",
)
@click.option("--timeout", "top_timeout", type=click.FloatRange(min=0.1), default=10.0,
              show_default=True, help="seconds to wait for each answer")  # fmt: skip
@click.option("--debug", is_flag=True, envvar="CLOUDBURST_DEBUG", help="tracebacks on errors")
@click.pass_context
def cli(
    ctx: click.Context,
    address: str | None,
    top_run_dir: str | None,
    top_timeout: float,
    debug: bool,
) -> None:
    """Cloudburst: stateful functions over a lattice KVS."""
    DEBUG["on"] = debug
    ctx.obj = Target(address, top_run_dir, top_timeout)


class Target:
    """The cluster a command talks to (see :mod:`cloudburst.ops`)."""

    def __init__(self, address: str | None, run_dir: str | None, timeout: float) -> None:
        self.address = address
        self.run_dir = run_dir
        self.timeout = timeout
        self._conn: Any = None

    def local_cfg(self) -> Config | None:
        from cloudburst.ops import local_config

        cfg = _config(None, self.run_dir)
        return local_config(Path(cfg.run_dir))

    def local_run_cfg(self) -> Config:
        """The resolved config of the local run directory (for state and logs)."""
        return _config(None, self.run_dir)

    def connect(self) -> Any:
        from cloudburst.client.client import CloudburstConnection
        from cloudburst.ops import resolve_address

        if self._conn is None:
            from cloudburst.local import client_keys_dir
            from cloudburst.shared import security

            local_cfg = None if self.address else self.local_cfg()
            host, port = resolve_address(self.address, local_cfg)
            # A secure local cluster: its client keys (else $CLOUDBURST_SECURITY__KEYS_DIR).
            keys = client_keys_dir(local_cfg) if local_cfg else None
            security.set_current(security.client_security(keys))  # anna.admin's too
            self._conn = CloudburstConnection(
                host,
                timeout=self.timeout,
                port=port,
                connect_timeout=self.timeout,
                keys_dir=keys,
            )
            click.get_current_context().call_on_close(self._conn.close)
        return self._conn


def _emit(as_json: bool, doc: Any, text: str | None = None) -> None:
    if as_json:
        click.echo(json.dumps(doc, indent=2, sort_keys=True, default=str))
    else:
        click.echo(text if text is not None else str(doc))


json_option = click.option("--json", "as_json", is_flag=True, help="print JSON")


@cli.group("local")
def local() -> None:
    """A cluster on this host: KVS, scheduler and executors under one supervisor."""


@local.command()
@_common
@click.option(
    "--fresh", is_flag=True, help="delete the stored data (objects, functions, DAGs) first"
)
@click.option("--executors", type=click.IntRange(min=1), help="executor worker processes")
@click.option("--shards", type=click.IntRange(min=1), help="KVS storage shards")
@click.option("--timeout", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="seconds to wait until the cluster serves calls")  # fmt: skip
@click.option("--secure", is_flag=True,
              help="CURVE on every endpoint; keys generated under the run directory")  # fmt: skip
@click.argument("legacy", nargs=-1)
def start(
    config: str | None,
    run_dir: str | None,
    fresh: bool,
    executors: int | None,
    shards: int | None,
    timeout: float,
    secure: bool,
    legacy: tuple[str, ...],
) -> None:
    """Start the cluster in the background (keeps the data of the previous run)."""
    from cloudburst.local import StartFailed, client_keys_dir, free_hint
    from cloudburst.local import start as do_start

    _legacy(legacy, "start")
    cfg = _config(config, run_dir, executors, shards)
    if secure:
        cfg = replace(cfg, security={"curve": "true"})
    try:
        do_start(cfg, timeout, fresh=fresh, out=click.echo)
    except StartFailed as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(
        f"Cloudburst is running locally (run dir {cfg.run_dir}, logs in {cfg.run_dir}/logs)."
    )
    click.echo("Connect from Python (.venv/bin/python):")
    click.echo("    from cloudburst.client.client import CloudburstConnection")
    keys = client_keys_dir(cfg)
    if keys:
        click.echo(
            f"    local_cloud = CloudburstConnection('{cfg.ip}', '{cfg.ip}', local=True, "
            f"keys_dir='{keys}')"
        )
        click.echo(
            f"CURVE is on: clients need {keys}/client.key_secret and cluster.key "
            f"(or export CLOUDBURST_SECURITY__KEYS_DIR={keys}); admit more clients by adding "
            f"their .key files to {keys}/authorized_clients/."
        )
    else:
        click.echo(f"    local_cloud = CloudburstConnection('{cfg.ip}', '{cfg.ip}', local=True)")
    hint = free_hint(cfg)
    if hint:
        click.echo(hint)
    click.echo("Stop it with ./scripts/stop-cloudburst-local.sh (the data is kept).")


@local.command()
@_common
@click.option("--keep-data", is_flag=True, hidden=True, help="no-op: stop always keeps data")
@click.argument("legacy", nargs=-1)
def stop(config: str | None, run_dir: str | None, keep_data: bool, legacy: tuple[str, ...]) -> None:
    """Stop every process of the cluster; the data stays for the next start."""
    from cloudburst.local import stop as do_stop

    _legacy(legacy, "stop")
    do_stop(_config(config, run_dir), out=click.echo)


@local.command()
@_common
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def status(config: str | None, run_dir: str | None, as_json: bool) -> None:
    """Show every process with its pid, state and restarts (exit 0: all running,
    1: not running, 2: something is not running)."""
    import dataclasses

    from cloudburst.local import status as do_status
    from cloudburst.local import status_lines

    cfg = _config(config, run_dir)
    if not as_json:
        sys.exit(do_status(cfg, out=click.echo))
    lines = status_lines(cfg)
    click.echo(json.dumps([dataclasses.asdict(line) for line in lines], indent=2))
    sys.exit(1 if not lines else 0 if all(ln.state == "running" for ln in lines) else 2)


@local.command()
@_common
def reset(config: str | None, run_dir: str | None) -> None:
    """Delete the cluster's data and logs (refused while it runs)."""
    from cloudburst.local import reset as do_reset

    if not do_reset(_config(config, run_dir), out=click.echo):
        sys.exit(1)


@local.command()
@_common
@click.argument("name", required=False)
@click.option("-n", "--lines", type=click.IntRange(min=0), default=40, show_default=True)
@click.option("-f", "--follow", is_flag=True, help="keep printing new lines, merged by time")
def logs(
    config: str | None, run_dir: str | None, name: str | None, lines: int, follow: bool
) -> None:
    """Print the end of the logs (all, or NAME: supervisor, kvs, scheduler, executor);
    ``-f`` follows every process's log merged in time order (Ctrl-C stops)."""
    cfg = _config(config, run_dir)
    log_dir = Path(cfg.run_dir) / "logs"
    files = sorted(log_dir.glob("*.log")) if log_dir.is_dir() else []
    if name:
        files = [f for f in files if f.stem == name]
        if not files:
            raise click.UsageError(f"no log named {name!r} in {log_dir}")
    if follow:
        _follow(cfg.run_dir, name, lines)
        return
    if not files:
        click.echo(f"no logs in {log_dir}")
        return
    for path in files:
        click.echo(f"==> {path} <==")
        for line in path.read_text(errors="replace").splitlines()[-lines:]:
            click.echo(line)


# -- the cluster -------------------------------------------------------------------


def _routing(conn: Any) -> str:
    if not conn.kvs_address:
        raise click.ClickException("the scheduler did not say where the KVS is")
    return str(conn.kvs_address)


def _kvs_nodes(conn: Any, timeout: float) -> list[dict[str, Any]] | None:
    from anna.admin import membership

    table = membership(_routing(conn), conn.ip, timeout=min(timeout, 3.0))
    if table is None:
        return None
    return [
        {
            "node": n.node_id,
            "state": "departed" if n.departed else "live",
            "shards": list(n.shard_addresses),
            "epoch": n.epoch,
        }
        for n in sorted(table.nodes, key=lambda n: n.node_id)
    ]


def _processes(target: Target) -> list[dict[str, Any]] | None:
    """The local supervision tree, when the command talks to the local cluster."""
    import dataclasses

    from cloudburst.local import status_lines

    cfg = target.local_cfg()
    if cfg is None:
        return None
    if target.address:
        from cloudburst.ops import resolve_address

        if resolve_address(target.address, cfg) != (cfg.ip, cfg.scheduler.port):
            return None
    lines = status_lines(target.local_run_cfg())
    return [dataclasses.asdict(line) for line in lines] or None


def _metrics_endpoints(target: Target) -> list[dict[str, Any]] | None:
    try:
        from cloudburst.shared.metrics import endpoints
    except ImportError:
        return None
    cfg = target.local_cfg()
    return endpoints(cfg.run_dir) if cfg is not None else None


def _status_doc(target: Target, with_keys: bool) -> dict[str, Any]:
    from anna.admin import list_keys
    from cloudburst.ops import cluster_status

    conn = target.connect()
    sched = conn.status()
    keys = None
    if with_keys:
        try:
            keys = len(list_keys(_routing(conn), conn.ip, "", timeout=target.timeout).keys)
        except TimeoutError:
            keys = None
    eps = _metrics_endpoints(target)
    doc = cluster_status(sched, _kvs_nodes(conn, target.timeout), _processes(target), keys, eps)
    if eps:
        doc["totals"] = _totals(eps)
    return doc


def _totals(eps: list[dict[str, Any]]) -> dict[str, float]:
    """Counters summed over every process's /metrics (unreachable ones skipped)."""
    import urllib.request

    from cloudburst.ops import scrape_totals

    texts = []
    for ep in eps:
        try:
            with urllib.request.urlopen(ep["url"], timeout=2) as resp:
                texts.append(resp.read().decode())
        except OSError:
            continue
    return scrape_totals(texts)


@cli.command("status")
@json_option
@click.option("--no-keys", is_flag=True, help="do not count the KVS keys (a scan of every shard)")
@click.pass_obj
def cluster_status_cmd(target: Target, as_json: bool, no_keys: bool) -> None:
    """The cluster: executors and their load, functions, DAGs, KVS nodes and keys,
    processes and restarts (local cluster), metrics endpoints."""
    from cloudburst.ops import format_status

    doc = _status_doc(target, not no_keys)
    _emit(as_json, doc, format_status(doc))


@cli.command("top")
@click.option("--interval", type=click.FloatRange(min=0.2), default=2.0, show_default=True)
@click.option("--count", type=click.IntRange(min=0), default=0, help="refreshes (0: until Ctrl-C)")
@click.pass_obj
def top(target: Target, interval: float, count: int) -> None:
    """``status``, refreshed every INTERVAL seconds."""
    from cloudburst.ops import format_status, rates

    n = 0
    before: tuple[float, dict[str, float]] | None = None
    while True:
        doc = _status_doc(target, with_keys=False)
        now = time.monotonic()
        if doc.get("totals"):
            if before is not None:
                doc["rates"] = rates(doc["totals"], before[1], now - before[0])
            before = (now, doc["totals"])
        if sys.stdout.isatty():
            click.clear()
        click.echo(time.strftime("%H:%M:%S ") + format_status(doc))
        n += 1
        if count and n >= count:
            return
        time.sleep(interval)


@cli.group("keys")
def keys() -> None:
    """CURVE keys (docs/security.md)."""


@keys.command("generate")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option(
    "--client",
    "clients",
    multiple=True,
    default=("client",),
    show_default=True,
    help="client key pair(s) to create and admit (repeat for several)",
)
def keys_generate(directory: str, clients: tuple[str, ...]) -> None:
    """Write the cluster key pair, client key pair(s) and authorized_clients/ under
    DIRECTORY (ZeroMQ certificates; existing keys are kept)."""
    from cloudburst.shared.security import generate_keys

    root = generate_keys(directory, clients)
    click.echo(f"cluster keys: {root}/cluster.key, {root}/cluster.key_secret (servers only)")
    for name in clients:
        click.echo(f"client keys:  {root}/{name}.key, {root}/{name}.key_secret")
    click.echo(f"admitted:     {root}/authorized_clients/ (add or remove .key files)")
    click.echo(
        "a client needs its .key_secret and cluster.key: "
        f"CloudburstConnection(..., keys_dir={str(root)!r}) or "
        f"CLOUDBURST_SECURITY__KEYS_DIR={root}"
    )


@cli.group("functions")
def functions() -> None:
    """Registered functions."""


@functions.command("list")
@json_option
@click.option("--prefix", default="", help="only names starting with PREFIX")
@click.pass_obj
def functions_list(target: Target, as_json: bool, prefix: str) -> None:
    """Names of the registered functions."""
    names = target.connect().list(prefix)
    _emit(as_json, names, "\n".join(names))


@functions.command("show")
@json_option
@click.argument("name")
@click.pass_obj
def functions_show(target: Target, as_json: bool, name: str) -> None:
    """A function: its stored body size and the executors that loaded it."""
    from cloudburst.shared.errors import FunctionNotFound

    conn = target.connect()
    try:
        conn.get_function(name)
    except FunctionNotFound:
        raise click.ClickException(f"no function named {name!r}") from None
    lattice = conn.get_object(f"funcs/{name}", deserialize=False)
    execs = [e["address"] for e in conn.status()["executor_list"] if name in e["functions"]]
    doc = {
        "name": name,
        "key": f"funcs/{name}",
        "bytes": len(lattice.serialize()) if lattice is not None else None,
        "executors": sorted(execs),
    }
    text = f"{name}: {doc['bytes']} bytes in KVS key {doc['key']}; loaded on " + (
        ", ".join(doc["executors"]) or "no executor yet"
    )
    _emit(as_json, doc, text)


@functions.command("delete")
@click.argument("name")
@click.pass_obj
def functions_delete(target: Target, name: str) -> None:
    """Delete a registered function."""
    conn = target.connect()
    if not hasattr(conn, "delete_function"):
        raise click.ClickException(
            "this version of the client cannot delete functions (no delete_function)"
        )
    from cloudburst.shared.errors import FunctionNotFound, InvalidArgument

    try:
        conn.delete_function(name)
    except FunctionNotFound:
        raise click.ClickException(f"no function named {name!r}") from None
    except InvalidArgument as exc:  # a registered DAG uses it
        raise click.ClickException(f"cannot delete function {name!r}: {exc}") from None
    click.echo(f"deleted function {name}")


@cli.group("dags")
def dags() -> None:
    """Registered DAGs."""


def _dags(conn: Any, timeout: float, prefix: str = "") -> list[dict[str, Any]]:
    from anna.admin import list_keys
    from cloudburst.ops import DAGS_PREFIX, dag_info

    listing = list_keys(_routing(conn), conn.ip, DAGS_PREFIX + prefix, timeout=timeout)
    if listing.missing:
        raise click.ClickException(f"KVS shards did not answer: {', '.join(listing.missing)}")
    if not listing.keys:
        return []
    values = conn._kvs_client().get(listing.keys)
    out = []
    for key in listing.keys:
        info = dag_info(key[len(DAGS_PREFIX) :], values.get(key))
        if info is not None:
            out.append(info)
    return out


@dags.command("list")
@json_option
@click.option("--prefix", default="", help="only names starting with PREFIX")
@click.pass_obj
def dags_list(target: Target, as_json: bool, prefix: str) -> None:
    """Registered DAGs and their functions."""
    from cloudburst.ops import table

    found = _dags(target.connect(), target.timeout, prefix)
    rows = [[d["name"], " -> ".join(d["functions"])] for d in found]
    _emit(as_json, found, table(["DAG", "functions"], rows) if found else "no DAGs")


@dags.command("show")
@json_option
@click.argument("name")
@click.pass_obj
def dags_show(target: Target, as_json: bool, name: str) -> None:
    """A DAG: its functions and connections."""
    from cloudburst.ops import DAGS_PREFIX, dag_info

    conn = target.connect()
    info = dag_info(name, conn.get_object(DAGS_PREFIX + name, deserialize=False))
    if info is None:
        raise click.ClickException(f"no DAG named {name!r}")
    text = (
        f"{info['name']}: functions {', '.join(info['functions'])}\n"
        + "\n".join(f"  {a} -> {b}" for a, b in info["connections"])
    ).rstrip()
    _emit(as_json, info, text)


@dags.command("delete")
@click.argument("name")
@click.pass_obj
def dags_delete(target: Target, name: str) -> None:
    """Delete a DAG."""
    result = target.connect().delete_dag(name)
    if not result:
        raise click.ClickException(f"cannot delete DAG {name!r}: {result.message or 'no such DAG'}")
    click.echo(f"deleted DAG {name}")


@cli.group("kvs")
def kvs() -> None:
    """Objects in the KVS."""


@kvs.command("get")
@json_option
@click.argument("key")
@click.pass_obj
def kvs_get(target: Target, as_json: bool, key: str) -> None:
    """A value: its lattice type, size and a readable summary (exit 1: no such key)."""
    from cloudburst.ops import describe

    doc = describe(key, target.connect().get_object(key, deserialize=False))
    if not doc["found"]:
        if as_json:
            _emit(True, doc)
        raise click.ClickException(f"no key {key!r}")
    val = doc["value"]
    detail = ", ".join(
        f"{k}={val[k]}" for k in ("shape", "dtype", "min", "max", "mean", "len") if k in val
    )
    text = (
        f"{key}: {doc['lattice']}, {doc['bytes']} bytes, {val.get('type')}"
        + (f" ({detail})" if detail else "")
        + f"\n{val.get('repr', val.get('error', ''))}"
    )
    _emit(as_json, doc, text)


@kvs.command("put")
@click.argument("key")
@click.argument("value")
@click.option("--type", "kind", type=click.Choice(["str", "int", "float", "json", "bytes"]),
              default="str", show_default=True, help="how to read VALUE")  # fmt: skip
@click.pass_obj
def kvs_put(target: Target, key: str, value: str, kind: str) -> None:
    """Store VALUE under KEY (as put_object does: LWW)."""
    from cloudburst.ops import parse_value

    try:
        obj = parse_value(value, kind)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="VALUE") from None
    if not target.connect().put_object(key, obj):
        raise click.ClickException(f"the KVS did not acknowledge the put of {key!r}")
    click.echo(f"stored {key}")


@kvs.command("delete")
@click.argument("key")
@click.pass_obj
def kvs_delete(target: Target, key: str) -> None:
    """Delete KEY."""
    if not target.connect().delete_object(key):
        raise click.ClickException(f"the KVS did not acknowledge the delete of {key!r}")
    click.echo(f"deleted {key}")


@kvs.command("keys")
@json_option
@click.argument("prefix", default="")
@click.pass_obj
def kvs_keys(target: Target, as_json: bool, prefix: str) -> None:
    """Every live key starting with PREFIX (asks every KVS shard)."""
    from anna.admin import list_keys

    conn = target.connect()
    listing = list_keys(_routing(conn), conn.ip, prefix, timeout=target.timeout)
    doc = {
        "prefix": prefix,
        "keys": listing.keys,
        "shards": len(listing.shards),
        "missing": listing.missing,
        "truncated": listing.truncated,
    }
    _emit(as_json, doc, "\n".join(listing.keys))
    if listing.missing:
        raise click.ClickException(
            f"incomplete: KVS shards did not answer: {', '.join(listing.missing)}"
        )
    if listing.truncated:
        raise click.ClickException(
            f"incomplete: shards cut their list: {', '.join(listing.truncated)}"
        )


def _follow(run_dir: str, name: str | None, lines: int) -> None:
    from cloudburst.logs import follow, log_files

    def paths() -> list[Path]:
        return [p for p in log_files(run_dir) if name is None or p.stem == name]

    try:
        follow(paths, lambda line: click.echo(f"{line.source:10s} {line.text}"), lines=lines)
    except KeyboardInterrupt:
        pass


@cli.command("logs")
@json_option
@click.argument("call_id", required=False)
@click.option("-n", "--lines", type=click.IntRange(min=0), default=40, show_default=True)
@click.option("-f", "--follow", "follow_", is_flag=True, help="keep printing new lines")
@click.pass_obj
def logs_cmd(target: Target, as_json: bool, call_id: str | None, lines: int, follow_: bool) -> None:
    """The local cluster's logs merged in time order, or with CALL_ID the lines of
    every process about that call (exit 1: none). Every call is logged (one INFO line
    per process) with ``log_calls: true``, or at ``log_level: DEBUG``; failures
    always. See docs/operations.md."""
    from cloudburst.logs import call_lines, log_files, merged

    cfg = target.local_run_cfg()
    run_dir = cfg.run_dir
    files = log_files(run_dir)
    if not files:
        raise click.ClickException(f"no logs in {run_dir}/logs (use --run-dir)")
    if follow_ and not call_id:
        _follow(run_dir, None, lines)
        return
    found = call_lines(files, call_id) if call_id else merged(files)[-lines:]
    if as_json:
        docs = [{"t": ln.t, "source": ln.source, "line": ln.text, "json": ln.doc()} for ln in found]
        _emit(True, docs)
    else:
        for ln in found:
            click.echo(f"{ln.source:10s} {ln.text}")
    if call_id and not found:
        running = target.local_cfg() or cfg  # the running cluster's config, if any
        hint = (
            ""
            if running.log_calls or running.log_level == "DEBUG"
            else " (calls that succeed are logged only with log_calls: true or log_level: DEBUG)"
        )
        raise click.ClickException(f"no log line mentions call {call_id!r} in {run_dir}/logs{hint}")


def main(argv: Sequence[str] | None = None, prog_name: str = "cloudburst") -> int:
    """Run the command line; returns the exit status."""
    try:
        rv = cli.main(
            args=list(sys.argv[1:] if argv is None else argv),
            prog_name=prog_name,
            standalone_mode=False,
        )
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 1
    except click.UsageError as exc:  # exit 2, with the usage line
        exc.show()
        return exc.exit_code
    except click.ClickException as exc:  # exit 1, one line
        click.echo(f"error: {exc.format_message()}", err=True)
        return exc.exit_code
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    except Exception as exc:  # one clear line; the traceback with --debug
        if DEBUG["on"]:
            traceback.print_exc()
        text = " ".join(str(exc).split()) or type(exc).__name__
        click.echo(f"error: {text}", err=True)
        return 1
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    sys.exit(main())
