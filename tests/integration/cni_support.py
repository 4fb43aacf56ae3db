"""A private CNI setup for tests: a bridge network of its own (unique bridge name and
subnet, host-local IPAM under a temp dir, no masquerading) and network namespaces made
with ``ip netns``; everything is removed afterwards, the bridge included."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PLUGIN_DIR = "/usr/lib/cni"


def have_cni() -> bool:
    return os.geteuid() == 0 and os.access(f"{PLUGIN_DIR}/bridge", os.X_OK)


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def link_exists(name: str, netns: str | None = None) -> bool:
    prefix = ["netns", "exec", netns] if netns else []
    return ip(*prefix, "link", "show", name, check=False).returncode == 0


@dataclass
class BridgeNetwork:
    name: str
    bridge: str
    subnet_prefix: str  # "10.209.17"
    conf_dir: Path
    data_dir: Path
    cache_dir: Path

    @property
    def gateway(self) -> str:
        return f"{self.subnet_prefix}.1"

    def conflist(self, *extra_plugins: dict[str, object]) -> dict[str, object]:
        return {
            "cniVersion": "1.0.0",
            "name": self.name,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": True,
                    "ipMasq": False,
                    "ipam": {
                        "type": "host-local",
                        "subnet": f"{self.subnet_prefix}.0/24",
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.data_dir),
                    },
                },
                *extra_plugins,
            ],
        }

    def write(self, doc: dict[str, object], file_name: str = "10-berth-test.conflist") -> None:
        (self.conf_dir / file_name).write_text(json.dumps(doc))

    def allocated(self) -> list[str]:
        """IPs host-local holds for containers (its files named by address)."""
        directory = self.data_dir / self.name
        if not directory.is_dir():
            return []
        return sorted(p.name for p in directory.iterdir() if p.name[0].isdigit())


@contextmanager
def bridge_network(tmp: Path) -> Iterator[BridgeNetwork]:
    tag = secrets.token_hex(3)
    net = BridgeNetwork(
        name=f"berth-test-{tag}",
        bridge=f"bt{tag}",
        subnet_prefix=f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(250)}",
        conf_dir=tmp / "net.d",
        data_dir=tmp / "ipam",
        cache_dir=tmp / "cache",
    )
    for d in (net.conf_dir, net.data_dir, net.cache_dir):
        d.mkdir(parents=True)
    net.write(net.conflist())
    try:
        yield net
    finally:
        if link_exists(net.bridge):
            ip("link", "del", net.bridge)
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def network_namespace() -> Iterator[str]:
    name = f"berth-test-{secrets.token_hex(4)}"
    ip("netns", "add", name)
    try:
        yield name
    finally:
        ip("netns", "del", name, check=False)


def addresses_in(netns: str, ifname: str = "eth0") -> list[str]:
    out = ip("netns", "exec", netns, "ip", "-o", "-4", "addr", "show", ifname).stdout
    return [line.split()[3] for line in out.splitlines()]


PORTMAP_CHAINS = ("CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-SETMARK", "CNI-HOSTPORT-MASQ")


def nat_rules() -> list[str]:
    out = subprocess.run(["iptables", "-t", "nat", "-S"], capture_output=True, text=True,
                         check=True, timeout=30).stdout  # fmt: skip
    return out.splitlines()


def remove_portmap_chains() -> None:
    """The portmap plugin's shared chains, which its DEL leaves (as with containerd);
    removed when no container's chain hangs off them any more."""
    rules = nat_rules()
    if any(r.startswith("-N CNI-DN-") for r in rules):
        return  # a port mapping still in use: not ours to take away
    for rule in rules:
        if rule.startswith("-A ") and any(f"-j {chain}" in rule for chain in PORTMAP_CHAINS):
            parts = shlex.split(rule)
            if parts[1] not in PORTMAP_CHAINS:
                subprocess.run(["iptables", "-t", "nat", "-D", *parts[1:]], check=True, timeout=30)
    for chain in PORTMAP_CHAINS:
        if f"-N {chain}" in rules:
            subprocess.run(["iptables", "-t", "nat", "-F", chain], check=True, timeout=30)
            subprocess.run(["iptables", "-t", "nat", "-X", chain], check=True, timeout=30)
