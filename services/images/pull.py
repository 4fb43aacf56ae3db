"""Server-side pull: registry -> content store -> snapshots -> image record.

What ``ctr images pull`` does in the client, done here once for every client
(our CLI through Transfer, the CRI service): resolve, fetch the index or
manifest, the platform's manifests, configs and layers (several at a time),
label parents with containerd's GC references as children arrive, unpack each
layer as soon as it and its parents are there, and record the image. All of
it happens under a lease, so a collection during the pull removes nothing.

Blobs already in the content store are not fetched again; an interrupted
download leaves its ingest, and the next pull continues it where it stopped
(the registry client also resumes a dropped connection with HTTP Range).
"""

from __future__ import annotations

import contextvars
import copy
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from services.images.lease_store import LeaseRecords
from shared import context as request_context
from shared import oci
from shared.content import Info, Store
from shared.diff import Applier, Descriptor
from shared.errors import AlreadyExists, FailedPrecondition, NotFound, Unavailable
from shared.images import LABEL_GC_EXPIRE, LABEL_GC_REF_SNAPSHOT, Image, ImageStore
from shared.registry import Credentials, RegistryClient, parse
from shared.snapshots import Snapshotter
from shared.unpack import Layer, apply_layer, chain_ids

log = logging.getLogger(__name__)

WRITER_RETRY_SECONDS = 60.0  # another pull holding the same ref: wait for it this long
MAX_INDEX_DEPTH = 4  # a checkpoint's index holds its image's (itself maybe an index)


@dataclass(frozen=True)
class Progress:
    """One step of a pull: ``name`` is a blob ref (``layer-sha256:…``) or the image."""

    name: str
    # resolving, resolved, waiting, downloading, exists, downloaded, unpacking, unpacked, complete
    event: str
    progress: int = 0
    total: int = 0


ProgressFn = Callable[[Progress], None]


@dataclass
class PullOptions:
    platforms: Sequence[oci.Platform] | None = field(default_factory=lambda: [oci.host_platform()])
    unpack: bool = True
    snapshotter: str = "overlayfs"
    labels: dict[str, str] = field(default_factory=dict)
    max_concurrent_downloads: int = 3


def blob_ref(desc: Descriptor) -> str:
    """The ingest ref containerd's remotes use (MakeRefKey)."""
    if desc.media_type in oci.INDEXES:
        return f"index-{desc.digest}"
    if desc.media_type in oci.MANIFESTS:
        return f"manifest-{desc.digest}"
    if desc.media_type in oci.CONFIGS:
        return f"config-{desc.digest}"
    if desc.media_type in oci.LAYERS:
        return f"layer-{desc.digest}"
    return f"unknown-{desc.digest}"


