"""deploy/k8s: the autoscaler's ServiceAccount, Role and RoleBinding allow exactly what
the Kubernetes actuator does (its requests, recorded against the fake API server of
tests/autoscale, are checked against the rendered Role), and executor pods drain
(``python -m executor.drain``) in a preStop hook within their grace period."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudburst.shared.config import Config
from executor import drain
from tests.autoscale.test_kubernetes_actuator import NS, FakeApi
from tests.deploy.k8s import OVERLAYS, ROOT, render


@pytest.fixture(scope="module", params=OVERLAYS)
def docs(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(request.param)


def _one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def _allowed(role: dict[str, Any], verb: str, group: str, resource: str, name: str) -> bool:
    for rule in role["rules"]:
        if (
            verb in rule["verbs"]
            and group in rule["apiGroups"]
            and resource in rule["resources"]
            and (not rule.get("resourceNames") or name in rule["resourceNames"])
        ):
            return True
    return False


def _request(method: str, path: str) -> tuple[str, str, str, str]:
    """(verb, API group, resource[/subresource], name) of a namespaced request."""
    parts = path.split("?")[0].strip("/").split("/")
    group = "" if parts[0] == "api" else parts[1]
    rest = parts[parts.index("namespaces") + 2 :]
    resource = rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")
    if len(rest) == 1:  # a collection: list
        assert method == "GET", path
        return "list", group, resource, ""
    return {"GET": "get", "PATCH": "patch"}[method], group, resource, rest[1]


@pytest.fixture(scope="module")
def requests() -> set[tuple[str, str, str, str]]:
    """What the actuator asks of the API server: scale executors up and down, storage
    up and down (the pod that goes is read first, for its address); and what the
    autoscaler's inputs take: list the pods (cloudburst.autoscale.discovery)."""
    from kubernetes import client

    from cloudburst.autoscale.actuators import KubernetesActuator
    from cloudburst.autoscale.server import make_scrape

    auto = Config().autoscale
    api = FakeApi()
    api.replicas = {
        ("deployments", auto.k8s_executor_deployment): 2,
        ("statefulsets", auto.k8s_storage_statefulset): 3,
    }
    api.thread.start()
    try:
        act = KubernetesActuator(
            NS,
            auto.k8s_executor_deployment,
            auto.k8s_storage_statefulset,
            api_client=client.ApiClient(client.Configuration(host=api.url)),
            depart=lambda ip: None,
        )
        act.add_executor_node()
        assert act.remove_executor_node("any")
        act.add_storage_node()
        assert act.remove_storage_node()
        assert make_scrape(Config(), act)() == ({}, "", {})  # (no pods in the fake)
    finally:
        api.stop()
    return {_request(m, p) for m, p, _ in api.log}


def test_the_role_allows_what_the_actuator_does_and_nothing_more(
    docs: list[dict[str, Any]], requests: set[tuple[str, str, str, str]]
) -> None:
    auto = Config().autoscale
    sa = _one(docs, "ServiceAccount", "cloudburst-autoscaler")
    role = _one(docs, "Role", "cloudburst-autoscaler")
    binding = _one(docs, "RoleBinding", "cloudburst-autoscaler")
    ns = sa["metadata"]["namespace"]
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == ns
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "cloudburst-autoscaler",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "cloudburst-autoscaler", "namespace": ns}
    ]
    # the workloads it scales are in the same namespace, under the configured names
    _one(docs, "Deployment", auto.k8s_executor_deployment)
    _one(docs, "StatefulSet", auto.k8s_storage_statefulset)
    # only scale subresources are written; no wildcard anywhere
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
        if set(rule["verbs"]) - {"get", "list", "watch"}:
            assert all(r.endswith("/scale") for r in rule["resources"]), rule
            assert rule.get("resourceNames"), rule
    assert {r[2] for r in requests} == {"deployments/scale", "statefulsets/scale", "pods"}
    for verb, group, resource, name in sorted(requests):
        assert _allowed(role, verb, group, resource, name), (verb, group, resource, name)
    assert ("list", "", "pods", "") in requests
    # and not, say, deleting a pod or patching the Deployment itself
    assert not _allowed(role, "delete", "", "pods", "cloudburst-storage-0")
    assert not _allowed(role, "patch", "apps", "deployments", auto.k8s_executor_deployment)
    assert not _allowed(role, "patch", "apps", "deployments/scale", "cloudburst-scheduler")


