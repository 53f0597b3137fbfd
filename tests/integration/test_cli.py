"""The ``cloudburst`` command against a real cluster (free ports, temp dir): every
read command with ``--json`` parsed, the write commands, exit codes and errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.integration.conftest import Cluster, start_cluster

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cl(tmp_path_factory: pytest.TempPathFactory) -> Any:
    c = start_cluster(tmp_path_factory.mktemp("cli"), workers=2)
    try:
        yield c
    finally:
        c.group.stop_all()


def run(cluster: Cluster | None, *args: str, env: dict[str, str] | None = None) -> Any:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDBURST_")}
    if cluster is not None:
        base["CLOUDBURST_ADDRESS"] = f"{cluster.cfg.ip}:{cluster.cfg.scheduler.port}"
    base.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "cloudburst", "--timeout", "20", *args],
        cwd=ROOT,
        env=base,
        capture_output=True,
        text=True,
        timeout=120,
    )


def ok_json(cluster: Cluster, *args: str) -> Any:
    r = run(cluster, *args, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def incr(_, x: int) -> int:
    return x + 1


def square(_, x: int) -> int:
    return x * x


def test_status_functions_dags(cl: Cluster) -> None:
    with cl.connect() as conn:
        conn.register(incr, "cli_incr")
        conn.register(square, "cli_square")
        assert conn.register_dag(
            "cli_dag", ["cli_incr", "cli_square"], [("cli_incr", "cli_square")]
        )
        assert conn.call_dag("cli_dag", {"cli_incr": [2]}, direct_response=True) == 9

    st = ok_json(cl, "status")
    assert len(st["executors"]) == 2
    assert st["functions"] >= 2 and st["dags"] >= 1
    assert st["kvs_nodes"] and st["kvs_nodes"][0]["state"] == "live"
    assert st["kvs_keys"] >= 3  # funcs/cli_incr, funcs/cli_square, dags/cli_dag ...
    text = run(cl, "status")
    assert text.returncode == 0 and "executor" in text.stdout and "KVS node" in text.stdout

    names = ok_json(cl, "functions", "list")
    assert {"cli_incr", "cli_square"} <= set(names)
    assert ok_json(cl, "functions", "list", "--prefix", "cli_sq") == ["cli_square"]
    shown = ok_json(cl, "functions", "show", "cli_incr")
    assert shown["name"] == "cli_incr" and shown["bytes"] > 0
    missing = run(cl, "functions", "show", "no_such_fn")
    assert missing.returncode == 1 and "no_such_fn" in missing.stderr

    dags = ok_json(cl, "dags", "list")
    assert {"name": "cli_dag", "functions": ["cli_incr", "cli_square"],
            "connections": [["cli_incr", "cli_square"]]} in dags  # fmt: skip
    assert ok_json(cl, "dags", "show", "cli_dag")["connections"] == [["cli_incr", "cli_square"]]
    deleted = run(cl, "dags", "delete", "cli_dag")
    assert deleted.returncode == 0, deleted.stderr
    assert "cli_dag" not in [d["name"] for d in ok_json(cl, "dags", "list")]
    again = run(cl, "dags", "show", "cli_dag")
    assert again.returncode == 1 and again.stderr.count("\n") == 1, again.stderr
    assert run(cl, "dags", "delete", "cli_dag").returncode == 1
    gone = run(cl, "functions", "delete", "cli_square")
    assert gone.returncode == 0, gone.stderr
    assert "cli_square" not in ok_json(cl, "functions", "list")
    again_fn = run(cl, "functions", "delete", "cli_square")
    assert again_fn.returncode == 1 and again_fn.stderr.startswith("error: ")


def test_kvs_commands(cl: Cluster) -> None:
    r = run(cl, "kvs", "put", "cli/a", "41", "--type", "int")
    assert r.returncode == 0, r.stderr
    got = ok_json(cl, "kvs", "get", "cli/a")
    assert got["lattice"] == "LWWPairLattice" and got["value"]["value"] == 41
    assert run(cl, "kvs", "put", "cli/b", '{"x": [1, 2]}', "--type", "json").returncode == 0
    assert ok_json(cl, "kvs", "get", "cli/b")["value"]["value"] == {"x": [1, 2]}
    with cl.connect() as conn:
        conn.put_object("cli/arr", np.arange(12, dtype=np.float64).reshape(3, 4))
    arr = ok_json(cl, "kvs", "get", "cli/arr")["value"]
    assert arr["shape"] == [3, 4] and arr["dtype"] == "float64" and arr["max"] == 11.0
    human = run(cl, "kvs", "get", "cli/arr")
    assert "ndarray" in human.stdout and "shape=[3, 4]" in human.stdout

    keys = ok_json(cl, "kvs", "keys", "cli/")
    assert keys["keys"] == ["cli/a", "cli/arr", "cli/b"] and keys["missing"] == []
    assert run(cl, "kvs", "delete", "cli/a").returncode == 0
    assert ok_json(cl, "kvs", "keys", "cli/")["keys"] == ["cli/arr", "cli/b"]
    gone = run(cl, "kvs", "get", "cli/a")
    assert gone.returncode == 1 and "no key 'cli/a'" in gone.stderr


def test_errors_and_exit_codes(cl: Cluster, tmp_path: Path) -> None:
    from cloudburst.shared.processes import free_port

    usage = run(cl, "kvs", "put", "k")  # VALUE missing
    assert usage.returncode == 2
    bad = run(cl, "kvs", "put", "k", "x", "--type", "int")
    assert bad.returncode == 2 and "VALUE" in bad.stderr
    nowhere = run(None, "status", env={"CLOUDBURST_ADDRESS": f"127.0.0.1:{free_port()}"})
    assert nowhere.returncode == 1
    assert nowhere.stderr.startswith("error: cannot reach") and nowhere.stderr.count("\n") == 1
    assert "Traceback" not in nowhere.stderr
    debug = run(None, "--debug", "status", env={"CLOUDBURST_ADDRESS": f"127.0.0.1:{free_port()}"})
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    flag = run(None, "--address", f"{cl.cfg.ip}:{cl.cfg.scheduler.port}", "functions", "list")
    assert flag.returncode == 0, flag.stderr
    # A call that succeeded is not in the logs without log_calls: the error says so.
    quiet = run(cl, "--run-dir", str(cl.cfg.run_dir), "logs", "no-such-call")
    assert quiet.returncode == 1 and "log_calls: true" in quiet.stderr, quiet.stderr


def test_shell_completion() -> None:
    r = run(None, env={"_CLOUDBURST_COMPLETE": "bash_source"})
    assert r.returncode == 0 and "_CLOUDBURST_COMPLETE" in r.stdout
    r = run(None, env={"_CLOUDBURST_COMPLETE": "bash_complete", "COMP_WORDS": "cloudburst kv",
                       "COMP_CWORD": "1"})  # fmt: skip
    assert "kvs" in r.stdout


def test_version_exchange(cl: Cluster, monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    import logging

    import cloudburst
    from cloudburst.shared import version
    from cloudburst.shared.processes import wait_until

    monkeypatch.setattr(version, "__version__", "0.0.1-old")
    with caplog.at_level(logging.WARNING):
        cl.connect().close()
    assert any(
        "this client is cloudburst 0.0.1-old, the scheduler is cloudburst "
        f"{cloudburst.__version__}" in r.getMessage()
        for r in caplog.records
    ), caplog.records
    expected = (
        f"this scheduler is cloudburst {cloudburst.__version__}, the client is cloudburst 0.0.1-old"
    )
    sched = cl.group.procs["scheduler"]
    wait_until(lambda: expected in sched.log_tail(400), 20, "the scheduler's warning")
    cl.connect().close()
    assert sched.log_tail(400).count(expected) == 1
