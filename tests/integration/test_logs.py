"""Logs of a launched local cluster in JSON lines: one call followed through the
logs of the scheduler, the executor and the cache (``cloudburst logs CALL_ID``, at INFO
with ``log_calls``), and ``cloudburst local logs -f`` merging every process's log in
time order."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cloudburst.client.client import CloudburstConnection
from tests.integration.localcluster import ROOT, clean_env, launched

pytestmark = pytest.mark.integration


def incr(lib, x: int) -> int:
    lib.put("lg/key", x)  # through the node's cache: it logs the call's requests
    return lib.get("lg/key") + 1


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cloudburst", *args],
        cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _followed_enough(lines: list[str]) -> bool:
    rows = [r.split(None, 1) for r in lines if r.strip()]
    sources = {p[0] for p in rows}
    jsons = sum(1 for p in rows if len(p) == 2 and p[1].startswith("{"))
    return {"kvs", "scheduler", "executor", "supervisor"} <= sources and jsons > 10


def test_follow_one_call_through_the_logs(tmp_path: Path) -> None:
    # At INFO: with log_calls each process logs one line per call (not DEBUG noise).
    with launched(
        tmp_path / "run", workers=1, log_format="json", log_level="INFO", log_calls=True
    ) as cfg:
        conn = CloudburstConnection(
            cfg.ip, cfg.ip, port=cfg.scheduler.port, timeout=20, direct=False
        )
        try:
            conn.register(incr, "lg_incr")
            assert conn.register_dag("lg_dag", ["lg_incr"], [])
            fut = conn.call_dag("lg_dag", {"lg_incr": [1]})
            assert fut.get() == 2
            call_id = fut.request_id
        finally:
            conn.close()

        deadline = time.monotonic() + 30
        while True:
            out = cli("--run-dir", cfg.run_dir, "logs", call_id, "--json")
            docs = json.loads(out.stdout) if out.returncode == 0 else []
            roles = {d["json"]["role"] for d in docs if d["json"]}
            if {"scheduler", "worker", "cache"} <= roles or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert out.returncode == 0, out.stderr
        assert {"scheduler", "worker", "cache"} <= roles, docs
        for d in docs:
            assert d["json"]["call_id"] == call_id and d["json"]["level"] == "INFO"
            assert d["json"]["process"] and d["json"]["pid"] > 0
        msgs = {d["json"]["role"]: d["json"]["msg"] for d in docs}
        assert "placed" in msgs["scheduler"] and "done in" in msgs["worker"]
        assert [d["t"] for d in docs] == sorted(d["t"] for d in docs)
        text = cli("--run-dir", cfg.run_dir, "logs", call_id)
        assert text.returncode == 0 and "scheduler" in text.stdout
        none = cli("--run-dir", cfg.run_dir, "logs", "no-such-call-id")
        assert none.returncode == 1 and "no-such-call-id" in none.stderr
        assert "log_calls" not in none.stderr  # (they are on here: no hint)

        # -f: the existing lines of every process merged by time, then new ones
        proc = subprocess.Popen(
            [sys.executable, "-m", "cloudburst", "local", "logs", "-f", "-n", "200",
             "--run-dir", cfg.run_dir],
            cwd=ROOT, env=clean_env(), stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        # Read what it prints until every process's lines (and 10+ of them) came, at
        # most 30 s (a fixed 4 s wait before; this takes ~1 s on a quiet machine).
        got: list[str] = []

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                got.append(line)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not _followed_enough(list(got)):
                time.sleep(0.1)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=20)
            reader.join(timeout=20)
            if proc.stdout is not None and not reader.is_alive():
                proc.stdout.close()
        assert not reader.is_alive()
        output = "".join(got)
        rows = [r for r in output.splitlines() if r.strip()]
        sources = {r.split(None, 1)[0] for r in rows}
        assert {"kvs", "scheduler", "executor", "supervisor"} <= sources, sources
        parts = [r.split(None, 1) for r in rows]
        times = [json.loads(p[1])["t"] for p in parts if len(p) == 2 and p[1].startswith("{")]
        assert len(times) > 10
        # in time order (a line written just before a poll may come one poll late)
        assert all(b >= a - 1.0 for a, b in zip(times, times[1:], strict=False)), times
