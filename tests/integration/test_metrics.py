"""Every process of a launched local cluster (free ports, temp dir) serves Prometheus
text at /metrics, recorded in <run_dir>/metrics/, with the families of its role."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from cloudburst.shared.metrics import endpoints
from cloudburst.shared.processes import wait_until
from tests.integration.localcluster import ROOT, clean_env, connect, launched

pytestmark = pytest.mark.integration


def scrape(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.status == 200
            return resp.read().decode()
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{url}: {exc}") from None


def incr(_, x: int) -> int:
    return x + 1


def fails(_, x: int) -> int:
    raise ValueError(f"no {x}")


EXPECTED = {
    "supervisor": ["cloudburst_process_restarts_total", "cloudburst_process_up"],
    "kvs": ['cloudburst_process_restarts_total{process="shard0",supervisor="kvs"}'],
    "routing": ["anna_routing_heartbeats_total", "process_cpu_seconds_total"],
    "shard": [
        'anna_shard_keys{shard="0"}',
        'anna_shard_put_total{shard="0"}',
        "anna_wal_write_seconds_bucket",
        "anna_wal_fsync_seconds_count",
    ],
    "scheduler": [
        'cloudburst_calls_total{kind="dag",name="m_dag",role="scheduler"}',
        'cloudburst_call_seconds_bucket{kind="dag"',
        'cloudburst_call_errors_total{kind="dag",name="no_such_dag",role="scheduler"}',
        'cloudburst_queue_length{queue="registry_updates",role="scheduler"}',
        'cloudburst_kvs_requests_total{type="get"}',
    ],
    "executor-node": ['cloudburst_process_restarts_total{process="cache",supervisor="executor"'],
    "cache": [
        "cloudburst_cache_hits_total",
        "cloudburst_cache_misses_total",
        "cloudburst_cache_bytes",
        "cloudburst_ddt_entries_total",
        "cloudburst_ddt_held_total",
        "cloudburst_ddt_waiting_writers",
        "cloudburst_cache_evictions_total",
    ],  # fmt: skip
    "worker": [
        'cloudburst_queue_length{queue="parked",role="worker"}',
        "cloudburst_worker_busy_seconds_total",
        "cloudburst_kvs_request_seconds_bucket",
        'cloudburst_queue_wait_seconds_count{role="worker"}',
    ],
}


def test_every_process_serves_metrics(tmp_path: Path) -> None:
    with launched(tmp_path / "run", workers=2) as cfg:
        with connect(cfg, timeout=20) as conn:
            conn.register(incr, "m_incr")
            conn.register(fails, "m_fails")
            assert conn.register_dag("m_dag", ["m_incr"], [])
            for i in range(3):
                assert conn.call_dag("m_dag", {"m_incr": [i]}, direct_response=True) == i + 1
            with pytest.raises(Exception, match="no 1"):
                conn.exec_func("m_fails", [1]).get()
            with pytest.raises(Exception, match="no_such_dag"):
                conn.call_dag("no_such_dag", {"x": [1]}).get()
            conn.put_object("m/key", 5)
            assert conn.get_object("m/key") == 5
            assert conn.delete_object("m/key")

        names = {"supervisor", "kvs", "routing", "shard0", "scheduler", "executor-node",
                 "cache", "worker0", "worker1"}  # fmt: skip
        wait_until(
            lambda: {e["name"] for e in endpoints(cfg.run_dir)} >= names, 30, "metrics records"
        )
        eps = endpoints(cfg.run_dir)
        assert {e["name"] for e in eps} == names
        assert len({e["port"] for e in eps}) == len(eps)
        worker_text = ""
        all_text = ""
        for ep in eps:
            text = scrape(ep["url"])
            all_text += text
            assert "process_resident_memory_bytes" in text or ep["role"] != "routing"
            if ep["role"] == "worker":
                worker_text += text
                continue
            for family in EXPECTED[ep["role"]]:
                assert family in text, (ep["name"], family)
        for family in EXPECTED["worker"] + [
            'cloudburst_calls_total{kind="function",name="m_incr",role="executor"}',
            'cloudburst_call_errors_total{kind="function",name="m_fails",role="executor"}',
            'cloudburst_call_seconds_count{kind="function",name="m_incr",role="executor"}',
        ]:
            assert family in worker_text, family

        # every family the Grafana dashboard plots exists (gossip and anti-entropy
        # counters appear only with several replicas)
        dashboard = json.loads((ROOT / "deploy" / "grafana" / "cloudburst.json").read_text())
        exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
        used = set(re.findall(r"\b((?:cloudburst|anna|process)_[a-z_]+)", exprs))
        conditional = {"anna_shard_gossip_out_total", "anna_shard_gossip_in_total",
                       "anna_shard_ae_keys_sent_total", "anna_gossip_lag_seconds_bucket",
                       "anna_gossip_last_received_age_seconds"}  # fmt: skip
        missing = {m for m in used - conditional if m not in all_text}
        assert not missing, missing

        # cloudburst status lists them (the local cluster of --run-dir)
        env = clean_env()
        out = subprocess.run(
            [sys.executable, "-m", "cloudburst", "--run-dir", cfg.run_dir, "status", "--json"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)
        assert {m["name"] for m in doc["metrics"]} == names
        assert doc["totals"]["scheduler_calls"] >= 3  # m_dag through the scheduler
        assert doc["totals"]["executor_calls"] >= 4 and doc["totals"]["executor_errors"] >= 1
        top = subprocess.run(
            [sys.executable, "-m", "cloudburst", "--run-dir", cfg.run_dir, "top", "--count", "2",
             "--interval", "0.5"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert top.returncode == 0, top.stderr
        assert "per second:" in top.stdout and "functions run" in top.stdout
        procs = {p["name"]: p for p in doc["processes"]}
        assert procs["scheduler"]["state"] == "running" and doc["restarts"] == 0

        local_json = subprocess.run(
            [sys.executable, "-m", "cloudburst", "local", "status", "--json", "--run-dir",
             cfg.run_dir],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert local_json.returncode == 0, local_json.stderr
        tree = {p["name"]: p for p in json.loads(local_json.stdout)}
        assert tree["scheduler"]["pid"] == procs["scheduler"]["pid"] and "worker1" in tree

        # a restart shows in the supervisor's metrics and in status
        sched_pid = procs["scheduler"]["pid"]
        os.kill(sched_pid, 9)
        sup = next(e for e in endpoints(cfg.run_dir) if e["name"] == "supervisor")
        wait_until(
            lambda: 'process="scheduler",supervisor="supervisor"} 1.0' in scrape(sup["url"]),
            60,
            "the scheduler's restart in the supervisor's metrics",
        )
