from __future__ import annotations

from pathlib import Path

import pytest

from cloudburst.shared.config import Config, load_config, replace
from cloudburst.shared.errors import ConfigError


def test_defaults() -> None:
    cfg = load_config(env={})
    assert cfg == Config()
    assert cfg.kvs.routing_port == 6450 and cfg.kvs.shard_base_port == 6200
    assert cfg.kvs.wal_fsync == "always"


def test_yaml_then_env_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("ip: 127.0.0.2\nkvs:\n  shards: 4\n  gossip_period_s: 0.25\n")
    cfg = load_config(
        path, env={"CLOUDBURST_KVS__SHARDS": "2", "CLOUDBURST_EXECUTOR__WORKERS": "5"}
    )
    assert cfg.ip == "127.0.0.2"
    assert cfg.kvs.shards == 2  # env wins over the file
    assert cfg.kvs.gossip_period_s == 0.25
    assert cfg.executor.workers == 5
    cfg2 = load_config(path, env={}, kvs={"shards": 7})
    assert cfg2.kvs.shards == 7


def test_config_path_from_env(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("cache:\n  enabled: false\n")
    assert load_config(env={"CLOUDBURST_CONFIG": str(path)}).cache.enabled is False


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"CLOUDBURST_KVS__SHARDS": "two"}, "kvs.shards: expected int"),
        ({"CLOUDBURST_KVS__WAL_FSYNC": "sometimes"}, "kvs.wal_fsync: expected one of"),
        ({"CLOUDBURST_KVS__NOPE": "1"}, "unknown field"),
        ({"CLOUDBURST_CACHE__ENABLED": "maybe"}, "cache.enabled: expected bool"),
        ({"CLOUDBURST_EXECUTOR__WORKERS": "-1"}, "must not be negative"),
    ],
)
def test_bad_values_are_clear(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_config(env=env)


def test_bad_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yml", env={})
    bad = tmp_path / "bad.yml"
    bad.write_text("kvs: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad, env={})
    scalar = tmp_path / "scalar.yml"
    scalar.write_text("kvs: 3\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(scalar, env={})


def test_replace_validates() -> None:
    cfg = replace(Config(), scheduler={"port": 7000})
    assert cfg.scheduler.port == 7000 and cfg.kvs == Config().kvs
    with pytest.raises(ConfigError):
        replace(cfg, scheduler={"port": "x"})
