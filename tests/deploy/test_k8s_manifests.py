"""deploy/k8s: every overlay renders with ``kubectl kustomize``, passes
``kubernetes-validate --strict``, and is consistent in what schemas cannot see:
selectors match pod labels, Service and container ports agree with the config's
ports, every container has requests, limits and probes (timeouts >= 5 s), image names
agree, the commands and probe commands exist in the image, every pod gets CURVE keys
(docs/security.md) that security.py accepts, and its health probes use them."""

from __future__ import annotations

import importlib.util
import os
import stat
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from cache.protocol import external_node_id
from cloudburst import health
from cloudburst.local import free_port_config, write_config
from cloudburst.shared import security
from cloudburst.shared.config import Config, SecurityConfig, load_config
from cloudburst.shared.metrics import port_for
from cloudburst.shared.processes import ProcessGroup, wait_until
from executor.node import node_id
from tests.deploy.k8s import K8S, OVERLAYS, ROOT, render

WORKLOADS = ("Deployment", "StatefulSet")
# Which process of a pod serves the pod's "metrics" port (cloudburst.shared.metrics).
METRICS_ROLE = {
    "routing": "routing",
    "storage": "routing",
    "scheduler": "scheduler",
    "executor": "executor-node",
    "autoscaler": "autoscaler",
}


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(request.param)


def _kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def _config(docs: list[dict[str, Any]]) -> Config:
    """The config the pods mount (the ConfigMap's cloudburst.yml, no environment)."""
    (cm,) = [d for d in _kind(docs, "ConfigMap") if d["metadata"]["name"].startswith("cloudburst")]
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "cloudburst.yml"
        f.write_text(cm["data"]["cloudburst.yml"])
        return load_config(str(f), env={})


def _containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    """Every container of the pod, init containers included."""
    spec = workload["spec"]["template"]["spec"]
    return list(spec.get("containers", [])) + list(spec.get("initContainers", []))


def _main(workload: dict[str, Any]) -> list[dict[str, Any]]:
    return list(workload["spec"]["template"]["spec"]["containers"])


def _init(workload: dict[str, Any]) -> list[dict[str, Any]]:
    return list(workload["spec"]["template"]["spec"].get("initContainers", []))


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_both_overlays_exist() -> None:
    assert {"dev", "prod"} <= set(OVERLAYS)


def test_every_resource_validates_strictly(rendered: Any) -> None:
    _, docs = rendered
    version = kubernetes_validate.latest_version()
    kinds = set()
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)
        kinds.add(doc["kind"])
    assert {
        "ConfigMap",
        "Service",
        "Deployment",
        "StatefulSet",
        "PodDisruptionBudget",
        "NetworkPolicy",
    } <= kinds


def test_strict_validation_rejects_an_unknown_field(rendered: Any) -> None:
    _, docs = rendered
    bad = dict(_kind(docs, "Service")[0])
    bad["spec"] = {**bad["spec"], "portz": []}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, kubernetes_validate.latest_version(), strict=True)


def test_selectors_match_pod_labels(rendered: Any) -> None:
    _, docs = rendered
    workloads = [d for d in docs if d["kind"] in WORKLOADS]
    assert {w["metadata"]["name"] for w in workloads} == {
        "cloudburst-routing",
        "cloudburst-storage",
        "cloudburst-scheduler",
        "cloudburst-executor",
        "cloudburst-autoscaler",
    }
    pod_labels = []
    for w in workloads:
        labels = w["spec"]["template"]["metadata"]["labels"]
        assert _matches(w["spec"]["selector"]["matchLabels"], labels), w["metadata"]["name"]
        pod_labels.append(labels)
    for svc in _kind(docs, "Service"):
        sel = svc["spec"]["selector"]
        assert sum(_matches(sel, labels) for labels in pod_labels) == 1, svc["metadata"]["name"]
    for pdb in _kind(docs, "PodDisruptionBudget"):
        sel = pdb["spec"]["selector"]["matchLabels"]
        assert any(_matches(sel, labels) for labels in pod_labels)
    for pol in _kind(docs, "NetworkPolicy"):
        sel = pol["spec"]["podSelector"]["matchLabels"]
        assert all(_matches(sel, labels) for labels in pod_labels)


