"""Importing an image archive from a byte stream: an OCI layout tar or a ``docker save`` tar.

containerd's ``archive.ImportIndex`` and its transfer service's import, server side:

1. **Read the tar as it streams in**, members in any order, nothing of a layer
   held in memory. A ``blobs/<alg>/<hex>`` member goes to the content store
   and must hash to its name (DataLoss if not). Any other regular file
   (docker's ``<id>/layer.tar``, ``<id>.json``) goes under a temporary ingest
   ref and is committed under the digest computed as it passed, since its
   digest is known only then. ``oci-layout``, ``index.json`` and docker's
   ``manifest.json`` are kept in memory (4 MiB at most).
2. **The root**: an OCI archive's ``index.json``, stored as a blob; for a
   docker archive, the schema2 manifest per image and an index naming each
   ``RepoTags`` entry, built byte for byte as containerd builds them (layers
   keep their media type; gzip-compressed only with ``force_compress``).
3. **Walk** from the root (platform filter as the ImageStore asks): every
   descriptor reached must be in the store with its size; parents get
   ``containerd.io/gc.ref.content.*`` labels; manifests are at most 4 MiB.
4. **Unpack** the manifests whose config matches an unpack platform.
5. **Name** the images (:func:`names_for`) and record them. Only now: a
   failed import records no image. Everything it wrote is held by a lease of
   its own, so the collector removes it once an import fails.

Stricter than containerd: a tar must end with its end-of-archive block (Go's
reader also takes an end of data between members), and every blob reached
must be present, layers included.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import posixpath
import re
import secrets
import tarfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from services.images.archive_names import (
    ImageReference,
    ImportOptions,
    Unpack,
    config_platform,
    descriptor_json,
    go_json,
    names_for,
    reference_object,
)
from services.images.archive_tar import Member, Readable, TarStream
from services.images.pull import Progress, ProgressFn
from shared import content, oci
from shared import context as request_context
from shared.content import Info, Store
from shared.diff import Applier, Descriptor
from shared.errors import AlreadyExists, BerthError, DataLoss, InvalidArgument, NotFound
from shared.images import (
    LABEL_GC_EXPIRE,
    LABEL_GC_REF_CONTENT,
    LABEL_GC_REF_SNAPSHOT,
    Image,
    ImageStore,
    Lease,
    Resource,
)
from shared.registry.reference import normalize
from shared.snapshots import Snapshotter
from shared.unpack import Layer, apply_layer, chain_ids

log = logging.getLogger(__name__)

MT_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
MT_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
LAYOUT_VERSION = "1.0.0"
_SMALL_FILES = ("oci-layout", "index.json", "manifest.json")


class LeaseManager(Protocol):
    def create(self, lease_id: str, labels: Mapping[str, str]) -> Lease: ...

    def delete(self, lease_id: str) -> None: ...

    def add_resource(self, lease_id: str, resource: Resource) -> None: ...


__all__ = ["ArchiveImporter", "ImageReference", "ImportOptions", "Unpack"]


def _compressed(head: bytes) -> bool:
    """containerd's DetectCompression: gzip or zstd (a frame or a skippable frame)."""
    return head.startswith((b"\x1f\x8b\x08", b"\x28\xb5\x2f\xfd")) or (
        len(head) >= 4 and head[1:4] == b"\x2a\x4d\x18" and head[0] & 0xF0 == 0x50
    )


def _gc_label_key(media_type: str) -> str:
    if media_type in oci.CONFIGS:
        return f"{LABEL_GC_REF_CONTENT}.config"
    if media_type in oci.MANIFESTS:
        return f"{LABEL_GC_REF_CONTENT}.m."
    if media_type in oci.LAYERS or media_type.startswith("application/vnd.oci.image.layer."):
        return f"{LABEL_GC_REF_CONTENT}.l."
    return f"{LABEL_GC_REF_CONTENT}."


@dataclass
class _Contents:
    blobs: dict[str, tuple[str, int]] = field(default_factory=dict)  # path -> digest, size
    small: dict[str, bytes] = field(default_factory=dict)  # oci-layout, index.json, manifest.json
    links: dict[str, str] = field(default_factory=dict)  # path -> the path it links to