def _bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    for suffix, n in units.items():
        if quantity.endswith(suffix):
            return int(quantity[: -len(suffix)]) * n
    return int(quantity)


def test_the_autoscaler_finds_the_pods_it_scrapes_and_their_capacity(
    docs: list[dict[str, Any]], tmp_path: Path
) -> None:
    # cloudburst.autoscale.discovery lists pods by its selector and reads their role
    # from the component label: every role it scrapes is a pod template so labelled
    from cloudburst.autoscale import discovery

    key, value = discovery.LABEL_SELECTOR.split("=")
    components = set()
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet"):
            labels = d["spec"]["template"]["metadata"]["labels"]
            if labels.get(key) == value:
                components.add(labels.get(discovery.COMPONENT))
    assert set(discovery.ROLES) <= components
    # and the NetworkPolicy lets the autoscaler's pod reach their metrics ports
    dep, _ = _autoscaler(docs)
    own = dep["spec"]["template"]["metadata"]["labels"]
    (policy,) = [d for d in docs if d["kind"] == "NetworkPolicy"]
    assert any(
        "podSelector" in src and src["podSelector"]["matchLabels"].items() <= own.items()
        for rule in policy["spec"]["ingress"]
        if "ports" not in rule  # every port
        for src in rule["from"]
    )
    # its storage capacity is a storage pod's memory limit, and the ports it scrapes
    # are the fixed ones (metrics.base_port set: not random)
    _, c = _autoscaler(docs)
    cfg = _pod_config(docs, c, tmp_path, **{"status.podIP": "10.1.2.3", "metadata.namespace": NS})
    (storage,) = _one(docs, "StatefulSet", cfg.autoscale.k8s_storage_statefulset)["spec"][
        "template"
    ]["spec"]["containers"]
    assert cfg.autoscale.kvs_capacity_bytes == _bytes(storage["resources"]["limits"]["memory"])
    assert cfg.metrics.base_port


def test_executor_pods_drain_in_a_prestop_hook_within_their_grace(
    docs: list[dict[str, Any]],
) -> None:
    (ex,) = [d for d in docs if d["kind"] == "Deployment" and "executor" in d["metadata"]["name"]]
    pod = ex["spec"]["template"]["spec"]
    (c,) = [c for c in pod["containers"] if c["name"] == "executor"]
    cmd = c["lifecycle"]["preStop"]["exec"]["command"]
    assert cmd[:3] == ["python", "-m", "executor.drain"]
    timeout = float(cmd[cmd.index("--timeout") + 1])
    cfg = Config()
    # the node's own drain (retire_drain_s, then its workers' calls) fits in the hook,
    # and the hook and the stop after it in the grace period
    assert timeout >= cfg.executor.retire_drain_s + 30
    assert pod["terminationGracePeriodSeconds"] >= timeout + 5
    assert pod["shareProcessNamespace"] is True  # (the hook sees the node's process)


NODE_LIKE = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGUSR1, lambda *a: sys.exit(0))\n"
    "print('up', flush=True)\n"
    "time.sleep(30)\n"
)


def test_drain_signals_the_node_processes_and_waits_for_them() -> None:
    # a stand-in whose command line says "-m executor.node" (as a real node's does)
    proc = subprocess.Popen(
        [sys.executable, "-c", NODE_LIKE, "-m", "executor.node"], stdout=subprocess.PIPE
    )
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
        assert proc.pid in drain.node_pids() and other.pid not in drain.node_pids()
        began = time.monotonic()
        # (only our stand-in: other node processes on this machine are not ours)
        assert drain.drain(timeout=20.0, pids=[proc.pid]) == []
        assert proc.wait(timeout=5) == 0  # it got SIGUSR1 (its drain), not a kill
        assert time.monotonic() - began < 20.0
        assert other.poll() is None  # anything else is left alone
    finally:
        for p in (proc, other):
            if p.poll() is None:
                p.kill()
            p.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()


def test_node_pids_reads_command_lines(tmp_path: Path) -> None:
    for pid, argv in {
        "101": [b"python", b"-m", b"executor.node", b"--config", b"c.yml"],
        "102": [b"python", b"-m", b"executor.worker", b"--index", b"0"],
        "103": [b"sh", b"-c", b"echo executor.node"],
        "self": [b"python", b"-m", b"executor.node"],  # not a pid
    }.items():
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "cmdline").write_bytes(b"\0".join(argv) + b"\0")
    (tmp_path / "104").mkdir()  # gone meanwhile: no cmdline
    assert drain.node_pids(tmp_path) == [101]


