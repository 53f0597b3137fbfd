"""Test hosts in network namespaces: a namespace joined to this one by a veth pair, whose
link a test can cut and restore.

Addresses come from 198.18.0.0/15 (RFC 2544, set aside for network tests) and exist only
on the veth pair the test creates; nothing is routed anywhere else. Needs root and
``ip`` (iproute2); :func:`netns_unavailable` says why not when they are missing.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass


def _ip(
    *args: str, netns: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    argv = ["ip", *(("netns", "exec", netns, "ip") if netns else ()), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=10, check=check)


def netns_unavailable() -> str | None:
    """Why namespaces cannot be created here (None when they can)."""
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    probe = f"cbprobe{secrets.token_hex(3)}"
    res = _ip("netns", "add", probe, check=False)
    if res.returncode != 0:
        return f"ip netns add failed: {res.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


@dataclass
class NetnsHost:
    """A host in its own namespace at ``ip``, reached from here through ``host_ip``."""

    name: str
    host_ip: str  # this side of the veth pair (the root namespace)
    ip: str  # the namespace's side
    outer: str  # veth names
    inner: str

    @classmethod
    def create(cls) -> NetnsHost:
        tag = secrets.token_hex(3)
        subnet = int(tag, 16) % 16000  # a /30 inside 198.18.0.0/15
        base = (198 << 24) | (18 << 16) | (subnet << 2)
        host_ip = _dotted(base + 1)
        ip = _dotted(base + 2)
        host = cls(f"cbns{tag}", host_ip, ip, f"cbo{tag}", f"cbi{tag}")
        try:
            _ip("netns", "add", host.name)
            _ip("link", "add", host.outer, "type", "veth", "peer", "name", host.inner)
            _ip("link", "set", host.inner, "netns", host.name)
            _ip("addr", "add", f"{host_ip}/30", "dev", host.outer)
            _ip("link", "set", host.outer, "up")
            _ip("addr", "add", f"{ip}/30", "dev", host.inner, netns=host.name)
            _ip("link", "set", host.inner, "up", netns=host.name)
            _ip("link", "set", "lo", "up", netns=host.name)
        except BaseException:
            host.destroy()
            raise
        return host

    def argv(self, *command: str) -> list[str]:
        """``command`` run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *command]

    def cut(self) -> None:
        """Take the namespace's end of the link down: nothing crosses until :meth:`heal`
        (no resets either: peers see silence, as with a pulled cable)."""
        _ip("link", "set", self.inner, "down", netns=self.name)

    def heal(self) -> None:
        _ip("link", "set", self.inner, "up", netns=self.name)

    def destroy(self) -> None:
        _ip("link", "del", self.outer, check=False)
        _ip("netns", "del", self.name, check=False)


def _dotted(n: int) -> str:
    return ".".join(str((n >> s) & 0xFF) for s in (24, 16, 8, 0))
