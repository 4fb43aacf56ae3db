"""Plugin records: what each process provides, as containerd's introspection lists it.

Each process composes its list in one place (its ``__main__``), serves it over
its own Introspection service, and the gateway joins the lists so that
``ctr plugins ls`` shows what runs. Implementations do not know about this.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from dataclasses import dataclass, field

# containerd's plugin types (plugin/plugin.go).
CONTENT = "io.containerd.content.v1"
SNAPSHOTTER = "io.containerd.snapshotter.v1"
METADATA = "io.containerd.metadata.v1"
DIFFER = "io.containerd.differ.v1"
GC = "io.containerd.gc.v1"
SERVICE = "io.containerd.service.v1"
GRPC = "io.containerd.grpc.v1"
RUNTIME = "io.containerd.runtime.v2"
LEASE = "io.containerd.lease.v1"
TRANSFER = "io.containerd.transfer.v1"
STREAMING = "io.containerd.streaming.v1"
EVENT = "io.containerd.event.v1"
INTERNAL = "io.containerd.internal.v1"

_ARCH = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv7l": "arm",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
}


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""


def host_platform() -> Platform:
    machine = platform.machine()
    arch = _ARCH.get(machine, machine)
    return Platform("linux", arch, "v8" if arch == "arm64" else "")


@dataclass(frozen=True)
class Plugin:
    type: str
    id: str
    requires: tuple[str, ...] = ()
    platforms: tuple[Platform, ...] = ()
    exports: Mapping[str, str] = field(default_factory=dict)
    capabilities: tuple[str, ...] = ()
    init_error: str = ""  # non-empty: the plugin failed to load (ctr shows "error")

    def with_error(self, message: str) -> Plugin:
        return Plugin(
            self.type,
            self.id,
            self.requires,
            self.platforms,
            self.exports,
            self.capabilities,
            message,
        )


def grpc_plugins(
    process: str, service_ids: tuple[str, ...], requires: tuple[str, ...] = ()
) -> list[Plugin]:
    """The ``io.containerd.grpc.v1`` entries of a process's public services."""
    return [
        Plugin(GRPC, service_id, requires=requires, exports={"process": process})
        for service_id in service_ids
    ]
