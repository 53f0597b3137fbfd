"""Typed configuration: defaults, then a YAML file, then environment overrides.

Environment overrides are ``CLOUDBURST_<SECTION>__<FIELD>``, e.g.
``CLOUDBURST_KVS__SHARDS=2`` or ``CLOUDBURST_EXECUTOR__WORKERS=4``; top-level fields
use ``CLOUDBURST_<FIELD>`` (``CLOUDBURST_IP=127.0.0.2``). A bad value raises
:class:`ConfigError` naming the field and what was expected.

Example::

    cfg = load_config("conf/local.yml")
    cfg.kvs.routing_port   # 6450
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cloudburst.shared.errors import ConfigError

ENV_PREFIX = "CLOUDBURST_"
#: CLOUDBURST_* variables that are not config overrides (the config file; the
#: cluster the ``cloudburst`` command talks to; test/bench switches; the root of the
#: short ipc socket directories, cache.protocol.SOCKET_ROOT_ENV).
NOT_OVERRIDES = frozenset(
    ENV_PREFIX + name for name in ("CONFIG", "ADDRESS", "DEBUG", "EXTRAS", "SOCKET_ROOT")
)


@dataclass(frozen=True)
class KvsConfig:
    # Where clients and executor nodes reach KVS routing; empty means ``ip`` (the KVS
    # runs on this host). A node on 127.0.0.2 sets it to the KVS's host.
    host: str = ""
    routing_port: int = 6450
    shard_base_port: int = 6200
    gossip_base_port: int = 6250
    shards: int = 1
    routing_threads: int = 1
    replication_global: int = 1
    replication_local: int = 1
    virtual_nodes: int = 1024  # per member and ring; 128 measured 1.08-1.23 max/mean (anna)
    gossip_period_s: float = 0.5
    heartbeat_period_s: float = 0.5
    failure_timeout_s: float = 3.0
    wal_fsync: str = "always"  # always | interval | never
    wal_fsync_interval_ms: int = 10
    data_dir: str = ".local/kvs"
    # The directory of this node's WAL and snapshots under data_dir; empty:
    # "<ip>_<shard_base_port>". Containers set a name that survives an address change
    # (the StatefulSet pod's name), so a node back on a new IP recovers its WAL.
    wal_name: str = ""
    request_timeout_s: float = 5.0
    # After answering a request a shard keeps polling its sockets without sleeping for
    # this long before it blocks: a request arriving in that window skips a thread
    # wake-up (~20-40 us on these VMs). Costs up to this much CPU per isolated
    # request; 0 turns it off. See docs/kvs.md ("hot path").
    shard_spin_us: int = 50
    # Every this many seconds each shard sends a digest of the keys it replicates with
    # each peer shard; differing buckets are exchanged and merged (anti-entropy). 0 = off.
    anti_entropy_period_s: float = 5.0
    # ``anna.local`` on SIGTERM/SIGINT departs cleanly (hands its keys to the other
    # live nodes) for at most this long before stopping its children anyway.
    depart_timeout_s: float = 10.0
    # A deleted key leaves a tombstone (so replicas, anti-entropy and the WAL do not
    # bring the value back); it is dropped this long after the delete. A replica that
    # stays cut off for longer may resurrect the value when it rejoins.
    tombstone_ttl_s: float = 3600.0
    # The largest PUT payload (serialized lattice; for LWW the value plus ~15 bytes) a
    # client sends and a shard accepts (VALUE_TOO_LARGE beyond it). At most 2 GiB
    # (the transport's frame limit). A shard holds about two copies of a stored value.
    max_value_bytes: int = 1536 * 1024 * 1024
    # Anna's own clients speak only ZMTP's NULL mechanism (no keys). With CURVE on, the
    # routing and shard request ports serve them only if this is true, and only from
    # insecure_client_networks (comma-separated networks; their answers go only there
    # too). Off: refused like any peer without keys. See docs/security.md.
    allow_insecure_clients: bool = False
    insecure_client_networks: str = "127.0.0.0/8"


@dataclass(frozen=True)
class SchedulerConfig:
    # Where executors reach the scheduler; empty means ``ip``.
    host: str = ""
    port: int = 5000
    threads: int = 1
    heartbeat_timeout_s: float = 3.0
    call_timeout_s: float = 30.0
    # A call that finds no live executor waits this long for one (a node or worker being
    # restarted) before it is refused with NO_RESOURCES.
    no_executor_wait_s: float = 5.0


@dataclass(frozen=True)
class ExecutorConfig:
    workers: int = 3
    heartbeat_period_s: float = 0.5
    base_port: int = 5100
    # Per-call limits of functions registered without their own (0 = unlimited); see
    # docs/reliability.md ("Functions and calls").
    default_function_timeout_s: float = 0.0
    default_function_memory_bytes: int = 0
    # An exec_func result stored under results/<id> is deleted this long after the
    # call finished (0 = kept for good).
    result_ttl_s: float = 300.0
    # Pool elasticity (docs/elasticity.md). ``workers`` is the minimum (and the start);
    # a call that waited ``grow_after_s`` behind a busy worker goes back to the node,
    # which gives it to an idle worker or starts one, up to ``max_workers`` (0 = auto:
    # max(16, 4 x cores)); a worker idle for ``idle_retire_s`` is retired (it leaves,
    # then runs what still arrives for ``retire_drain_s`` before it exits). A call that
    # finds no worker within ``scheduler.call_timeout_s`` fails ("at its maximum").
    elastic: bool = True
    max_workers: int = 0
    grow_after_s: float = 0.5
    idle_retire_s: float = 30.0
    retire_drain_s: float = 2.0
    # Capture what a call writes to file descriptors 1/2 (C code, subprocesses) too,
    # not only sys.stdout/sys.stderr and logging (executor/capture.py).
    capture_fds: bool = True
    # This node has a GPU: the scheduler places a DAG's gpu_functions only on executors
    # that advertise one (docs/client.md, "DAG options").
    gpu: bool = False
    # batching_functions: one run takes at most this many pending calls, and a call
    # waits at most this long for others to join its batch.
    batch_max_size: int = 16
    batch_max_wait_s: float = 0.01


@dataclass(frozen=True)
class CacheConfig:
    enabled: bool = True
    # The cache runs as its own process started by someone else (Kubernetes: a second
    # container in the executor pod): executor.node does not start it, and both use the
    # node id external_node_id(cfg) (cache.protocol) for the ipc socket.
    external: bool = False
    capacity_bytes: int = 512 * 1024 * 1024
    push_period_ms: int = 50
    ipc_dir: str = ".local/ipc"
    # The cache re-sends the CacheSubscription of every held key this often, so a
    # shard that restarted (and forgot its subscribers) pushes again. 0 disables.
    subscription_refresh_s: float = 5.0
    # LWW values of at least this many bytes live in shared-memory segments under
    # shm_dir that the node's workers map read-only (cache/shm.py). 0 disables.
    shm_threshold_bytes: int = 64 * 1024
    shm_dir: str = "/dev/shm"


@dataclass(frozen=True)
class DdtConfig:
    batch_bytes: int = 64 * 1024
    batch_ms: int = 10
    buffer_max_bytes: int = 8 * 1024 * 1024


@dataclass(frozen=True)
class MetricsConfig:
    # Every server process serves Prometheus text at http://<ip>:<port>/metrics and
    # records its port in <run_dir>/metrics/<name>-<pid>.json (docs/operations.md).
    enabled: bool = True
    # Ports: routing base_port, scheduler +1, executor node +2, cache +3, shard t
    # +10+t, worker i +50+i. A taken port falls back to a random one (recorded).
    # 0: every process binds a random free port (tests, several clusters per host).
    base_port: int = 9400
    # Only processes of a local-mode cluster (an absolute run_dir, as `cloudburst local
    # start` and free_port_config write it) serve metrics; false: every process does.
    local_only: bool = True


@dataclass(frozen=True)
class SecurityConfig:
    # CURVE on every endpoint (docs/security.md). "auto": off, and a process whose ip
    # is not loopback refuses to start; "true": on, keys from keys_dir; "false": off
    # everywhere, explicitly (a loud warning at every start off loopback).
    curve: str = "auto"
    keys_dir: str = ""  # empty: <run_dir>/keys
    # Denial-of-service basics on the KVS's own transport (anna/zmtp.py) and libzmq
    # server sockets: frames over this many bytes close the connection (0: derived from
    # 2 x kvs.max_value_bytes, at most 2 GiB); at most this many connections per peer host.
    max_frame_bytes: int = 0
    max_connections_per_peer: int = 1024
    handshake_timeout_s: float = 5.0


@dataclass(frozen=True)
class AutoscaleConfig:
    """The cluster policy (``cloudburst.autoscale``, docs/elasticity.md)."""

    enabled: bool = False
    period_s: float = 5.0  # one evaluation per period
    actuator: str = "local"  # local | kubernetes
    # local: loopback addresses new executor nodes use, comma separated (round robin);
    # empty: ``ip``. E.g. "127.0.0.2" puts added nodes on a second host.
    executor_ips: str = ""
    k8s_namespace: str = "cloudburst"
    k8s_executor_deployment: str = "cloudburst-executor"
    k8s_storage_statefulset: str = "cloudburst-storage"
    # Memory a storage node may use (its shards' resident memory against it feeds
    # kvs_memory_high/low); 0: storage inputs off.
    kvs_capacity_bytes: int = 0
    # thresholds (cloudburst.autoscale.policy.PolicyConfig)
    executor_high: float = 0.6
    executor_low: float = 0.1
    queue_wait_high_s: float = 1.0
    min_executor_nodes: int = 1
    max_executor_nodes: int = 4
    hot_function_rate: float = 100.0
    # a function whose calls keep more than this many workers busy per placement
    # replica (calls per second x mean latency) is hot too; 0: off
    hot_function_workers: float = 2.0
    max_function_replicas: int = 8
    kvs_memory_high: float = 0.7
    kvs_memory_low: float = 0.2
    kvs_latency_high_s: float = 0.05
    min_storage_nodes: int = 1
    max_storage_nodes: int = 4
    hot_key_accesses: int = 1000
    cold_key_accesses: int = 10
    hot_key_replication: int = 3
    hysteresis: int = 2
    grace_s: float = 30.0


@dataclass(frozen=True)
class Config:
    ip: str = "127.0.0.1"
    log_level: str = "INFO"
    log_format: str = "text"  # text | json (one JSON object per line)
    # One INFO line per call in the scheduler, each worker and the node cache (with the
    # call id: `cloudburst logs CALL_ID`); otherwise they are DEBUG lines.
    log_calls: bool = False
    run_dir: str = ".local"
    kvs: KvsConfig = field(default_factory=KvsConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    ddt: DdtConfig = field(default_factory=DdtConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    autoscale: AutoscaleConfig = field(default_factory=AutoscaleConfig)


_CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("kvs", "wal_fsync"): ("always", "interval", "never"),
    ("autoscale", "actuator"): ("local", "kubernetes"),
    ("", "log_level"): ("DEBUG", "INFO", "WARNING", "ERROR"),
    ("", "log_format"): ("text", "json"),
    ("security", "curve"): ("auto", "true", "false"),
}


def _coerce(where: str, value: Any, typ: type) -> Any:
    """Convert ``value`` (from YAML or a string from the environment) to ``typ``."""
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if typ is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(str(value).replace("_", ""))
        if typ is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if typ is str:
            if not isinstance(value, str | int | float):
                raise ValueError(value)
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"config {where}: expected {typ.__name__}, got {value!r}") from None
    raise ConfigError(f"config {where}: unsupported type {typ}")


def _build(cls: type, section: str, values: Mapping[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(
            f"config {section or 'top level'}: unknown field(s) {sorted(unknown)}; "
            f"known: {sorted(known)}"
        )
    kwargs: dict[str, Any] = {}
    for name, raw in values.items():
        typ = hints[name]
        where = f"{section}.{name}" if section else name
        if dataclasses.is_dataclass(typ):
            if not isinstance(raw, Mapping):
                raise ConfigError(f"config {where}: expected a mapping, got {raw!r}")
            kwargs[name] = _build(typ, name, raw)  # type: ignore[arg-type]
            continue
        if (section, name) == ("security", "curve"):
            # YAML true/false, or the words from the environment.
            text = str(raw).strip().lower()
            raw = {"1": "true", "yes": "true", "on": "true", "0": "false", "no": "false"}.get(
                text, text
            )
        val = _coerce(where, raw, typ)
        choices = _CHOICES.get((section, name))
        if choices and val not in choices:
            raise ConfigError(f"config {where}: expected one of {choices}, got {val!r}")
        if typ in (int, float) and val < 0:
            raise ConfigError(f"config {where}: must not be negative, got {val!r}")
        kwargs[name] = val
    return cls(**kwargs)


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, val in extra.items():
        if isinstance(val, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), val)
        else:
            out[key] = val
    return out


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, val in env.items():
        if not key.startswith(ENV_PREFIX) or key in NOT_OVERRIDES:
            continue
        path = key[len(ENV_PREFIX) :].lower().split("__")
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = val
    return out


def load_config(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Config:
    """Load the configuration.

    ``path`` defaults to ``$CLOUDBURST_CONFIG`` if set; ``overrides`` (section
    mappings or top-level values) win over everything else.
    """
    env = os.environ if env is None else env
    path = path or env.get(ENV_PREFIX + "CONFIG")
    data: dict[str, Any] = {}
    if path:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        try:
            loaded = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"config file {path}: top level must be a mapping")
        data = _merge(data, loaded)
    data = _merge(data, _env_overrides(env))
    data = _merge(data, overrides)
    return _build(Config, "", data)  # type: ignore[no-any-return]


def kvs_host(cfg: Config) -> str:
    """The host of KVS routing as seen from this process."""
    return cfg.kvs.host or cfg.ip


def scheduler_host(cfg: Config) -> str:
    """The host of the scheduler as seen from this process."""
    return cfg.scheduler.host or cfg.ip


def replace(cfg: Config, **sections: Mapping[str, Any] | Any) -> Config:
    """A copy of ``cfg`` with some fields changed (``replace(cfg, kvs={'shards': 2})``)."""
    data = dataclasses.asdict(cfg)
    return _build(Config, "", _merge(data, sections))  # type: ignore[no-any-return]