class ArchiveImporter:
    def __init__(
        self,
        content: Store,
        images: ImageStore,
        leases: LeaseManager,
        snapshotter: Callable[[str], Snapshotter],
        applier: Applier,
    ) -> None:
        self.content = content
        self.images = images
        self.leases = leases
        self.snapshotter = snapshotter
        self.applier = applier

    def import_archive(
        self, source: Readable, opts: ImportOptions, progress: ProgressFn = lambda p: None
    ) -> list[Image]:
        """Import the tar read from ``source``; returns the images recorded (maybe none, as
        containerd: an image nothing names is not recorded)."""
        namespace = request_context.require_namespace()
        expires = (datetime.now(UTC) + timedelta(hours=24)).strftime("%Y-%m-%dT%H:%M:%SZ")
        lease = self.leases.create("", {LABEL_GC_EXPIRE: expires})
        try:
            with request_context.using(namespace=namespace, lease=lease.id):
                return _Import(self, lease.id, opts, progress).run(source)
        finally:
            self.leases.delete(lease.id)


class _Import:
    def __init__(
        self, importer: ArchiveImporter, lease: str, opts: ImportOptions, progress: ProgressFn
    ) -> None:
        self.x = importer
        self.content = importer.content
        self.lease = lease
        self.opts = opts
        self.progress = progress
        self.token = secrets.token_hex(6)
        self.refs = 0
        self.seen: set[str] = set()
        self.held: set[str] = set()  # blobs this import wrote or holds in its lease
        self.manifests: list[tuple[Descriptor, Descriptor, list[Descriptor]]] = []

    def run(self, source: Readable) -> list[Image]:
        self.progress(Progress("", "Importing"))
        contents = self._read_tar(TarStream(source))
        if "oci-layout" in contents.small:
            root, data = self._oci_root(contents)
        elif "manifest.json" in contents.small:
            root, data = self._docker_root(contents)
        else:
            raise InvalidArgument(
                "unrecognized image archive: neither an OCI layout (oci-layout, index.json) "
                "nor a docker save archive (manifest.json)"
            )
        entries = oci.index_entries(data)
        for entry in entries:
            self._present(entry.desc, "index.json")  # never record a name for a missing image
        self._visit(root, "the archive")
        self._unpack()
        images = self._record(root, [e.desc for e in entries])
        self.progress(Progress("", "Completed import"))
        return images

    # -- step 1: the tar ----------------------------------------------------------

    def _read_tar(self, tar: TarStream) -> _Contents:
        found = _Contents()
        for member in tar.members():
            if member.type == tarfile.SYMTYPE:
                target = posixpath.join(posixpath.dirname(member.name), member.linkname)
                found.links[member.name] = posixpath.normpath(target)
            elif member.type == tarfile.LNKTYPE:
                found.links[member.name] = posixpath.normpath(member.linkname)
            elif member.type not in tarfile.REGULAR_TYPES:
                continue
            elif member.name in _SMALL_FILES:
                if member.size > oci.MAX_MANIFEST_SIZE:
                    raise InvalidArgument(
                        f"archive: {member.name} is {member.size} bytes, over the "
                        f"{oci.MAX_MANIFEST_SIZE}-byte limit"
                    )
                found.small[member.name] = b"".join(tar.chunks())
            else:
                digest = self._ingest(member, tar.chunks())
                found.blobs[member.name] = (digest, member.size)
        return found

    def _ref(self, what: str) -> str:
        """A fresh ingest ref: the stream cannot seek, so an ingest is never resumed."""
        self.refs += 1
        return f"import-{self.token}-{self.refs}-{re.sub(r'[^A-Za-z0-9._-]', '_', what)[:80]}"

    def _hold(self, digest: str) -> None:
        """Keep a blob that was already there for this import: the lease holds it too."""
        if digest not in self.held:
            self.x.leases.add_resource(self.lease, Resource(digest, "content"))
            self.held.add(digest)

    def _ingest(self, member: Member, chunks: Iterator[bytes]) -> str:
        """Write one member; its name says its digest (``blobs/<alg>/<hex>``) or not."""
        parts = member.name.split("/")
        expected = ""
        if len(parts) == 3 and parts[0] == "blobs":
            with contextlib.suppress(InvalidArgument):
                expected = ":".join(content.parse_digest(f"{parts[1]}:{parts[2]}"))
        return self._write(self._ref(parts[-1]), chunks, member.size, expected, member.name)

    def _write(
        self,
        ref: str,
        chunks: Iterator[bytes],
        size: int,
        expected: str = "",
        what: str = "",
        labels: Mapping[str, str] | None = None,
    ) -> str:
        algorithm = expected.partition(":")[0] if expected else "sha256"
        try:
            writer = self.content.writer(ref, size, expected)
        except AlreadyExists:
            for _ in chunks:
                pass
            self._hold(expected)
            return expected
        try:
            h = hashlib.new(algorithm)
            written = 0
            for chunk in chunks:
                h.update(chunk)
                writer.write(chunk)
                written += len(chunk)
            digest = f"{algorithm}:{h.hexdigest()}"
            if expected and digest != expected:
                raise DataLoss(f"archive: {what} does not match its digest: the bytes are {digest}")
            try:
                writer.commit(written, digest, labels)
                self.held.add(digest)
            except AlreadyExists:
                self._hold(digest)
            return digest
        except BaseException:
            writer.close()
            with contextlib.suppress(BerthError):
                self.content.abort(ref)
            raise
        finally:
            writer.close()

    def _put(self, data: bytes, media_type: str, what: str) -> Descriptor:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self._write(self._ref(what), iter([data]), len(data), digest, what)
        return Descriptor(media_type, digest, len(data))

    # -- step 2: the root -----------------------------------------------------------

    def _oci_root(self, contents: _Contents) -> tuple[Descriptor, bytes]:
        layout = oci.parse_json(contents.small["oci-layout"], "oci-layout")
        version = layout.get("imageLayoutVersion")
        if version != LAYOUT_VERSION:
            raise InvalidArgument(f"archive: unsupported OCI layout version {version!r}")
        data = contents.small.get("index.json")
        if data is None:
            raise InvalidArgument(f"archive: OCI layout {LAYOUT_VERSION} without index.json")
        oci.parse_json(data, "index.json")
        return self._put(data, oci.MT_OCI_INDEX, "index.json"), data

    def _docker_root(self, contents: _Contents) -> tuple[Descriptor, bytes]:
        try:
            images = json.loads(contents.small["manifest.json"])
        except ValueError as e:
            raise InvalidArgument(f"archive: manifest.json is not valid JSON: {e}") from e
        if not isinstance(images, list) or not all(isinstance(i, dict) for i in images):
            raise InvalidArgument("archive: manifest.json must be a list of objects")
        blobs = dict(contents.blobs)
        for name, target in contents.links.items():
            if target not in blobs:
                raise InvalidArgument(f"archive: no target for link {name!r} to {target!r}")
            blobs[name] = blobs[target]
        entries = []
        for image in images:
            config_path = str(image.get("Config", ""))
            if config_path not in blobs:
                raise InvalidArgument(f"archive: image config {config_path!r} not found")
            config = Descriptor(oci.MT_DOCKER_CONFIG, *blobs[config_path])
            layers = [self._docker_layer(str(p), blobs) for p in image.get("Layers") or []]
            manifest = go_json({
                "schemaVersion": 2, "mediaType": oci.MT_DOCKER_MANIFEST,
                "config": descriptor_json(config),
                "layers": [descriptor_json(layer) for layer in layers],
            })  # fmt: skip
            desc = self._put(manifest, oci.MT_DOCKER_MANIFEST, "manifest.json")
            platform = config_platform(oci.parse_json(self._read(config), "image config"))
            for tag in image.get("RepoTags") or [None]:
                annotations = {}
                if tag is not None:
                    name = normalize(str(tag))
                    annotations = {oci.ANNOTATION_IMAGE_NAME: name,
                                   oci.ANNOTATION_REF_NAME: reference_object(name)}  # fmt: skip
                entry = Descriptor(desc.media_type, desc.digest, desc.size, annotations)
                entries.append(descriptor_json(entry, platform))
        data = go_json({"schemaVersion": 2, "manifests": entries})
        return self._put(data, oci.MT_OCI_INDEX, "index.json"), data

    def _docker_layer(self, path: str, blobs: Mapping[str, tuple[str, int]]) -> Descriptor:
        if path not in blobs:
            raise InvalidArgument(f"archive: layer {path!r} not found")
        digest, size = blobs[path]
        # A compressed form of it in the store already (containerd looks too): that one.
        for info in self.content.walk([f'labels."{oci.LABEL_UNCOMPRESSED}"=={digest}']):
            self._hold(info.digest)
            return Descriptor(self._layer_type(info.digest, info.size), info.digest, info.size)
        media_type = self._layer_type(digest, size)
        if media_type == MT_DOCKER_LAYER and self.opts.force_compress:
            return self._gzip(digest)
        return Descriptor(media_type, digest, size)

    def _layer_type(self, digest: str, size: int) -> str:
        head = b"".join(self.content.read(digest, 0, min(size, 10))) if size else b""
        return MT_DOCKER_LAYER_GZIP if _compressed(head) else MT_DOCKER_LAYER

    def _gzip(self, digest: str) -> Descriptor:
        compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 31)
        size = 0

        def compressed() -> Iterator[bytes]:
            nonlocal size
            for chunk in self.content.read(digest):
                if out := compressor.compress(chunk):
                    size += len(out)
                    yield out
            out = compressor.flush()
            size += len(out)
            yield out

        labels = {oci.LABEL_UNCOMPRESSED: digest}
        written = self._write(self._ref("compress"), compressed(), 0, labels=labels)
        return Descriptor(MT_DOCKER_LAYER_GZIP, written, size)

    # -- step 3: the walk -------------------------------------------------------------

    def _present(self, desc: Descriptor, parent: str) -> Info:
        try:
            info = self.content.info(desc.digest)
        except NotFound:
            raise InvalidArgument(
                f"archive: {parent} names {desc.digest} ({desc.media_type}), "
                "which is neither in the archive nor in the content store"
            ) from None
        if info.size != desc.size:
            raise InvalidArgument(
                f"archive: {parent} says {desc.digest} has {desc.size} bytes; it has {info.size}"
            )
        self._hold(desc.digest)
        return info

    def _read(self, desc: Descriptor) -> bytes:
        if desc.size > oci.MAX_MANIFEST_SIZE:
            raise InvalidArgument(
                f"archive: {desc.media_type} {desc.digest} is {desc.size} bytes, "
                f"over the {oci.MAX_MANIFEST_SIZE}-byte limit"
            )
        return b"".join(self.content.read(desc.digest))

    def _visit(self, desc: Descriptor, parent: str, layers: bool = True) -> None:
        if desc.digest in self.seen:
            return
        self.seen.add(desc.digest)
        self._present(desc, parent)
        if desc.media_type in oci.INDEXES:
            entries = oci.index_entries(self._read(desc))
            self._label(desc, [e.desc for e in entries])
            chosen, others = self._choose(entries)
            for e in chosen:
                self._visit(e.desc, desc.digest)
            for e in others:
                self._visit(e.desc, desc.digest, layers=False)
        elif desc.media_type in oci.MANIFESTS:
            doc = oci.parse_json(self._read(desc), f"manifest {desc.digest}")
            if not isinstance(doc.get("config"), dict):
                raise InvalidArgument(f"archive: manifest {desc.digest} has no config")
            config = oci.descriptor_from_json(doc["config"])
            children = [oci.descriptor_from_json(d) for d in doc.get("layers") or []]
            self._label(desc, [config, *children])
            self._present(config, desc.digest)
            if layers:
                for layer in children:
                    self._present(layer, desc.digest)
                self.manifests.append((desc, config, children))

    def _choose(
        self, entries: Sequence[oci.IndexEntry]
    ) -> tuple[list[oci.IndexEntry], list[oci.IndexEntry]]:
        """The entries to walk whole, and those (all_metadata) to check without layers."""
        wanted = self.opts.platforms
        if wanted is None:
            return list(entries), []

        def rank(e: oci.IndexEntry) -> int:
            plat = e.platform
            found = (i for i, p in enumerate(wanted) if plat and oci.platform_matches(p, plat))
            return -1 if plat is None else next(found, len(wanted))

        chosen = [e for e in entries if rank(e) < len(wanted)]
        if self.opts.manifest_limit:
            chosen = sorted(chosen, key=lambda e: len(wanted) if e.platform is None else rank(e))
            chosen = chosen[: self.opts.manifest_limit]
        others = [e for e in entries if e not in chosen] if self.opts.all_metadata else []
        return chosen, others

    def _label(self, parent: Descriptor, children: Sequence[Descriptor]) -> None:
        """containerd's SetChildrenMappedLabels with ChildGCLabels: one counter per kind."""
        labels: dict[str, str] = {}
        counts: dict[str, int] = {}
        for child in children:
            key = _gc_label_key(child.media_type)
            index = counts.get(key, 0)
            counts[key] = index + 1
            labels[f"{key}{index}" if index or key.endswith(".") else key] = child.digest
        self._set_labels(parent.digest, labels)

    def _set_labels(self, digest: str, labels: Mapping[str, str]) -> None:
        if labels:
            self.content.update(Info(digest, 0, 0, 0, labels), [f"labels.{k}" for k in labels])

    # -- step 4: unpack --------------------------------------------------------------

    def _unpack(self) -> None:
        if not self.opts.unpacks:
            return
        for desc, config, layers in self.manifests:
            data = self._read(config)
            plat = config_platform(oci.parse_json(data, f"image config {config.digest}"))
            have = oci.Platform(plat["os"], plat["architecture"], plat.get("variant", ""))
            for unpack in self.opts.unpacks:
                if oci.platform_matches(unpack.platform, have):
                    diff_ids = oci.diff_ids(data)
                    self._unpack_manifest(desc, config, layers, diff_ids, unpack.snapshotter)
                    break

    def _unpack_manifest(
        self,
        desc: Descriptor,
        config: Descriptor,
        layers: Sequence[Descriptor],
        diff_ids: Sequence[str],
        snapshotter_name: str,
    ) -> None:
        if len(diff_ids) != len(layers):
            raise InvalidArgument(
                f"archive: manifest {desc.digest} has {len(layers)} layers "
                f"but its config {len(diff_ids)} diff IDs"
            )
        snapshotter = self.x.snapshotter(snapshotter_name)
        parent = ""
        chains = chain_ids(diff_ids)
        for layer, diff_id, chain in zip(layers, diff_ids, chains, strict=True):
            if layer.media_type not in oci.LAYERS:
                raise InvalidArgument(f"archive: layer {layer.digest}: cannot unpack "
                                      f"media type {layer.media_type!r}")  # fmt: skip
            try:
                snapshotter.stat(chain)
            except NotFound:
                name = f"layer-{layer.digest}"
                self.progress(Progress(name, "unpacking", total=layer.size))
                apply_layer(snapshotter, self.x.applier, Layer(layer, diff_id), chain, parent)
                self.progress(Progress(name, "unpacked", layer.size, layer.size))
            self._set_labels(layer.digest, {oci.LABEL_UNCOMPRESSED: diff_id})
            parent = chain
        if chains:
            label = f"{LABEL_GC_REF_SNAPSHOT}{snapshotter_name}"
            self._set_labels(config.digest, {label: chains[-1]})

    # -- step 5: names --------------------------------------------------------------

    def _record(self, root: Descriptor, entries: Sequence[Descriptor]) -> list[Image]:
        wanted = [Image(n, root, self.opts.labels) for n in names_for(root, False, self.opts)]
        for entry in entries:
            wanted += [Image(n, entry, self.opts.labels) for n in names_for(entry, True, self.opts)]
        recorded = []
        for image in wanted:
            try:
                recorded.append(self.x.images.create(image))
            except AlreadyExists:
                recorded.append(self.x.images.update(image))
            self.progress(Progress(image.name, "saved"))
        if not wanted:
            log.info("import: no image in the archive got a name; nothing recorded")
        return recorded
