"""deploy/k8s: the autoscaler's ServiceAccount, Role and RoleBinding allow exactly what
the Kubernetes actuator does (its requests, recorded against the fake API server of
tests/autoscale, are checked against the rendered Role), and executor pods drain
(``python -m executor.drain``) in a preStop hook within their grace period."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudburst.shared.config import Config
from executor import drain
from tests.autoscale.test_kubernetes_actuator import NS, FakeApi

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())


def _render(overlay: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to render deploy/k8s (kubectl kustomize)"
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module", params=OVERLAYS)
def docs(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return _render(request.param)


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
    return {"GET": "get", "PATCH": "patch"}[method], group, resource, rest[1]


@pytest.fixture(scope="module")
def requests() -> set[tuple[str, str, str, str]]:
    """What the actuator asks of the API server: scale executors up and down, storage
    up and down (the pod that goes is read first, for its address)."""
    from kubernetes import client

    from cloudburst.autoscale.actuators import KubernetesActuator

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
    finally:
        api.server.shutdown()
        api.server.server_close()
        api.thread.join(timeout=5)
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
    # and not, say, deleting a pod or patching the Deployment itself
    assert not _allowed(role, "delete", "", "pods", "cloudburst-storage-0")
    assert not _allowed(role, "patch", "apps", "deployments", auto.k8s_executor_deployment)
    assert not _allowed(role, "patch", "apps", "deployments/scale", "cloudburst-scheduler")


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
