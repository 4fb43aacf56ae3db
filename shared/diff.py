"""The differ contract: apply a layer to mounts, compute a layer from two mounts.

Implemented by ``services.snapshots.differ.Differ`` and, over gRPC, by
``shared.proxy.diff.DiffProxy``. See the docstring of ``shared.snapshots`` for
how unpack uses it with a snapshotter (``shared.unpack`` does exactly that).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from shared.snapshots import Mount

MEDIA_TYPE_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_TYPE_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_TYPE_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
LABEL_UNCOMPRESSED = "containerd.io/uncompressed"


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor (containerd.types.Descriptor)."""

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)


class Applier(Protocol):
    def apply(self, desc: Descriptor, mounts: Sequence[Mount]) -> Descriptor:
        """Apply the (compressed) layer ``desc`` from the content store onto ``mounts``.

        Returns the uncompressed layer's descriptor: its digest is the diff ID,
        which the caller checks against the image config.
        """
        ...


class Comparer(Protocol):
    def diff(
        self,
        left: Sequence[Mount],
        right: Sequence[Mount],
        media_type: str = "",
        ref: str = "",
        labels: Mapping[str, str] | None = None,
    ) -> Descriptor:
        """Write the changes from ``left`` to ``right`` as a layer in the content store."""
        ...
