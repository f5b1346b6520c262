"""Several "hosts" on one machine: Linux network namespaces joined by veth pairs on a bridge.

Each host has its own network stack (its own loopback, one address on 10.77.0.0/24); processes
started with `host.launcher` live on it. `cut()` takes a host's link down, as a pulled cable
would: its connections hang rather than close, and nothing it sends arrives.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field

SUBNET = "10.77.0"


class NamespacesUnavailable(RuntimeError):
    pass


def _ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise NamespacesUnavailable(f"`ip {' '.join(args)}` failed: {r.stderr.strip()}")


@dataclass
class Host:
    name: str
    netns: str
    address: str
    veth: str  # the end inside the namespace
    peer: str  # the end on the bridge

    @property
    def launcher(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns]

    def cut(self) -> None:
        _ip("link", "set", self.peer, "down")


@dataclass
class Network:
    """Hosts by name; the machine itself gets `.254` on the bridge so a test can still look in."""

    names: list[str]
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:5])
    hosts: dict[str, Host] = field(default_factory=dict)

    @property
    def bridge(self) -> str:
        return f"arcbr{self.tag}"

    def __enter__(self) -> Network:
        if os.geteuid() != 0 or not shutil.which("ip"):
            raise NamespacesUnavailable("needs root and iproute2's `ip` to create network namespaces")
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{SUBNET}.254/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for i, name in enumerate(self.names, start=1):
                h = Host(name, f"arc{self.tag}-{name}", f"{SUBNET}.{i}", f"arcv{self.tag}{i}", f"arcp{self.tag}{i}")
                _ip("netns", "add", h.netns)
                self.hosts[name] = h
                _ip("link", "add", h.veth, "type", "veth", "peer", "name", h.peer)
                _ip("link", "set", h.peer, "master", self.bridge)
                _ip("link", "set", h.peer, "up")
                _ip("link", "set", h.veth, "netns", h.netns)
                _ip("netns", "exec", h.netns, "ip", "addr", "add", f"{h.address}/24", "dev", h.veth)
                _ip("netns", "exec", h.netns, "ip", "link", "set", h.veth, "up")
                _ip("netns", "exec", h.netns, "ip", "link", "set", "lo", "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self.hosts.values():
            subprocess.run(["ip", "link", "del", h.peer], capture_output=True, timeout=30)
            subprocess.run(["ip", "netns", "del", h.netns], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, timeout=30)

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]