def test_ports_agree_with_the_config(rendered: Any) -> None:
    _, docs = rendered
    cfg = _config(docs)
    want = {
        "routing": cfg.kvs.routing_port,
        "shard": cfg.kvs.shard_base_port,
        "gossip": cfg.kvs.gossip_base_port,
        "subscribe": cfg.kvs.shard_base_port + 100,
        "scheduler": cfg.scheduler.port,
    }
    want.update({f"worker{i}": cfg.executor.base_port + i for i in range(cfg.executor.workers)})
    by_component: dict[str, dict[str, int]] = {}
    for w in (d for d in docs if d["kind"] in WORKLOADS):
        component = w["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
        ports: dict[str, int] = {}
        for c in _containers(w):
            for p in c.get("ports", []):
                ports[p["name"]] = p["containerPort"]
        for name, port in ports.items():
            if name == "metrics":
                assert port == port_for(cfg, METRICS_ROLE[component]), component
            else:
                assert port == want[name], (component, name)
        by_component[component] = ports
    # every worker of an executor node has its port
    assert {f"worker{i}" for i in range(cfg.executor.workers)} <= set(by_component["executor"])
    assert {"routing", "shard", "gossip", "subscribe"} <= set(by_component["storage"])
    for svc in _kind(docs, "Service"):
        component = svc["spec"]["selector"]["app.kubernetes.io/component"]
        for p in svc["spec"]["ports"]:
            target = p.get("targetPort", p["port"])
            pod_ports = by_component[component]
            number = pod_ports[target] if isinstance(target, str) else target
            assert number in pod_ports.values(), (svc["metadata"]["name"], p)
            assert p["port"] == number, (svc["metadata"]["name"], p)


def test_every_container_has_requests_limits_and_probes(rendered: Any) -> None:
    _, docs = rendered
    for w in (d for d in docs if d["kind"] in WORKLOADS):
        assert _init(w), w["metadata"]["name"]  # the keys' init container
        for c in _containers(w):
            where = f"{w['metadata']['name']}/{c['name']}"
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][part]), (where, part)
        for c in _main(w):
            where = f"{w['metadata']['name']}/{c['name']}"
            for probe in ("readinessProbe", "livenessProbe"):
                assert probe in c, (where, probe)
                assert c[probe].get("timeoutSeconds", 1) >= 5, (where, probe)
        for c in _init(w):  # Kubernetes refuses probes on (non-sidecar) init containers
            assert not {"readinessProbe", "livenessProbe", "startupProbe"} & set(c), c["name"]


def test_image_names_agree(rendered: Any) -> None:
    overlay, docs = rendered
    kust = yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text())
    (img,) = kust["images"]
    want = f"{img['newName']}:{img['newTag']}"
    for w in (d for d in docs if d["kind"] in WORKLOADS):
        for c in _containers(w):
            assert c["image"] == want, (w["metadata"]["name"], c["image"])


def _module_exists(argv: list[str]) -> None:
    """``[cloudburst-entrypoint] python -m MOD [args]``: MOD is in the image's code."""
    if argv[0] == "cloudburst-entrypoint":
        assert "/usr/local/bin/cloudburst-entrypoint" in (ROOT / "Dockerfile").read_text()
        argv = argv[1:]
    assert argv[:2] == ["python", "-m"], argv
    module = argv[2]
    assert importlib.util.find_spec(module) is not None, module
    top = module.split(".")[0]
    assert f"COPY {top} /app/{top}" in (ROOT / "Dockerfile").read_text(), top
    if module == "cloudburst.health":
        assert argv[3] in health.ROLES and set(argv[4:]) <= {"--deep"}, argv


def test_commands_and_probe_commands_exist(rendered: Any) -> None:
    _, docs = rendered
    for w in (d for d in docs if d["kind"] in WORKLOADS):
        for c in _init(w):
            assert c["command"][:2] == ["sh", "-c"]  # run by test_the_keys_init_container...
        for c in _main(w):
            _module_exists(c["command"])
            for probe in ("readinessProbe", "livenessProbe"):
                _module_exists(c[probe]["exec"]["command"])
            # readiness makes a real exchange; liveness stays cheap (no restart cascades)
            assert c["readinessProbe"]["exec"]["command"][-1] == "--deep"
            assert "--deep" not in c["livenessProbe"]["exec"]["command"]


