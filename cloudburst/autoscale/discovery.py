"""Where the autoscaler reads its ``/metrics`` inputs on Kubernetes.

Locally (:func:`cloudburst.autoscale.server.scrape_local`) the processes record their
metrics URLs in ``run_dir``; a pod does not see those files. Here the autoscaler lists
the Cloudburst pods of its namespace (label ``app.kubernetes.io/name=cloudburst``), and
for every running, ready one (a pod being deleted is not: its node is leaving) scrapes
the ports its role serves (the fixed port scheme of
:func:`cloudburst.shared.metrics.port_for`, ``metrics.base_port`` from the shared
ConfigMap):

- ``component: storage``: its shards (``base + 10 + i``, ``i < kvs.shards``), keyed by
  the pod IP (a storage node's id is ``<pod IP>:<shard_base_port>``);
- ``component: executor``: its workers (``base + 50 + i``; the pool grows, with dense
  indices, up to ``executor.max_workers``, 16 when that is 0), keyed ``<pod>/worker<i>``;
- ``component: scheduler``: ``base + 1``.

Routing, caches and node supervisors serve no policy input and are not scraped.
:func:`targets` (pods -> URLs) is pure; :class:`KubernetesScraper` lists the pods and
fetches them; :func:`collect` turns fetched texts into what ``scrape_local`` returns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from cloudburst.shared.config import Config
from cloudburst.shared.metrics import port_for

log = logging.getLogger(__name__)

LABEL_SELECTOR = "app.kubernetes.io/name=cloudburst"
COMPONENT = "app.kubernetes.io/component"
#: pod component -> the metrics role whose ports it serves
ROLES = {"storage": "shard", "executor": "worker", "scheduler": "scheduler"}
AUTO_MAX_WORKERS = 16  # executor.max_workers 0: at least max(16, 4 x cores)


@dataclass(frozen=True)
class Pod:
    name: str
    ip: str
    component: str
    ready: bool  # phase Running, condition Ready, not being deleted


@dataclass(frozen=True)
class Target:
    role: str  # shard | worker | scheduler
    key: str  # shards: the pod IP; workers: "<pod>/worker<i>"; scheduler: the pod
    url: str


def pod_from(obj: Any) -> Pod:
    """A ``kubernetes.client.V1Pod`` as a :class:`Pod`."""
    meta, status = obj.metadata, obj.status
    labels = (meta.labels or {}) if meta is not None else {}
    conditions = (status.conditions or []) if status is not None else []
    ready = (
        status is not None
        and getattr(meta, "deletion_timestamp", None) is None  # not going away
        and status.phase == "Running"
        and any(c.type == "Ready" and c.status == "True" for c in conditions)
    )
    return Pod(
        name=meta.name if meta is not None else "",
        ip=(status.pod_ip or "") if status is not None else "",
        component=labels.get(COMPONENT, ""),
        ready=ready,
    )


def targets(pods: Iterable[Pod], cfg: Config) -> list[Target]:
    """The ``/metrics`` URLs of the running, ready pods' policy inputs (none when
    ``metrics.base_port`` is 0: random ports cannot be found from outside)."""
    if not cfg.metrics.base_port:
        return []
    out = []
    for pod in sorted(pods, key=lambda p: p.name):
        role = ROLES.get(pod.component)
        if role is None or not pod.ready or not pod.ip:
            continue
        host = f"[{pod.ip}]" if ":" in pod.ip else pod.ip

        def url(port: int, host: str = host) -> str:
            return f"http://{host}:{port}/metrics"

        if role == "shard":
            for i in range(max(1, cfg.kvs.shards)):
                out.append(Target(role, pod.ip, url(port_for(cfg, "shard", i))))
        elif role == "worker":
            n = cfg.executor.workers
            if cfg.executor.elastic:
                n = max(n, cfg.executor.max_workers or AUTO_MAX_WORKERS)
            for i in range(n):
                out.append(Target(role, f"{pod.name}/worker{i}", url(port_for(cfg, "worker", i))))
        else:
            out.append(Target(role, pod.name, url(port_for(cfg, "scheduler"))))
    return out


def collect(
    found: Iterable[tuple[str, str, str]],
) -> tuple[dict[str, str], str, dict[str, str]]:
    """``(role, key, /metrics text)`` triples as ``scrape_local`` returns them: shard
    texts by host (a host's shards concatenated), the scheduler's text (the last one
    read, if several), worker texts by worker."""
    shards: dict[str, str] = {}
    scheduler = ""
    workers: dict[str, str] = {}
    for role, key, text in found:
        if role == "scheduler":
            scheduler = text
        elif role == "worker":
            workers[key] = text
        elif role == "shard":
            shards[key] = shards.get(key, "") + text
    return shards, scheduler, workers


def fetch(url: str, timeout: float = 1.0) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return str(resp.read().decode())


def scrape(
    found: list[Target], get: Callable[[str], str] = fetch
) -> tuple[dict[str, str], str, dict[str, str]]:
    """Fetch every target; one that does not answer is left out (a worker index not
    started, a pod going away). A host that timed out is not asked again this round."""
    texts = []
    slow: set[str] = set()
    for t in found:
        host = t.url.split("/")[2].rsplit(":", 1)[0]
        if host in slow:
            continue
        try:
            texts.append((t.role, t.key, get(t.url)))
        except TimeoutError:
            slow.add(host)
        except OSError as exc:
            if isinstance(getattr(exc, "reason", None), TimeoutError):
                slow.add(host)
    return collect(texts)


class KubernetesScraper:
    """``()`` -> the inputs ``scrape_local`` returns, from the pods of ``namespace``
    (``core``: a ``kubernetes.client.CoreV1Api``)."""

    def __init__(
        self, core: Any, namespace: str, cfg: Config, get: Callable[[str], str] = fetch
    ) -> None:
        self.core = core
        self.namespace = namespace
        self.cfg = cfg
        self.get = get

    def pods(self) -> list[Pod]:
        found = self.core.list_namespaced_pod(
            self.namespace, label_selector=LABEL_SELECTOR, _request_timeout=10
        )
        return [pod_from(p) for p in found.items or []]

    def __call__(self) -> tuple[dict[str, str], str, dict[str, str]]:
        try:
            pods = self.pods()
        except Exception as exc:  # the API server away, or the Role without list
            # (no inputs from /metrics this round: executor scaling still acts)
            log.warning("cannot list the pods of %s: %s", self.namespace, exc)
            return {}, "", {}
        return scrape(targets(pods, self.cfg), self.get)
