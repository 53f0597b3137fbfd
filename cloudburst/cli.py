"""The ``cloudburst`` command (also ``python -m cloudburst``).

::

    cloudburst local start [--fresh] [--executors N] [--shards N] [--config FILE]
                           [--run-dir DIR] [--timeout S]
    cloudburst local stop | status | reset | logs [NAME] [-n LINES]

``python -m cloudburst.local ARGS`` and ``scripts/start-cloudburst-local.sh`` /
``scripts/stop-cloudburst-local.sh`` run ``cloudburst local ARGS``. The original
Cloudburst's positional ``y``/``n`` arguments of those scripts are accepted and
ignored, with a note. See :mod:`cloudburst.local` for what each command does.
"""

from __future__ import annotations

import sys
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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Cloudburst: stateful functions over a lattice KVS."""


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
@click.argument("legacy", nargs=-1)
def start(
    config: str | None,
    run_dir: str | None,
    fresh: bool,
    executors: int | None,
    shards: int | None,
    timeout: float,
    legacy: tuple[str, ...],
) -> None:
    """Start the cluster in the background (keeps the data of the previous run)."""
    from cloudburst.local import StartFailed, free_hint
    from cloudburst.local import start as do_start

    _legacy(legacy, "start")
    cfg = _config(config, run_dir, executors, shards)
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
def status(config: str | None, run_dir: str | None) -> None:
    """Show every process with its pid, state and restarts (exit 0: all running,
    1: not running, 2: something is not running)."""
    from cloudburst.local import status as do_status

    sys.exit(do_status(_config(config, run_dir), out=click.echo))


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
@click.option("-n", "--lines", type=click.IntRange(min=1), default=40, show_default=True)
def logs(config: str | None, run_dir: str | None, name: str | None, lines: int) -> None:
    """Print the end of the logs (all, or NAME: supervisor, kvs, scheduler, executor)."""
    cfg = _config(config, run_dir)
    log_dir = Path(cfg.run_dir) / "logs"
    files = sorted(log_dir.glob("*.log")) if log_dir.is_dir() else []
    if name:
        files = [f for f in files if f.stem == name]
        if not files:
            raise click.UsageError(f"no log named {name!r} in {log_dir}")
    if not files:
        click.echo(f"no logs in {log_dir}")
        return
    for path in files:
        click.echo(f"==> {path} <==")
        for line in path.read_text(errors="replace").splitlines()[-lines:]:
            click.echo(line)


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
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    sys.exit(main())
