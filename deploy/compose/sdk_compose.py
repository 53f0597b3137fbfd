"""Run deploy/compose/docker-compose.yml through the docker Python SDK (no compose
binary needed): ``python deploy/compose/sdk_compose.py up|down|ps [-p PROJECT]``.

Understands the subset of the compose format the file uses: ``${VAR:-default}``
interpolation, ``<<`` merge keys, and per service ``image``, ``command``,
``environment``, ``volumes`` (named volumes and ``./file:/path[:ro]`` binds),
``networks`` with ``ipv4_address``, ``ports`` (``[ip:]host:container``), ``restart``,
``stop_grace_period``, ``shm_size`` and ``healthcheck``. Every object it makes is
named ``<project>-<name>`` and labelled ``com.docker.compose.project=<project>``, so
``down`` removes exactly what ``up`` made (containers, network, volumes), also after
a failed ``up``.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import docker
import yaml

HERE = Path(__file__).resolve().parent
COMPOSE_FILE = HERE / "docker-compose.yml"
LABEL = "com.docker.compose.project"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """``${VAR}`` and ``${VAR:-default}`` as compose does (empty counts as unset)."""
    return _VAR.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), text)


def load(path: Path = COMPOSE_FILE, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    doc = yaml.safe_load(interpolate(path.read_text(), os.environ if env is None else env))
    return {k: v for k, v in doc.items() if not k.startswith("x-")}


def _seconds(text: str | int | float) -> float:
    """'5s', '1m30s', '500ms' or a number of seconds."""
    if isinstance(text, int | float):
        return float(text)
    total = 0.0
    for num, unit in re.findall(r"([\d.]+)(ms|s|m|h)?", text):
        total += float(num) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "": 1}[unit]
    return total


def _bytes(text: str | int) -> int:
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"(\d+)([kmg]?)b?", text.lower())
    if not m:
        raise ValueError(f"bad size {text!r}")
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[m.group(2)]


class Project:
    """The objects of one compose project (``name``) on the daemon ``client``."""

    def __init__(
        self,
        name: str,
        spec: dict[str, Any],
        client: docker.DockerClient | None = None,
        base_dir: Path = HERE,
    ) -> None:
        self.name = name
        self.spec = spec
        self.client = client or docker.from_env(timeout=120)
        self.base_dir = base_dir
        self.labels = {LABEL: name}

    def obj(self, name: str) -> str:
        return f"{self.name}-{name}"

    def container_name(self, service: str) -> str:
        return self.obj(service)

    def up(self) -> None:
        api = self.client.api
        for net, conf in (self.spec.get("networks") or {}).items():
            pools = [
                docker.types.IPAMPool(subnet=c["subnet"])
                for c in ((conf or {}).get("ipam") or {}).get("config", [])
            ]
            ipam = docker.types.IPAMConfig(pool_configs=pools) if pools else None
            api.create_network(self.obj(net), driver="bridge", ipam=ipam, labels=self.labels)
        for vol in self.spec.get("volumes") or {}:
            api.create_volume(self.obj(vol), labels=self.labels)
        for service in self.spec["services"]:
            self.create(service)
            api.start(self.container_name(service))

    def create(self, service: str, address: str | None = None) -> None:
        """Create ``service``'s container; ``address``: on another address than the
        file's (as a rescheduled pod: same volumes, new IP, ``CLOUDBURST_IP`` too)."""
        api = self.client.api
        svc = self.spec["services"][service]
        if address:
            (net,) = svc["networks"]
            env = dict(svc.get("environment") or {})
            env["CLOUDBURST_IP"] = address
            svc = {**svc, "environment": env, "networks": {net: {"ipv4_address": address}}}
        binds: list[str] = []
        for v in svc.get("volumes") or []:
            src, dst, *mode = v.split(":")
            if src.startswith(".") or src.startswith("/"):
                src = str((self.base_dir / src).resolve())
            else:
                src = self.obj(src)
            binds.append(":".join([src, dst, *mode]))
        ports: dict[int, tuple[str, int] | int] = {}
        for p in svc.get("ports") or []:
            parts = str(p).split(":")
            container = int(parts[-1])
            ports[container] = (parts[0], int(parts[1])) if len(parts) == 3 else int(parts[0])
        restart = svc.get("restart", "no")
        host_config = api.create_host_config(
            binds=binds,
            port_bindings=ports or None,
            restart_policy={"Name": restart} if restart != "no" else None,
            shm_size=_bytes(svc["shm_size"]) if "shm_size" in svc else None,
        )
        endpoints = {}
        for net, conf in (svc.get("networks") or {}).items():
            endpoints[self.obj(net)] = api.create_endpoint_config(
                ipv4_address=(conf or {}).get("ipv4_address"), aliases=[service]
            )
        command = svc.get("command")
        if isinstance(command, str):
            command = shlex.split(command)
        env = svc.get("environment") or {}
        if isinstance(env, dict):
            env = [f"{k}={v}" for k, v in env.items()]
        health = None
        if "healthcheck" in svc:
            hc = svc["healthcheck"]
            health = docker.types.Healthcheck(
                test=hc["test"],
                interval=int(_seconds(hc.get("interval", "30s")) * 1e9),
                timeout=int(_seconds(hc.get("timeout", "30s")) * 1e9),
                retries=int(hc.get("retries", 3)),
            )
        api.create_container(
            svc["image"],
            command=command,
            name=self.container_name(service),
            hostname=service,
            environment=env,
            labels={**self.labels, "com.docker.compose.service": service},
            ports=list(ports) or None,
            host_config=host_config,
            networking_config=api.create_networking_config(endpoints) if endpoints else None,
            healthcheck=health,
            stop_timeout=int(_seconds(svc.get("stop_grace_period", "10s"))),
        )

    def down(self) -> list[str]:
        """Remove every container, network and volume of the project; what was removed."""
        removed: list[str] = []
        flt = {"label": f"{LABEL}={self.name}"}
        for c in self.client.containers.list(all=True, filters=flt):
            c.remove(force=True, v=True)
            removed.append(f"container {c.name}")
        for n in self.client.networks.list(filters=flt):
            n.remove()
            removed.append(f"network {n.name}")
        for v in self.client.volumes.list(filters=flt):
            v.remove(force=True)
            removed.append(f"volume {v.name}")
        return removed

    def ps(self) -> list[tuple[str, str, str]]:
        out = []
        flt = {"label": f"{LABEL}={self.name}"}
        for c in self.client.containers.list(all=True, filters=flt):
            health = (c.attrs.get("State", {}).get("Health") or {}).get("Status", "-")
            out.append((c.name, c.status, health))
        return sorted(out)

    def wait_healthy(self, timeout: float) -> None:
        """Until every container reports healthy (TimeoutError naming the others)."""
        deadline = time.monotonic() + timeout
        while True:
            states = self.ps()
            bad = [s for s in states if s[1] != "running" or s[2] not in ("healthy", "-")]
            if not bad and states:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"not healthy after {timeout:.0f} s: {bad}")
            time.sleep(1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sdk_compose.py")
    parser.add_argument("action", choices=("up", "down", "ps"))
    parser.add_argument("-p", "--project", default="cloudburst")
    parser.add_argument("-f", "--file", default=str(COMPOSE_FILE))
    parser.add_argument("--wait", type=float, default=0, help="up: wait this long for health")
    args = parser.parse_args(argv)
    path = Path(args.file)
    proj = Project(args.project, load(path), base_dir=path.resolve().parent)
    if args.action == "up":
        proj.up()
        if args.wait:
            proj.wait_healthy(args.wait)
    elif args.action == "down":
        for line in proj.down():
            print("removed", line)
    for name, status, health in proj.ps():
        print(f"{name:32} {status:10} {health}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