class Puller:
    def __init__(
        self,
        registry: RegistryClient,
        content: Store,
        images: ImageStore,
        leases: LeaseRecords,
        snapshotter: Callable[[str], Snapshotter],
        applier: Applier,
    ) -> None:
        self._registry = registry
        self._content = content
        self._images = images
        self._leases = leases
        self._snapshotter = snapshotter
        self._applier = applier

    def pull(
        self,
        ref: str,
        opts: PullOptions,
        progress: ProgressFn = lambda p: None,
        credentials: Callable[[str], Credentials | None] | None = None,
    ) -> Image:
        """Pull ``ref``; ``credentials`` (host -> Credentials) are this pull's own, if given."""
        namespace = request_context.require_namespace()
        # This pull's own credentials: a copy of the puller with its own registry session.
        puller = self
        if credentials is not None:
            puller = copy.copy(self)
            puller._registry = self._registry.with_credentials(credentials)
        parse(ref)  # a bad reference fails before anything is recorded
        expires = (datetime.now(UTC) + timedelta(hours=24)).strftime("%Y-%m-%dT%H:%M:%SZ")
        lease = self._leases.create("", {LABEL_GC_EXPIRE: expires})
        try:
            with request_context.using(namespace=namespace, lease=lease.id):
                return puller._pull(ref, opts, progress)
        finally:
            self._leases.delete(lease.id)

    def _pull(self, ref: str, opts: PullOptions, progress: ProgressFn) -> Image:
        progress(Progress(ref, "resolving"))
        name, root = self._registry.resolve(ref)
        progress(Progress(ref, "resolved", total=root.size))
        source = self._source_label(ref)
        root_data = self._manifest(ref, root, source)
        manifests: list[Descriptor]
        blobs: list[Descriptor] = []
        if root.media_type in oci.INDEXES:
            manifests, blobs = self._index_children(ref, root, root_data, opts, source)
            if not manifests and not blobs:
                wanted = ", ".join(map(str, opts.platforms or []))
                raise NotFound(f"{ref}: no manifest for platform {wanted}")
        elif root.media_type in oci.MANIFESTS:
            manifests = [root]
        else:
            raise FailedPrecondition(f"{ref}: unsupported media type {root.media_type!r}")

        with ThreadPoolExecutor(opts.max_concurrent_downloads, thread_name_prefix="pull") as pool:
            blob_futures = [
                pool.submit(contextvars.copy_context().run, self._blob, ref, d, source, progress)
                for d in blobs
            ]
            for desc in manifests:
                data = root_data if desc is root else self._manifest(ref, desc, source)
                self._pull_manifest(
                    ref, desc, oci.parse_manifest(data), opts, source, pool, progress
                )
            for future in blob_futures:
                future.result()

        image = self._record(name, root, opts.labels)
        progress(Progress(ref, "complete", total=root.size, progress=root.size))
        return image

    def _index_children(
        self,
        ref: str,
        index: Descriptor,
        data: bytes,
        opts: PullOptions,
        source: dict[str, str],
        depth: int = 0,
    ) -> tuple[list[Descriptor], list[Descriptor]]:
        """The manifests to pull for the platforms, through nested indexes, and the plain
        blobs an index may list too (a checkpoint's criu dump, spec and rw layer)."""
        entries = oci.index_entries(data)
        # As containerd: the index keeps every manifest it lists alive, fetched or not.
        self._label_children(index, [e.desc for e in entries])
        manifests: list[Descriptor] = []
        blobs: list[Descriptor] = []
        for entry in oci.select_manifests(entries, opts.platforms):
            if entry.desc.media_type in oci.MANIFESTS:
                manifests.append(entry.desc)
            elif entry.desc.media_type in oci.INDEXES:
                if depth >= MAX_INDEX_DEPTH:
                    raise FailedPrecondition(f"{ref}: indexes nested too deep")
                nested = self._manifest(ref, entry.desc, source)
                more, more_blobs = self._index_children(
                    ref, entry.desc, nested, opts, source, depth + 1
                )
                manifests += more
                blobs += more_blobs
            else:
                blobs.append(entry.desc)
        return manifests, blobs

    def _pull_manifest(
        self,
        ref: str,
        desc: Descriptor,
        manifest: oci.Manifest,
        opts: PullOptions,
        source: dict[str, str],
        pool: ThreadPoolExecutor,
        progress: ProgressFn,
    ) -> None:
        def fetch(desc: Descriptor) -> Future[None]:
            # Worker threads see the request's namespace and lease only if handed them.
            return pool.submit(
                contextvars.copy_context().run, self._blob, ref, desc, source, progress
            )

        config_future = fetch(manifest.config)
        layer_futures = [fetch(layer) for layer in manifest.layers]
        config_future.result()
        self._label_children(desc, [manifest.config, *manifest.layers])
        config_data = b"".join(self._content.read(manifest.config.digest))
        ids = oci.diff_ids(config_data)
        if len(ids) != len(manifest.layers):
            raise FailedPrecondition(
                f"{ref}: {len(manifest.layers)} layers but {len(ids)} diff IDs in the config"
            )
        if not opts.unpack:
            for future in layer_futures:
                future.result()
            return
        snapshotter = self._snapshotter(opts.snapshotter)
        chains = chain_ids(ids)
        parent = ""
        for layer, diff_id, chain, future in zip(
            manifest.layers, ids, chains, layer_futures, strict=True
        ):
            future.result()  # this layer has arrived; its parents are applied already
            try:
                snapshotter.stat(chain)
            except NotFound:
                progress(Progress(blob_ref(layer), "unpacking", total=layer.size))
                apply_layer(snapshotter, self._applier, Layer(layer, diff_id), chain, parent)
                progress(Progress(blob_ref(layer), "unpacked", layer.size, layer.size))
            self._set_labels(layer.digest, {oci.LABEL_UNCOMPRESSED: diff_id})
            parent = chain
        if chains:
            self._set_labels(
                manifest.config.digest, {f"{LABEL_GC_REF_SNAPSHOT}{opts.snapshotter}": chains[-1]}
            )

    # -- blobs ------------------------------------------------------------

    def _source_label(self, ref: str) -> dict[str, str]:
        r = parse(ref)
        return {f"{oci.LABEL_DISTRIBUTION_SOURCE}{r.host}": r.repository}

    def _manifest(self, ref: str, desc: Descriptor, source: dict[str, str]) -> bytes:
        if desc.size > oci.MAX_MANIFEST_SIZE:
            raise FailedPrecondition(f"{ref}: manifest {desc.digest} is {desc.size} bytes, too big")
        try:
            self._content.info(desc.digest)
        except NotFound:
            data = self._registry.fetch_manifest(ref, desc)
            self._write(blob_ref(desc), desc, [data], source)
        return b"".join(self._content.read(desc.digest))

    def _blob(
        self, ref: str, desc: Descriptor, source: dict[str, str], progress: ProgressFn
    ) -> None:
        name = blob_ref(desc)
        try:
            self._content.info(desc.digest)
            progress(Progress(name, "exists", desc.size, desc.size))
            return
        except NotFound:
            pass
        progress(Progress(name, "waiting", total=desc.size))
        written = self._write(name, desc, None, source, ref, progress)
        progress(
            Progress(name, "exists" if written is None else "downloaded", desc.size, desc.size)
        )

    def _write(
        self,
        name: str,
        desc: Descriptor,
        data: list[bytes] | None,
        source: dict[str, str],
        ref: str = "",
        progress: ProgressFn = lambda p: None,
    ) -> Info | None:
        """Ingest one blob (resuming a previous attempt); None if it was already there."""
        deadline = time.monotonic() + WRITER_RETRY_SECONDS
        while True:
            try:
                writer = self._content.writer(name, desc.size, desc.digest)
                break
            except AlreadyExists:
                return None
            except Unavailable:
                # Another pull is writing the same blob: containerd waits for it too.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        try:
            offset = writer.status().offset
            chunks = data if data is not None else self._registry.fetch_blob(ref, desc, offset)
            done = offset
            for chunk in chunks:
                writer.write(chunk)
                done += len(chunk)
                progress(Progress(name, "downloading", done, desc.size))
            try:
                return writer.commit(desc.size, desc.digest, source)
            except AlreadyExists:
                return None
            except FailedPrecondition:
                # Wrong bytes: drop them so that the next pull starts clean.
                writer.close()
                self._content.abort(name)
                raise
        finally:
            writer.close()

    def _set_labels(self, digest: str, labels: dict[str, str]) -> None:
        info = Info(digest, 0, 0, 0, labels)
        self._content.update(info, [f"labels.{k}" for k in labels])

    def _label_children(self, parent: Descriptor, children: Sequence[Descriptor]) -> None:
        labels = {}
        layer_index = 0
        for i, child in enumerate(children):
            if parent.media_type in oci.INDEXES:
                labels[oci.child_label(parent.media_type, i, child)] = child.digest
            elif child.media_type in oci.CONFIGS:
                labels[oci.child_label(parent.media_type, 0, child)] = child.digest
            else:
                labels[oci.child_label(parent.media_type, layer_index, child)] = child.digest
                layer_index += 1
        self._set_labels(parent.digest, labels)

    def _record(self, name: str, target: Descriptor, labels: dict[str, str]) -> Image:
        image = Image(name, target, labels)
        try:
            return self._images.create(image)
        except AlreadyExists:
            return self._images.update(image, ["target", "labels"])
