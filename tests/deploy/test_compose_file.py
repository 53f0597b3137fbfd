"""deploy/compose: the compose file as deploy/compose/sdk_compose.py reads it (no
docker needed): the cluster's shape, addresses, volumes, restart policies, health
checks and interpolation. The cluster itself runs in tests/cluster."""

from __future__ import annotations

import importlib.util
import ipaddress
import sys
from pathlib import Path

import pytest
import yaml

from cloudburst import health
from cloudburst.local import free_port_config, write_config
from cloudburst.shared.config import load_config
from cloudburst.shared.processes import ProcessGroup, wait_until

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "sdk_compose", ROOT / "deploy" / "compose" / "sdk_compose.py"
)
assert _spec and _spec.loader
sdk_compose = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("sdk_compose", sdk_compose)
_spec.loader.exec_module(sdk_compose)

ENV = {"CLOUDBURST_NET": "10.99.7", "CLOUDBURST_IMAGE": "cb:test"}


def test_interpolation_and_sizes() -> None:
    env = {"A": "x", "EMPTY": ""}
    assert sdk_compose.interpolate("${A}-${B:-dflt}-${EMPTY:-e}-${B}", env) == "x-dflt-e-"
    assert sdk_compose._seconds("1m30s") == 90 and sdk_compose._seconds("500ms") == 0.5
    assert sdk_compose._bytes("512m") == 512 * 1024**2
    with pytest.raises(ValueError):
        sdk_compose._bytes("lots")


def test_cluster_shape_addresses_and_policies() -> None:
    spec = sdk_compose.load(env=ENV)
    services = spec["services"]
    assert sorted(services) == [
        "executor-0",
        "executor-1",
        "routing",
        "scheduler",
        "storage-0",
        "storage-1",
    ]
    subnet = ipaddress.ip_network(spec["networks"]["cloudburst"]["ipam"]["config"][0]["subnet"])
    assert str(subnet) == "10.99.7.0/24"
    addrs = []
    for name, svc in services.items():
        assert svc["image"] == "cb:test", name
        assert svc["restart"] == "unless-stopped", name
        (net,) = svc["networks"].values()
        addr = net["ipv4_address"]
        assert ipaddress.ip_address(addr) in subnet
        assert svc["environment"]["CLOUDBURST_IP"] == addr  # advertised = own address
        addrs.append(addr)
        test = svc["healthcheck"]["test"]
        assert test[1:4] == ["python", "-m", "cloudburst.health"] and test[4] in health.ROLES
        assert sdk_compose._seconds(svc["healthcheck"]["timeout"]) >= 5
    assert len(set(addrs)) == len(addrs)
    for name in ("storage-0", "storage-1"):
        vols = services[name]["volumes"]
        assert f"{name}:/data" in vols and name in spec["volumes"]  # the WAL survives
        assert "routing:6450" in services[name]["command"]  # joins by name
        assert services[name]["environment"]["CLOUDBURST_KVS__WAL_NAME"] == name
    for name in ("executor-0", "executor-1"):
        env = services[name]["environment"]
        assert env["CLOUDBURST_KVS__HOST"] == "routing"
        assert env["CLOUDBURST_SCHEDULER__HOST"] == "scheduler"
        assert sdk_compose._bytes(services[name]["shm_size"]) >= 256 * 1024**2


def test_the_mounted_config_replicates_twice_on_the_volume() -> None:
    cfg = load_config(ROOT / "deploy" / "compose" / "cloudburst.yml", env={})
    assert cfg.kvs.replication_global == 2
    assert cfg.kvs.data_dir.startswith("/data")
    assert not cfg.metrics.local_only
    raw = yaml.safe_load((ROOT / "deploy" / "compose" / "docker-compose.yml").read_text())
    keys = "${CLOUDBURST_KEYS_DIR:-./keys}:/etc/cloudburst/keys:ro"
    assert raw["x-cloudburst"]["volumes"] == [
        "./cloudburst.yml:/etc/cloudburst/cloudburst.yml:ro",
        keys,
    ]
    # CURVE on every port: every service mounts the keys the config names.
    assert cfg.security.curve == "true" and cfg.security.keys_dir == "/etc/cloudburst/keys"
    for name, svc in raw["services"].items():
        assert keys in svc["volumes"], name


def test_health_reports_a_role_that_does_not_serve(tmp_path: Path) -> None:
    cfg = free_port_config(tmp_path, workers=1, cache={"ipc_dir": str(tmp_path / "ipc")})
    for role in health.ROLES:
        for deep in (False, True):
            problem = health.check(role, cfg, timeout=0.5, deep=deep)
            assert problem is not None, role


@pytest.mark.integration
def test_health_of_a_serving_kvs_node(tmp_path: Path, procs: ProcessGroup) -> None:
    cfg = free_port_config(tmp_path, workers=1)
    path = write_config(cfg, tmp_path / "c.yml")
    procs.start("kvs", [sys.executable, "-m", "anna.local", "--config", str(path)])
    wait_until(
        lambda: health.check("storage", cfg, timeout=1.0, deep=True) is None, 60, "storage ready"
    )
    assert health.check("routing", cfg, timeout=1.0) is None
    assert health.main(["storage", "--config", str(path)]) == 0
    assert health.main(["routing", "--deep", "--config", str(path)]) == 0
    assert health.main(["scheduler", "--config", str(path), "--timeout", "0.5"]) == 1
