"""The image store, namespace and lease contracts (containerd's images, namespaces, leases).

Records only: what an image name points to, which namespaces exist, which
leases keep resources alive. The bytes live in the content store, the
filesystems in the snapshotters; the garbage collector joins them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from shared.diff import Descriptor

# Labels with meaning across the suite (containerd's docs/garbage-collection.md).
LABEL_GC_ROOT = "containerd.io/gc.root"
LABEL_GC_REF_CONTENT = "containerd.io/gc.ref.content"
LABEL_GC_REF_SNAPSHOT = "containerd.io/gc.ref.snapshot."
LABEL_GC_EXPIRE = "containerd.io/gc.expire"
LABEL_GC_FLAT = "containerd.io/gc.flat"
LABEL_DEFAULT_SNAPSHOTTER = "containerd.io/defaults/snapshotter"
LABEL_DEFAULT_RUNTIME = "containerd.io/defaults/runtime"


@dataclass(frozen=True)
class Image:
    name: str
    target: Descriptor
    labels: Mapping[str, str] = field(default_factory=dict)
    created_at: int = 0
    updated_at: int = 0


class ImageStore(Protocol):
    """Images of the request's namespace."""

    def get(self, name: str) -> Image: ...

    def list(self, filters: Sequence[str] = ()) -> list[Image]:
        """Filter fields: ``name``, ``target.digest``, ``target.mediatype``, ``labels.<k>``,
        ``annotations.<k>``."""
        ...

    def create(self, image: Image) -> Image:
        """AlreadyExists if the name is taken."""
        ...

    def update(self, image: Image, fieldpaths: Sequence[str] = ()) -> Image:
        """Paths ``labels[.k]``, ``annotations[.k]``, ``target``; none means all of them."""
        ...

    def delete(self, name: str) -> None: ...


@dataclass(frozen=True)
class Namespace:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Lease:
    id: str
    created_at: int
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Resource:
    id: str
    type: str  # "content", "ingests" or "snapshots/<snapshotter>"
