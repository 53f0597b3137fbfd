"""The pure parts of the ``cloudburst`` command: value summaries, DAG records, status
documents, log parsing and merging, metrics ports and records, key listing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from anna.listing import list_keys_response, live_keys
from anna.proto import anna_pb2 as apb
from anna.shard.logic import Entry, Tomb
from cloudburst import logs, ops
from cloudburst.shared import metrics, serializer
from cloudburst.shared.config import load_config
from cloudburst.shared.logs import JsonFormatter
from cloudburst.shared.proto import cloudburst_pb2 as cpb
from cloudburst.shared.values import to_lattice
from lattices import LWWPairLattice, SetLattice


def test_describe_values() -> None:
    d = ops.describe("k", to_lattice(np.arange(6, dtype=np.int32).reshape(2, 3)))
    assert d["lattice"] == "LWWPairLattice" and d["bytes"] > 24
    v = d["value"]
    assert (v["type"], v["shape"], v["dtype"], v["min"], v["max"]) == (
        "ndarray", [2, 3], "int32", 0.0, 5.0)  # fmt: skip
    assert ops.describe("k", to_lattice({"a": [1]}))["value"]["value"] == {"a": [1]}
    s = ops.describe("k", to_lattice({1, 2}))
    assert s["lattice"] == "SetLattice" and s["elements"] == 2
    assert ops.describe("k", None) == {"key": "k", "found": False}
    raw = ops.describe("k", LWWPairLattice(1, b"\xff not ours"))
    assert raw["value"]["type"] == "undecodable"
    odd = ops.describe("k", to_lattice(complex(1, 2)))  # not JSON: a repr only
    assert "value" not in odd["value"] and odd["value"]["repr"] == "(1+2j)"
    json.dumps(odd)


def test_parse_value() -> None:
    assert ops.parse_value("7", "int") == 7
    assert ops.parse_value("[1, 2]", "json") == [1, 2]
    assert ops.parse_value("x", "bytes") == b"x"
    with pytest.raises(ValueError):
        ops.parse_value("x", "int")


def test_dag_info_skips_tombstones() -> None:
    dag = cpb.Dag(name="d", functions=["a", "b"])
    dag.connections.add(source="a", sink="b")
    lat = LWWPairLattice(1, serializer.to_bytes(dag.SerializeToString()))
    assert ops.dag_info("d", lat) == {
        "name": "d", "functions": ["a", "b"], "connections": [["a", "b"]]}  # fmt: skip
    assert ops.dag_info("d", LWWPairLattice(2, serializer.to_bytes(b""))) is None
    assert ops.dag_info("d", None) is None


def test_status_document_and_table() -> None:
    sched = {
        "scheduler": "tcp://h:1", "kvs": "h:2", "functions": 3, "dags": 1,
        "executor_list": [{"address": "tcp://h:9", "node_id": "n", "pid": 5,
                           "functions": ["f"], "load": 2}],
    }  # fmt: skip
    procs = [{"name": "kvs", "pid": 1, "state": "running", "restarts": 2, "last_exit": None,
              "depth": 1}]  # fmt: skip
    doc = ops.cluster_status(
        sched, [{"node": "h:6200", "state": "live", "shards": ["a"]}], procs, 7
    )
    assert doc["load"] == 2 and doc["restarts"] == 2 and doc["kvs_keys"] == 7
    text = ops.format_status(doc)
    assert "tcp://h:9" in text and "h:6200" in text and "KVS keys 7" in text
    json.dumps(doc)


def test_resolve_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLOUDBURST_ADDRESS", raising=False)
    cfg = load_config(None, env={}, scheduler={"port": 7001}, ip="127.0.0.9")
    assert ops.resolve_address(None, cfg) == ("127.0.0.9", 7001)
    assert ops.resolve_address("h", cfg) == ("h", 7001)
    monkeypatch.setenv("CLOUDBURST_ADDRESS", "tcp://x:5")
    assert ops.resolve_address(None, cfg) == ("x", 5)
    load_config(None)  # CLOUDBURST_ADDRESS is not a config override


def test_log_lines_merge_and_calls(tmp_path: Path) -> None:
    d = tmp_path / "logs"
    d.mkdir()
    (d / "a.log").write_text(
        "2026-12-01 08:00:00,100 INFO x: start\n"
        "2026-12-01 08:00:02,000 INFO x: [c-1] f: running\nTraceback: boom\n"
    )
    (d / "b.log").write_text(
        json.dumps(
            {
                "t": logs.line_time("2026-12-01 08:00:01,000 x"),
                "msg": "[c-1] placed",
                "call_id": "c-1",
            }
        )
        + "\n"  # fmt: skip
    )
    merged = logs.merged(logs.log_files(tmp_path))
    assert [ln.source for ln in merged] == ["a", "b", "a", "a"]
    assert merged[-1].t == merged[-2].t  # the traceback goes with its line
    calls = logs.call_lines(logs.log_files(tmp_path), "c-1")
    assert [ln.source for ln in calls] == ["b", "a"]
    assert logs.line_time("no time here") is None


def test_json_formatter_call_id() -> None:
    import logging

    rec = logging.LogRecord("n", logging.INFO, "p", 1, "[abc-3] %s ran", ("f",), None)
    doc = json.loads(JsonFormatter("worker0", "worker").format(rec))
    assert (
        doc["call_id"] == "abc-3" and doc["process"] == "worker0" and doc["msg"] == "[abc-3] f ran"
    )


def test_metrics_ports_and_records(tmp_path: Path) -> None:
    cfg = load_config(None, env={}, metrics={"base_port": 9400})
    assert metrics.port_for(cfg, "routing") == 9400
    assert metrics.port_for(cfg, "shard", 2) == 9412
    assert metrics.port_for(cfg, "worker", 3) == 9453
    assert metrics.port_for(load_config(None, env={}, metrics={"base_port": 0}), "shard", 2) == 0
    d = metrics.metrics_dir(tmp_path)
    d.mkdir()
    (d / "me.json").write_text(json.dumps({"name": "me", "role": "r", "pid": os.getpid()}))
    (d / "gone.json").write_text(json.dumps({"name": "gone", "role": "r", "pid": 2**22 + 7}))
    assert [e["name"] for e in metrics.endpoints(tmp_path)] == ["me"]
    assert not (d / "gone.json").exists()


def test_key_listing_skips_tombstones() -> None:
    store = {
        "a/1": Entry(1, LWWPairLattice(1, b"x"), None),
        "a/2": Tomb(1, LWWPairLattice(1, b""), 0),
        "b/1": Entry(2, SetLattice([b"y"]), None),
    }
    assert live_keys(store, "a/") == ["a/1"]
    assert live_keys(store, "") == ["a/1", "b/1"]
    resp = apb.KeyResponse.FromString(list_keys_response(store, "", "r1"))
    assert resp.response_id == "r1" and [t.key for t in resp.tuples] == ["a/1", "b/1"]


def test_version_mismatch_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from cloudburst.shared import version

    log = logging.getLogger("vtest")
    assert version.mismatch("1.0", "", "client", "scheduler") is None
    assert version.mismatch("1.0", "1.0", "client", "scheduler") is None
    with caplog.at_level(logging.WARNING, logger="vtest"):
        assert version.check(log, "9.9-test", "client", "scheduler", mine="1.0")
        assert version.check(log, "9.9-test", "client", "scheduler", mine="1.0")
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [
        "version mismatch: this client is cloudburst 1.0, the scheduler is cloudburst "
        "9.9-test; upgrade one of them if calls fail"
    ]


def test_fast_histogram_exports_cumulative_buckets() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    hist = metrics.FastHistogram(
        "t_fast_seconds", "doc", (0.1, 1.0), label="type", count_name="t_fast_ops"
    )
    metrics.REGISTRY.unregister(hist)
    reg = CollectorRegistry()
    reg.register(hist)
    observe = hist.child("get")
    for v in (0.05, 0.5, 0.5, 5.0):
        observe(v)
    text = generate_latest(reg).decode()
    assert 't_fast_seconds_bucket{le="0.1",type="get"} 1.0' in text
    assert 't_fast_seconds_bucket{le="1.0",type="get"} 3.0' in text
    assert 't_fast_seconds_bucket{le="+Inf",type="get"} 4.0' in text
    assert 't_fast_seconds_sum{type="get"} 6.05' in text
    assert 't_fast_ops_total{type="get"} 4.0' in text


def test_dag_info_shows_the_options_when_set() -> None:
    from cloudburst.client.dags import dag_message

    dag = dag_message("d", ["a", ("b", [None])], [("a", "b")], gpu_functions=["b"])
    info = ops.dag_info("d", LWWPairLattice(1, serializer.to_bytes(dag.SerializeToString())))
    assert info is not None
    assert info["multiexec"] == ["b"] and info["gpu_functions"] == ["b"]
    assert "batching_functions" not in info and "colocated" not in info
