"""Which process serves which gRPC service: the one table the gateway routes by.

The wire names are containerd's (and CRI's); the process split is berth's
(see ARCHITECTURE.md). Health and Introspection are served by every process on
its own socket; through the client socket they reach the gateway.
"""

from __future__ import annotations

from typing import Final

CONTENT: Final = "content"
SNAPSHOTS: Final = "snapshots"
IMAGES: Final = "images"
RUNTIME: Final = "runtime"
CRI: Final = "cri"
GATEWAY: Final = "gateway"

# Start order of the embedded suite: providers before their users.
PROCESSES: Final[tuple[str, ...]] = (CONTENT, SNAPSHOTS, IMAGES, RUNTIME, CRI, GATEWAY)

GRPC_SERVICES: Final[dict[str, tuple[str, ...]]] = {
    CONTENT: ("containerd.services.content.v1.Content",),
    SNAPSHOTS: (
        "containerd.services.snapshots.v1.Snapshots",
        "containerd.services.diff.v1.Diff",
    ),
    IMAGES: (
        "containerd.services.images.v1.Images",
        "containerd.services.namespaces.v1.Namespaces",
        "containerd.services.leases.v1.Leases",
        "containerd.services.transfer.v1.Transfer",
        "containerd.services.streaming.v1.Streaming",
    ),
    RUNTIME: (
        "containerd.services.containers.v1.Containers",
        "containerd.services.tasks.v1.Tasks",
    ),
    CRI: ("runtime.v1.RuntimeService", "runtime.v1.ImageService"),
    GATEWAY: (
        "containerd.services.version.v1.Version",
        "containerd.services.introspection.v1.Introspection",
        "containerd.services.events.v1.Events",
        "grpc.health.v1.Health",
    ),
}


def owner_of(grpc_service: str) -> str | None:
    """The process that serves ``grpc_service``, or None if no berth process does."""
    for process, services in GRPC_SERVICES.items():
        if grpc_service in services:
            return process
    return None