# ---- the autoscaler's Deployment (deploy/k8s/base/autoscaler.yaml) -------------------


def _autoscaler(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the autoscaler Deployment, its container)."""
    dep = _one(docs, "Deployment", "cloudburst-autoscaler")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return dep, c


def _pod_config(docs: list[dict[str, Any]], c: dict[str, Any], tmp: Path, **downward: str) -> Any:
    """The config the container sees: the ConfigMap's file, its literal environment and
    ``downward`` (values the kubelet fills in: fieldRef name -> value)."""
    from cloudburst.shared.config import load_config

    (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
    f = tmp / "cloudburst.yml"
    f.write_text(cm["data"]["cloudburst.yml"])
    env = {}
    for e in c["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            env[e["name"]] = downward[e["valueFrom"]["fieldRef"]["fieldPath"]]
    return load_config(str(f), env=env)


def test_the_autoscaler_runs_once_with_the_bound_service_account(
    docs: list[dict[str, Any]],
) -> None:
    dep, c = _autoscaler(docs)
    spec = dep["spec"]
    # one autoscaler, never two at once (Recreate: the old pod is gone before the new)
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    binding = _one(docs, "RoleBinding", "cloudburst-autoscaler")
    (subject,) = binding["subjects"]
    assert pod["serviceAccountName"] == subject["name"] == "cloudburst-autoscaler"
    assert subject["namespace"] == dep["metadata"]["namespace"]
    assert pod.get("automountServiceAccountToken", True) is True  # the client needs it
    assert c["command"] == ["cloudburst-entrypoint", "python", "-m", "cloudburst.autoscale.server"]
    # non-root like the others, and nothing written outside /data
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 10001
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    for probe, deep in (("readinessProbe", True), ("livenessProbe", False)):
        cmd = c[probe]["exec"]["command"]
        assert cmd[:4] == ["python", "-m", "cloudburst.health", "autoscaler"], cmd
        assert ("--deep" in cmd) is deep
        assert c[probe]["timeoutSeconds"] >= 5
    for part in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][part])
    # the KVS hand-off of a storage scale-down (30 s) fits in its grace period
    assert pod["terminationGracePeriodSeconds"] >= 30 + 5


def test_the_autoscaler_sees_the_kubernetes_actuator_and_its_keys(
    docs: list[dict[str, Any]], tmp_path: Path
) -> None:
    from cloudburst import health

    dep, c = _autoscaler(docs)
    ns = dep["metadata"]["namespace"]
    cfg = _pod_config(docs, c, tmp_path, **{"status.podIP": "10.1.2.3", "metadata.namespace": ns})
    auto = cfg.autoscale
    assert auto.actuator == "kubernetes"
    assert auto.k8s_namespace == ns
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("Deployment", auto.k8s_executor_deployment) in names
    assert ("StatefulSet", auto.k8s_storage_statefulset) in names
    services = {d["metadata"]["name"] for d in docs if d["kind"] == "Service"}
    assert cfg.scheduler.host in services and cfg.kvs.host in services
    assert cfg.ip == "10.1.2.3"
    # the workloads start inside the bounds it keeps them in; storage never below the
    # KVS's replication
    executors = _one(docs, "Deployment", auto.k8s_executor_deployment)["spec"]["replicas"]
    storage = _one(docs, "StatefulSet", auto.k8s_storage_statefulset)["spec"]["replicas"]
    assert auto.min_executor_nodes <= executors <= auto.max_executor_nodes
    assert auto.min_storage_nodes <= storage <= auto.max_storage_nodes
    assert auto.min_storage_nodes >= cfg.kvs.replication_global
    # CURVE keys: the init container's emptyDir, read-only, where the config says
    pod = dep["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["command"][-1] == cfg.security.keys_dir
    vols = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    (keys,) = [m for p, m in mounts.items() if cfg.security.keys_dir.startswith(p + "/")]
    assert keys["readOnly"] is True and "emptyDir" in vols[keys["name"]]
    assert vols["keys-secret"]["secret"]["secretName"] == "cloudburst-keys"
    assert cfg.security.curve == "true"
    # the config mounted like the other roles', run_dir (the heartbeat) writable
    assert "configMap" in vols[mounts["/etc/cloudburst/cloudburst.yml"]["name"]]
    assert health.heartbeat_path(cfg).startswith(cfg.run_dir + "/")
    assert "emptyDir" in vols[mounts[cfg.run_dir]["name"]]


def test_the_pods_config_makes_a_kubernetes_actuator_that_patches_the_executors(
    docs: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # make_actuator (what the server runs) with the pod's config: out of a cluster the
    # client reads a kubeconfig, here one that points at the fake API server
    from cloudburst.autoscale.server import make_actuator

    dep, c = _autoscaler(docs)
    cfg = _pod_config(docs, c, tmp_path, **{"status.podIP": "10.1.2.3", "metadata.namespace": NS})
    auto = cfg.autoscale
    api = FakeApi()
    api.replicas = {
        ("deployments", auto.k8s_executor_deployment): 2,
        ("statefulsets", auto.k8s_storage_statefulset): 3,
    }
    api.thread.start()
    try:
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": api.url}}],
            "users": [{"name": "fake", "user": {}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
            "current-context": "fake",
        }
        (tmp_path / "kubeconfig").write_text(yaml.safe_dump(kubeconfig))
        # ($KUBECONFIG is read when the client is imported: set where it keeps it)
        from kubernetes.config import kube_config

        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # not in a pod
        monkeypatch.setattr(
            kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(tmp_path / "kubeconfig")
        )
        act = make_actuator(cfg)
        act.add_executor_node()
        # a storage scale-down's hand-off asks routing (by its Service name) with
        # answers to this pod's address (not 0.0.0.0: another pod cannot reply there)
        import anna.admin

        asked: list[tuple[Any, ...]] = []

        def fake_depart(routing: str, node: str, own: Any, ip: str, timeout: float) -> Any:
            asked.append((routing, node, ip))
            return anna.admin.DepartOutcome("departed", 0.0)

        monkeypatch.setattr(anna.admin, "depart_and_wait", fake_depart)
        assert act.remove_storage_node()
    finally:
        api.stop()
    assert api.replicas[("deployments", auto.k8s_executor_deployment)] == 3
    assert api.replicas[("statefulsets", auto.k8s_storage_statefulset)] == 2
    patches = [p for m, p, _ in api.log if m == "PATCH"]
    assert patches == [
        f"/apis/apps/v1/namespaces/{NS}/deployments/{auto.k8s_executor_deployment}/scale",
        f"/apis/apps/v1/namespaces/{NS}/statefulsets/{auto.k8s_storage_statefulset}/scale",
    ]
    # the pod the StatefulSet removes (its highest ordinal: 10.0.0.12 in the fake API)
    assert asked == [
        (
            f"{cfg.kvs.host}:{cfg.kvs.routing_port}",
            f"10.0.0.12:{cfg.kvs.shard_base_port}",
            "10.1.2.3",
        )
    ]


def test_health_autoscaler_reads_the_heartbeat(tmp_path: Path) -> None:
    from cloudburst import health
    from cloudburst.autoscale.server import beat
    from cloudburst.local import free_port_config

    cfg = free_port_config(tmp_path, workers=1)
    assert "no heartbeat" in (health.check("autoscaler", cfg, timeout=0.5) or "")
    beat(cfg)  # what the server does after every evaluation
    assert health.check("autoscaler", cfg, timeout=0.5) is None
    limit = 3 * cfg.autoscale.period_s + health.AUTOSCALER_GRACE_S
    path = health.heartbeat_path(cfg)
    old = time.time() - limit - 1
    os.utime(path, (old, old))
    assert "old" in (health.check("autoscaler", cfg, timeout=0.5) or "")
    beat(cfg)
    assert health.check("autoscaler", cfg, timeout=0.5) is None
    # --deep: the scheduler it reads must answer too (none runs here)
    deep = health.check("autoscaler", cfg, timeout=0.5, deep=True)
    assert deep is not None and "scheduler" in deep
    # the command line agrees
    argv = [sys.executable, "-m", "cloudburst.health", "autoscaler", "--config"]
    from cloudburst.local import write_config

    path_cfg = write_config(cfg, tmp_path / "c.yml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDBURST_")}
    out = subprocess.run(
        [*argv, str(path_cfg)], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "autoscaler: serving" in out.stdout


def test_the_image_wheelhouse_has_the_autoscale_extra() -> None:
    # scripts/build-image.sh's dependency list (its inline Python, run as it runs it)
    script = (ROOT / "scripts" / "build-image.sh").read_text()
    start = script.index("<<'PY'\n") + len("<<'PY'\n")
    code = script[start : script.index("\nPY\n", start)]
    out = subprocess.run(
        [sys.executable, "-", str(ROOT / "pyproject.toml")],
        input=code,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    reqs = out.stdout.split("\n")
    assert any(r.startswith("kubernetes") for r in reqs), reqs
    assert any(r.startswith("pyzmq") for r in reqs), reqs


@pytest.mark.integration
def test_the_autoscaler_pod_command_runs_with_its_keys_and_passes_its_probes(
    tmp_path: Path, procs: Any
) -> None:
    # The prod pod's command (python -m cloudburst.autoscale.server) with its keys and
    # environment against a CURVE KVS node and scheduler, its Kubernetes actuator
    # pointed at the fake API server: it runs, beats, and both probes pass.
    from dataclasses import replace

    from cloudburst.local import free_port_config, write_config
    from cloudburst.shared import security
    from cloudburst.shared.config import SecurityConfig
    from cloudburst.shared.processes import wait_until
    from tests.deploy.test_k8s_manifests import _install_keys

    docs = render("prod")
    dep, c = _autoscaler(docs)
    _, keys = _install_keys(dep, tmp_path)
    cfg = replace(
        free_port_config(tmp_path, workers=1),
        security=SecurityConfig(curve="true", keys_dir=str(keys)),
    )
    path = write_config(cfg, tmp_path / "c.yml")
    api = FakeApi()
    auto = Config().autoscale
    api.replicas = {
        ("deployments", auto.k8s_executor_deployment): 2,
        ("statefulsets", auto.k8s_storage_statefulset): 3,
    }
    api.thread.start()
    try:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "f", "cluster": {"server": api.url}}],
                    "users": [{"name": "f", "user": {}}],
                    "contexts": [{"name": "f", "context": {"cluster": "f", "user": "f"}}],
                    "current-context": "f",
                }
            )
        )
        base = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDBURST_")}
        # the pod's literal environment, less the Service names (no DNS for them here:
        # the config's loopback addresses stand in) and with the pod's namespace
        pod_env = {e["name"]: e["value"] for e in c["env"] if "value" in e}
        for name in ("CLOUDBURST_KVS__HOST", "CLOUDBURST_SCHEDULER__HOST"):
            del pod_env[name]
        pod_env[security.KEYS_ENV] = str(keys)
        pod_env["CLOUDBURST_AUTOSCALE__K8S_NAMESPACE"] = NS
        pod_env["CLOUDBURST_AUTOSCALE__PERIOD_S"] = "1"
        env = {
            **base,
            **pod_env,
            "CLOUDBURST_CONFIG": str(path),
            "KUBECONFIG": str(kubeconfig),
            "KUBERNETES_SERVICE_HOST": "",  # not in a pod: the kubeconfig
        }
        procs.python("kvs", "anna.local", "--config", str(path))
        procs.python("scheduler", "scheduler.server", "--config", str(path))
        argv = c["command"][1:]  # (without the image's entrypoint script)
        assert argv == ["python", "-m", "cloudburst.autoscale.server"]
        scaler = procs.python("autoscaler", argv[2], env=env)

        def probe(deep: bool) -> subprocess.CompletedProcess[str]:
            cmd = [sys.executable, "-m", "cloudburst.health", "autoscaler"]
            return subprocess.run(
                cmd + (["--deep"] if deep else []),
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )

        try:
            wait_until(lambda: probe(False).returncode == 0, 90, "autoscaler heartbeat")
        except Exception:
            raise AssertionError(probe(False).stdout + scaler.log_tail(50)) from None
        wait_until(lambda: probe(True).returncode == 0, 90, "autoscaler ready")
        assert scaler.alive(), scaler.log_tail()
        assert "actuator kubernetes" in scaler.log_tail(200)
        assert "no status from the scheduler" not in scaler.log_tail(200)
        # its decisions' inputs on its /metrics port
        from cloudburst.shared import metrics

        def served() -> bool:
            recs = [r for r in metrics.endpoints(cfg.run_dir) if r["role"] == "autoscaler"]
            if not recs:
                return False
            with urllib.request.urlopen(recs[-1]["url"], timeout=5) as resp:
                return "cloudburst_autoscaler_input" in resp.read().decode()

        wait_until(served, 60, "the autoscaler's metrics")
    finally:
        procs.stop_all()
        api.stop()
