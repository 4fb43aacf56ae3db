"""Images as the client sees them: a name pointing at content, resolved for one platform.

An :class:`Image` is a record of the images service (name, target descriptor,
labels). Everything else is read from the content store on demand: the
manifest for the client's platform (through any number of indexes), the
image config, the layers' diff IDs and the chain ID naming the unpacked
root filesystem in a snapshotter.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shared import oci as formats
from shared.content import Info
from shared.diff import Descriptor
from shared.errors import AlreadyExists, NotFound
from shared.images import LABEL_GC_REF_SNAPSHOT
from shared.unpack import Layer, apply_layers, chain_ids

if TYPE_CHECKING:
    from berth.client import Client

MAX_DEPTH = 8  # nested indexes followed before giving up (checkpoints nest one)


@dataclass(frozen=True)
class ResolvedManifest:
    """The manifest an image resolves to for a platform, with its parsed contents."""

    descriptor: Descriptor
    config: Descriptor
    layers: tuple[Descriptor, ...]


@dataclass
class Image:
    """An image record of the namespace, bound to the client that read it.

    ``platform`` is the platform the image is resolved for (the client's by
    default); an index is followed to the first manifest that matches it.
    """

    client: Client = field(repr=False)
    name: str
    target: Descriptor
    labels: Mapping[str, str] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    platform: formats.Platform = field(default_factory=formats.host_platform)

    # -- content ------------------------------------------------------------

    def _read(self, digest: str) -> bytes:
        return self.client._read_blob(digest)

    def _resolve(self, desc: Descriptor, depth: int) -> ResolvedManifest:
        if desc.media_type in formats.MANIFESTS:
            parsed = formats.parse_manifest(self._read(desc.digest))
            return ResolvedManifest(desc, parsed.config, tuple(parsed.layers))
        if desc.media_type in formats.INDEXES and depth < MAX_DEPTH:
            for entry in formats.index_entries(self._read(desc.digest)):
                # Checkpoint indexes also hold criu tars and specs: only follow images.
                if entry.desc.media_type not in formats.MANIFESTS | formats.INDEXES:
                    continue
                if entry.platform is not None and not formats.platform_matches(
                    self.platform, entry.platform
                ):
                    continue
                try:
                    return self._resolve(entry.desc, depth + 1)
                except NotFound:
                    continue
        raise NotFound(f"image {self.name}: no manifest for platform {self.platform}")

    def manifest(self) -> ResolvedManifest:
        """The manifest for :attr:`platform` (NotFound when the image has none)."""
        return self._resolve(self.target, 0)

    def config_descriptor(self) -> Descriptor:
        return self.manifest().config

    def config(self) -> dict[str, Any]:
        """The image configuration (OCI ``application/vnd.oci.image.config.v1+json``):
        ``config`` (Env, Entrypoint, Cmd, User, WorkingDir, Labels, StopSignal ...),
        ``rootfs``, ``architecture``, ``os``, ``history``."""
        desc = self.config_descriptor()
        return formats.parse_json(self._read(desc.digest), f"config of {self.name}")

    def rootfs(self) -> list[str]:
        """The diff IDs of the layers, bottom first."""
        desc = self.config_descriptor()
        return formats.diff_ids(self._read(desc.digest))

    def chain_id(self) -> str:
        """The name of the committed snapshot that is this image's root filesystem."""
        chains = chain_ids(self.rootfs())
        if not chains:
            raise NotFound(f"image {self.name} has no layers")
        return chains[-1]

    def platforms(self) -> list[formats.Platform]:
        """The platforms the image is for, as its index lists them (``ctr images ls``'s
        PLATFORMS); for a lone manifest, its config's. Nested indexes are followed;
        entries that are not images (a checkpoint's criu dump) are not platforms."""
        found: list[formats.Platform] = []

        def walk(desc: Descriptor, depth: int) -> None:
            if desc.media_type in formats.MANIFESTS:
                config = formats.parse_json(
                    self._read(formats.parse_manifest(self._read(desc.digest)).config.digest),
                    f"config of {self.name}",
                )
                if config.get("os") and config.get("architecture"):
                    plat = formats.Platform(
                        config["os"], config["architecture"], config.get("variant", "")
                    )
                    if plat not in found:
                        found.append(plat)
                return
            if desc.media_type not in formats.INDEXES or depth >= MAX_DEPTH:
                return
            for entry in formats.index_entries(self._read(desc.digest)):
                if entry.platform is not None and entry.desc.media_type in formats.MANIFESTS:
                    if entry.platform not in found:
                        found.append(entry.platform)
                elif entry.desc.media_type in formats.MANIFESTS | formats.INDEXES:
                    # Without a platform in the index, only its content can say; what was
                    # never pulled says nothing.
                    with contextlib.suppress(NotFound):
                        walk(entry.desc, depth + 1)

        walk(self.target, 0)
        return found

    def size(self) -> int:
        """Bytes of content for :attr:`platform`: the target, manifest, config and layers."""
        resolved = self.manifest()
        total = resolved.config.size + sum(layer.size for layer in resolved.layers)
        total += resolved.descriptor.size
        if resolved.descriptor.digest != self.target.digest:
            total += self.target.size
        return total

    # -- root filesystem ----------------------------------------------------

    def is_unpacked(self, snapshotter: str | None = None) -> bool:
        """Whether the image's layers are committed snapshots in ``snapshotter``
        (default: the namespace's default snapshotter)."""
        name = snapshotter or self.client.default_snapshotter()
        try:
            self.client.snapshot_service(name).stat(self.chain_id())
        except NotFound:
            return False
        return True

    def unpack(self, snapshotter: str | None = None) -> str:
        """Unpack the layers into ``snapshotter``, skipping those already there, and label
        the content as containerd's client does (the config keeps the snapshot from garbage
        collection, each layer records its diff ID). Returns the chain ID."""
        name = snapshotter or self.client.default_snapshotter()
        resolved = self.manifest()
        diff_ids = self.rootfs()
        if len(diff_ids) != len(resolved.layers):
            raise NotFound(
                f"image {self.name}: {len(resolved.layers)} layers but "
                f"{len(diff_ids)} diff IDs in the config"
            )
        content = self.client.content_store()
        with self.client._temporary_lease():
            chain = apply_layers(
                self.client.snapshot_service(name),
                self.client.diff_service(),
                [Layer(blob, diff) for blob, diff in zip(resolved.layers, diff_ids, strict=True)],
            )
            for blob, diff_id in zip(resolved.layers, diff_ids, strict=True):
                key = "labels.containerd.io/uncompressed"
                content.update(
                    Info(blob.digest, 0, 0, 0, {"containerd.io/uncompressed": diff_id}), [key]
                )
            label = LABEL_GC_REF_SNAPSHOT + name
            content.update(
                Info(resolved.config.digest, 0, 0, 0, {label: chain}), [f"labels.{label}"]
            )
        return chain

    # -- the record -----------------------------------------------------------

    def refresh(self) -> Image:
        """The image record as it is now."""
        return self.client.get_image(self.name)

    def set_labels(self, labels: Mapping[str, str]) -> Mapping[str, str]:
        """Set (or, with an empty value, remove) labels; returns all labels after."""
        updated = self.client._update_image_labels(self.name, labels)
        self.labels = updated.labels
        return self.labels

    def delete(self, *, sync: bool = False) -> None:
        """Remove the record; ``sync`` waits for the garbage collection it allows."""
        self.client.delete_image(self.name, sync=sync)


def write_blob(
    client: Client, data: bytes, media_type: str, ref: str, labels: Mapping[str, str]
) -> Descriptor:
    """Store ``data`` in the content store with ``labels`` (containerd's ``writeContent``)."""
    from shared.content import hasher

    h = hasher()
    h.update(data)
    digest = "sha256:" + h.hexdigest()
    store = client.content_store()
    try:
        writer = store.writer(ref, len(data), digest)
    except AlreadyExists:
        if labels:
            paths = [f"labels.{k}" for k in labels]
            store.update(Info(digest, len(data), 0, 0, dict(labels)), paths)
        return Descriptor(media_type, digest, len(data))
    try:
        if writer.status().offset:  # an ingest of the same ref left from before
            writer.truncate(0)
        writer.write(data)
        writer.commit(len(data), digest, labels)
    except AlreadyExists:
        pass
    finally:
        writer.close()
    return Descriptor(media_type, digest, len(data))