def test_storage_statefulset_peer_service_pvc_pdb_and_grace(rendered: Any) -> None:
    _, docs = rendered
    cfg = _config(docs)
    (sts,) = _kind(docs, "StatefulSet")
    peers = {s["metadata"]["name"]: s for s in _kind(docs, "Service")}[sts["spec"]["serviceName"]]
    assert peers["spec"]["clusterIP"] == "None"
    assert peers["spec"]["publishNotReadyAddresses"] is True
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert cfg.kvs.data_dir.startswith(mounts[claim["metadata"]["name"]])
    env = {e["name"]: e for e in c["env"]}  # the WAL follows the pod's name, not its IP
    assert env["CLOUDBURST_KVS__WAL_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    pod = sts["spec"]["template"]["spec"]
    # the hand-off (depart) plus the launcher's stop of its children fit in the grace
    assert pod["terminationGracePeriodSeconds"] >= cfg.kvs.depart_timeout_s + 10
    assert "podAntiAffinity" in pod["affinity"]
    (pdb,) = _kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert cfg.kvs.replication_global >= 2
    assert sts["spec"]["replicas"] >= cfg.kvs.replication_global


def test_executor_pod_shares_ipc_and_shm_and_uses_service_names(rendered: Any) -> None:
    _, docs = rendered
    cfg = _config(docs)
    services = {s["metadata"]["name"] for s in _kind(docs, "Service")}
    (ex,) = [d for d in _kind(docs, "Deployment") if d["metadata"]["name"] == "cloudburst-executor"]
    pod = ex["spec"]["template"]["spec"]
    empty = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    # two containers: the node (and its workers) and its cache, one PID namespace (the
    # cache tells dead workers by pid: cache/shm.py), the same emptyDirs
    node, cache = pod["containers"]
    assert pod["shareProcessNamespace"] is True
    assert node["command"][1:] == ["python", "-m", "executor.node"]
    assert cache["command"][1:] == ["python", "-m", "cache.server", "--node-id", "auto"]
    assert cache["readinessProbe"]["exec"]["command"][3] == "cache"
    assert node["readinessProbe"]["exec"]["command"][3] == "executor"
    shared = []
    for c in (node, cache):
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        assert mounts[cfg.cache.ipc_dir] in empty
        assert mounts[cfg.cache.shm_dir] in empty
        assert mounts[cfg.run_dir] in empty
        shared.append({p: mounts[p] for p in (cfg.cache.ipc_dir, cfg.cache.shm_dir, cfg.run_dir)})
        env = {e["name"]: e for e in c["env"]}
        assert env["CLOUDBURST_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
        assert env["CLOUDBURST_KVS__HOST"]["value"] in services
        assert env["CLOUDBURST_SCHEDULER__HOST"]["value"] in services
        # both see cache.external and so the same node id, hence the same ipc socket
        literal = {k: e["value"] for k, e in env.items() if "value" in e}
        with tempfile.TemporaryDirectory() as tmp:
            f = Path(tmp) / "cloudburst.yml"
            (cm,) = _kind(docs, "ConfigMap")
            f.write_text(cm["data"]["cloudburst.yml"])
            seen = load_config(str(f), env={**literal, "CLOUDBURST_IP": "10.1.2.3"})
        assert seen.cache.enabled and seen.cache.external, c["name"]
        assert node_id(seen) == external_node_id("10.1.2.3", cfg.executor.base_port)
    assert shared[0] == shared[1]
    # every pod mounts the generated ConfigMap at the image's config path
    cms = {d["metadata"]["name"] for d in _kind(docs, "ConfigMap")}
    for w in (d for d in docs if d["kind"] in WORKLOADS):
        vols = {v["name"]: v for v in w["spec"]["template"]["spec"]["volumes"]}
        for c in _main(w):
            (m,) = [m for m in c["volumeMounts"] if m["mountPath"].endswith("cloudburst.yml")]
            assert m["mountPath"] == "/etc/cloudburst/cloudburst.yml"
            assert vols[m["name"]]["configMap"]["name"] in cms


def test_the_autoscalers_kubernetes_names_exist(rendered: Any) -> None:
    # cloudburst.autoscale's Kubernetes actuator patches these by name (prod: its
    # default namespace too).
    overlay, docs = rendered
    auto = Config().autoscale
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("Deployment", auto.k8s_executor_deployment) in names
    assert ("StatefulSet", auto.k8s_storage_statefulset) in names
    if overlay == "prod":
        assert ("Namespace", auto.k8s_namespace) in names


# ---- CURVE keys (docs/security.md, deploy/k8s/base/curve-keys.yaml) ----------------------

#: What Security.from_dir reads (server and client role), as paths in the keys directory.
KEY_LAYOUT = {"cluster.key", "cluster.key_secret", "client.key", "client.key_secret"}


def _keys_parts(w: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(the init container that installs the keys, its Secret volume, the name of its
    emptyDir volume)."""
    vols = {v["name"]: v for v in w["spec"]["template"]["spec"]["volumes"]}
    (secret,) = [v for v in vols.values() if "secret" in v]
    (init,) = [c for c in _init(w) if any(m["name"] == secret["name"] for m in c["volumeMounts"])]
    (empty,) = [m["name"] for m in init["volumeMounts"] if "emptyDir" in vols[m["name"]]]
    return init, secret, empty


def _mount_path(c: dict[str, Any], volume: str) -> str:
    (path,) = [m["mountPath"] for m in c["volumeMounts"] if m["name"] == volume]
    return str(path)


def test_every_pod_has_curve_on_and_the_keys_mounted(rendered: Any) -> None:
    overlay, docs = rendered
    # The keys are never in the manifests (an empty placeholder Secret would clobber
    # or hide the real one): the operator creates cloudburst-keys (docs/deploy.md).
    assert not _kind(docs, "Secret")
    cfg = _config(docs)
    assert cfg.security.curve == "true", overlay
    keys_dir = cfg.security.keys_dir
    assert os.path.isabs(keys_dir)
    workloads = [d for d in docs if d["kind"] in WORKLOADS]
    assert len(workloads) == 5
    for w in workloads:
        name = w["metadata"]["name"]
        pod = w["spec"]["template"]["spec"]
        assert (
            pod["securityContext"]["runAsUser"] == 10001 and pod["securityContext"]["runAsNonRoot"]
        )
        init, secret, empty = _keys_parts(w)
        sv = secret["secret"]
        assert sv["secretName"] == "cloudburst-keys", name
        assert sv.get("optional") is not True, name  # required: no keys, no pod
        paths = {i["path"] for i in sv["items"]}
        assert KEY_LAYOUT <= paths, name
        assert any(p.startswith(security.AUTHORIZED + "/") and p.endswith(".key") for p in paths)
        # the init container copies the Secret's files into the emptyDir at keys_dir
        src, dst = init["command"][-2:]
        assert src == _mount_path(init, secret["name"]), name
        assert dst == keys_dir, name
        assert keys_dir.startswith(_mount_path(init, empty) + "/"), name
        for c in _main(w):
            where = f"{name}/{c['name']}"
            mounts = {m["name"]: m for m in c["volumeMounts"]}
            assert secret["name"] not in mounts, where  # group-readable: never used directly
            m = mounts[empty]
            assert keys_dir.startswith(m["mountPath"] + "/") and m.get("readOnly"), where
            # the probes' clients (anna.admin, CloudburstConnection) read their keys here
            env = {e["name"]: e.get("value") for e in c["env"]}
            assert env[security.KEYS_ENV] == keys_dir, where
            with tempfile.TemporaryDirectory() as tmp:
                f = Path(tmp) / "cloudburst.yml"
                (cm,) = _kind(docs, "ConfigMap")
                f.write_text(cm["data"]["cloudburst.yml"])
                literal = {k: v for k, v in env.items() if v is not None}
                seen = load_config(str(f), env=literal)
            assert seen.security.curve == "true" and seen.security.keys_dir == keys_dir, where


def _secret_volume(root: Path, secret: dict[str, Any], data: dict[str, bytes]) -> Path:
    """What the kubelet mounts for ``secret`` (items, defaultMode, the ..data symlinks
    of its atomic writer): files group-readable, as under fsGroup."""
    stamp = root / "..2026_12_01_00_00_00.000000001"
    for item in secret["secret"]["items"]:
        f = stamp / item["path"]
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data[item["key"]])
        os.chmod(f, secret["secret"].get("defaultMode", 0o644))
    (root / "..data").symlink_to(stamp.name)
    for top in {Path(i["path"]).parts[0] for i in secret["secret"]["items"]}:
        (root / top).symlink_to(Path("..data") / top)
    return root


def _install_keys(w: dict[str, Any], tmp: Path) -> tuple[Path, Path]:
    """Run the workload's keys init container's command here against a Secret made
    from `cloudburst keys generate` output: (the Secret volume, the keys_dir)."""
    init, secret, _ = _keys_parts(w)
    generated = security.generate_keys(tmp / "generated")
    # kubectl create secret generic cloudburst-keys --from-file=./keys: the top-level
    # regular files, named as they are
    data = {p.name: p.read_bytes() for p in generated.iterdir() if p.is_file()}
    assert {i["key"] for i in secret["secret"]["items"]} <= set(data)
    src = _secret_volume(tmp / "secret", secret, data)
    dst = tmp / "emptydir" / "keys"
    dst.parent.mkdir()
    argv = [*init["command"][:-2], str(src), str(dst)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0, out.stderr
    return src, dst


def test_the_keys_init_container_installs_keys_security_accepts(
    rendered: Any, tmp_path: Path
) -> None:
    _, docs = rendered
    for w in (d for d in docs if d["kind"] in WORKLOADS):
        tmp = tmp_path / w["metadata"]["name"]
        src, dst = _install_keys(w, tmp)
        # the Secret volume itself is refused (group-readable), by design
        with pytest.raises(security.SecurityError, match="readable by group"):
            security.Security.from_dir(src, role="server")
        server = security.Security.from_dir(dst, role="server")
        client = security.Security.from_dir(dst, role="client")
        assert client.server_public == server.public
        assert server.policy is not None and server.policy.allowed(client.public)
        for p in [dst, *dst.rglob("*")]:
            mode = stat.S_IMODE(p.stat().st_mode)
            assert mode == (0o700 if p.is_dir() else 0o600), (p, oct(mode))
        # a server on a pod IP starts with them (and would refuse without them)
        sc = {"curve": "true", "keys_dir": str(dst)}
        cfg = load_config(None, env={}, ip="10.0.0.5", security=sc)
        assert security._server_security(cfg) is not None


@pytest.mark.integration
def test_deep_probes_use_the_installed_keys(tmp_path: Path, procs: ProcessGroup) -> None:
    # A CURVE KVS node and scheduler with the keys as a prod pod has them: the readiness
    # probes (cluster pair for the KVS, client pair for the scheduler) pass with the
    # container's environment, and fail with keys of another cluster.
    docs = render("prod")
    (sched,) = [d for d in _kind(docs, "Deployment") if d["metadata"]["name"].endswith("scheduler")]
    _, dst = _install_keys(sched, tmp_path)
    cfg = replace(
        free_port_config(tmp_path, workers=1),
        security=SecurityConfig(curve="true", keys_dir=str(dst)),
    )
    path = write_config(cfg, tmp_path / "c.yml")
    procs.python("kvs", "anna.local", "--config", str(path))
    procs.python("scheduler", "scheduler.server", "--config", str(path))
    base = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDBURST_")}
    (c,) = _main(sched)
    pod_env = {e["name"]: e["value"] for e in c["env"] if "value" in e}
    pod_env[security.KEYS_ENV] = str(dst)  # the pod's keys_dir, here
    assert set(pod_env) == {security.KEYS_ENV, "CLOUDBURST_KVS__HOST"}
    del pod_env["CLOUDBURST_KVS__HOST"]  # a Service name: no DNS for it here
    other = security.generate_keys(tmp_path / "other")

    def probe(role: str, keys: Path) -> subprocess.CompletedProcess[str]:
        env = {**base, **pod_env, security.KEYS_ENV: str(keys)}
        argv = [sys.executable, "-m", "cloudburst.health", role, "--deep", "--config", str(path)]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)

    wait_until(lambda: probe("storage", dst).returncode == 0, 90, "storage ready")
    wait_until(lambda: probe("scheduler", dst).returncode == 0, 90, "scheduler ready")
    assert probe("routing", dst).returncode == 0
    for role in ("routing", "scheduler"):
        out = probe(role, other)
        assert out.returncode == 1 and "not serving" in out.stdout, (role, out.stdout)
