"""Server-side push: an image record's tree from the content store to a registry.

Children before parents, as registries require: layers and configs, then the
platform manifests (by digest), then the root (index or manifest) under the
target tag. A blob the registry already has is skipped; one that came from
another repository of the same registry is mounted across instead of
uploaded (the ``containerd.io/distribution.source.<host>`` label says where
it came from).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

from services.images.image_store import ImageRecords
from services.images.pull import Progress, ProgressFn, blob_ref
from shared import oci
from shared.content import Store
from shared.diff import Descriptor
from shared.errors import NotFound
from shared.registry import Credentials, Reference, RegistryClient, parse

log = logging.getLogger(__name__)

MAX_INDEX_DEPTH = 4


class Pusher:
    def __init__(self, registry: RegistryClient, content: Store, images: ImageRecords) -> None:
        self._registry = registry
        self._content = content
        self._images = images

    def push(
        self,
        name: str,
        target: str,
        platforms: Sequence[oci.Platform] | None = None,
        progress: ProgressFn = lambda p: None,
        credentials: Callable[[str], Credentials | None] | None = None,
    ) -> Descriptor:
        """Push the image ``name`` to the reference ``target``; returns the root descriptor."""
        registry = (
            self._registry if credentials is None else self._registry.with_credentials(credentials)
        )
        image = self._images.get(name)
        ref = parse(target)
        root = image.target
        progress(Progress(target, "pushing", total=root.size))
        data = self._read(root)
        if root.media_type in oci.INDEXES:
            self._push_index_children(registry, ref, name, data, platforms, progress)
        elif root.media_type in oci.MANIFESTS:
            self._push_tree_blobs(registry, ref, oci.parse_manifest(data), progress)
        registry.push_manifest(str(ref), root.media_type, data)
        progress(Progress(target, "complete", root.size, root.size))
        return root

    def _push_index_children(
        self,
        registry: RegistryClient,
        ref: Reference,
        name: str,
        data: bytes,
        platforms: Sequence[oci.Platform] | None,
        progress: ProgressFn,
        depth: int = 0,
    ) -> None:
        entries = oci.index_entries(data)
        chosen = oci.select_manifests(entries, platforms)
        for entry in entries:
            if not self._present(entry.desc):
                if platforms is not None and entry in chosen:
                    raise NotFound(f"{name}: the {entry.platform} manifest was never pulled")
                # A platform never pulled: the registry may still take the index.
                continue
            if entry not in chosen:
                continue
            if entry.desc.media_type in oci.MANIFESTS:
                self._push_manifest_tree(registry, ref, entry.desc, progress)
            elif entry.desc.media_type in oci.INDEXES and depth < MAX_INDEX_DEPTH:
                # A checkpoint's index holds its image's index: that goes by digest.
                nested = self._read(entry.desc)
                self._push_index_children(
                    registry, ref, name, nested, platforms, progress, depth + 1
                )
                by_digest = parse(f"{ref.host}/{ref.repository}@{entry.desc.digest}")
                registry.push_manifest(str(by_digest), entry.desc.media_type, nested)
            else:
                # Plain blobs listed by an index (a checkpoint's criu dump, spec, rw layer).
                self._push_blobs(registry, ref, [entry.desc], progress)

    def _present(self, desc: Descriptor) -> bool:
        try:
            self._content.info(desc.digest)
        except NotFound:
            return False
        return True

    def _read(self, desc: Descriptor) -> bytes:
        return b"".join(self._content.read(desc.digest))

    def _push_manifest_tree(
        self, registry: RegistryClient, ref: Reference, desc: Descriptor, progress: ProgressFn
    ) -> None:
        data = self._read(desc)
        self._push_tree_blobs(registry, ref, oci.parse_manifest(data), progress)
        by_digest = parse(f"{ref.host}/{ref.repository}@{desc.digest}")
        registry.push_manifest(str(by_digest), desc.media_type, data)

    def _push_tree_blobs(
        self, registry: RegistryClient, ref: Reference, manifest: oci.Manifest, progress: ProgressFn
    ) -> None:
        self._push_blobs(registry, ref, [*manifest.layers, manifest.config], progress)

    def _push_blobs(
        self,
        registry: RegistryClient,
        ref: Reference,
        blobs: Sequence[Descriptor],
        progress: ProgressFn,
    ) -> None:
        for desc in blobs:
            name = blob_ref(desc)
            if registry.blob_exists(ref, desc):
                progress(Progress(name, "exists", desc.size, desc.size))
                continue
            info = self._content.info(desc.digest)
            source = info.labels.get(f"{oci.LABEL_DISTRIBUTION_SOURCE}{ref.host}")
            mount_from = source if source and source != ref.repository else None
            progress(Progress(name, "uploading", 0, desc.size))
            chunks = _reporting(
                self._content.read(desc.digest), _uploading(progress, name, desc.size)
            )
            result = registry.push_blob(ref, desc, chunks, mount_from=mount_from)
            progress(Progress(name, result, desc.size, desc.size))


def _uploading(progress: ProgressFn, name: str, size: int) -> Callable[[int], None]:
    def report(sent: int) -> None:
        progress(Progress(name, "uploading", sent, size))

    return report


def _reporting(
    chunks: Iterable[bytes], report: Callable[[int], None], every: float = 0.1
) -> Iterator[bytes]:
    """``chunks`` as they are, reporting the bytes handed on at most every ``every`` s.

    A chunk is counted once the uploader asks for the next one, i.e. once it has gone
    out (large blobs go in PATCH requests of a few MiB each).
    """
    handed, last = 0, time.monotonic()
    for chunk in chunks:
        yield chunk
        handed += len(chunk)
        now = time.monotonic()
        if now - last >= every:
            report(handed)
            last = now
