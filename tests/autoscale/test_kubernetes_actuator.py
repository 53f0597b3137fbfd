"""The Kubernetes actuator against a small fake API server (http.server on loopback)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from cloudburst.autoscale.actuators import KubernetesActuator

NS = "cb"


class FakeApi:
    """Deployments/StatefulSets ``/scale`` (GET, PATCH) and pods (GET; list: ``pods``,
    V1Pod dicts, filtered by an equality ``labelSelector``)."""

    def __init__(self) -> None:
        self.replicas = {("deployments", "exec"): 2, ("statefulsets", "kvs"): 3}
        self.pods: list[dict[str, Any]] = []
        self.log: list[tuple[str, str, Any]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _scale_target(self) -> tuple[str, str] | None:
                parts = self.path.split("?")[0].strip("/").split("/")
                # apis/apps/v1/namespaces/<ns>/<kind>/<name>/scale
                if len(parts) == 8 and parts[:3] == ["apis", "apps", "v1"] and parts[7] == "scale":
                    assert parts[4] == NS
                    return parts[5], parts[6]
                return None

            def _scale(self, key: tuple[str, str]) -> dict[str, Any]:
                n = api.replicas[key]
                return {
                    "apiVersion": "autoscaling/v1",
                    "kind": "Scale",
                    "metadata": {"name": key[1], "namespace": NS},
                    "spec": {"replicas": n},
                    "status": {"replicas": n},
                }

            def do_GET(self) -> None:  # noqa: N802
                api.log.append(("GET", self.path, None))
                key = self._scale_target()
                if key in api.replicas:
                    return self._reply(200, self._scale(key))  # type: ignore[arg-type]
                path, _, query = self.path.partition("?")
                parts = path.strip("/").split("/")
                if parts == ["api", "v1", "namespaces", NS, "pods"]:
                    want = dict(
                        kv.split("=", 1)
                        for kv in parse_qs(query).get("labelSelector", [""])[0].split(",")
                        if kv
                    )
                    items = [
                        p
                        for p in api.pods
                        if want.items() <= p["metadata"].get("labels", {}).items()
                    ]
                    return self._reply(
                        200,
                        {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items},
                    )
                if parts[:4] == ["api", "v1", "namespaces", NS] and parts[4] == "pods":
                    ordinal = int(parts[5].rsplit("-", 1)[1])
                    return self._reply(
                        200,
                        {
                            "apiVersion": "v1",
                            "kind": "Pod",
                            "metadata": {"name": parts[5], "namespace": NS},
                            "status": {"podIP": f"10.0.0.{10 + ordinal}"},
                        },
                    )
                self._reply(404, {"kind": "Status", "code": 404})

            def do_PATCH(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                api.log.append(("PATCH", self.path, body))
                key = self._scale_target()
                if key not in api.replicas:
                    return self._reply(404, {"kind": "Status", "code": 404})
                api.replicas[key] = int(body["spec"]["replicas"])  # type: ignore[index]
                self._reply(200, self._scale(key))  # type: ignore[arg-type]

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def actuator(fake: FakeApi, departed: list[str]) -> KubernetesActuator:
    from kubernetes import client

    conf = client.Configuration(host=fake.url)
    return KubernetesActuator(
        NS, "exec", "kvs", api_client=client.ApiClient(conf), depart=departed.append
    )


def test_executor_deployment_replicas_are_patched(fake: FakeApi) -> None:
    act = actuator(fake, [])
    assert act.replicas("executor") == 2
    act.add_executor_node()
    assert fake.replicas[("deployments", "exec")] == 3
    assert act.remove_executor_node("any") is True
    assert fake.replicas[("deployments", "exec")] == 2
    patches = [p for p in fake.log if p[0] == "PATCH"]
    assert [p[2] for p in patches] == [{"spec": {"replicas": 3}}, {"spec": {"replicas": 2}}]
    assert all("/deployments/exec/scale" in p[1] for p in patches)


def test_storage_scale_down_departs_the_highest_ordinal_first(fake: FakeApi) -> None:
    departed: list[str] = []
    act = actuator(fake, departed)
    assert act.add_storage_node() == "kvs-3"
    assert fake.replicas[("statefulsets", "kvs")] == 4
    fake.log.clear()
    assert act.remove_storage_node() is True
    assert departed == ["10.0.0.13"]  # kvs-3's address, before the patch
    assert fake.replicas[("statefulsets", "kvs")] == 3
    methods = [(m, p.split("?")[0].rsplit("/", 2)[-2:]) for m, p, _ in fake.log]
    assert methods[-1] == ("PATCH", ["kvs", "scale"])
    assert ("GET", ["pods", "kvs-3"]) in methods


def test_never_below_one_replica(fake: FakeApi) -> None:
    act = actuator(fake, [])
    fake.replicas[("deployments", "exec")] = 1
    assert act.remove_executor_node("x") is False
    assert not [p for p in fake.log if p[0] == "PATCH"]
