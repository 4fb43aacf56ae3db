"""Exporting images to a byte stream as an OCI layout tar (containerd's ``archive.Export``).

The archive is the one ``ctr images export`` writes (containerd 1.7):

* ``oci-layout``;
* ``index.json``: one entry per image name, the image's target with
  ``io.containerd.image.name`` (the name) and ``org.opencontainers.image.ref.name``
  (its tag) added to its annotations;
* ``blobs/<alg>/<hex>``: every blob reached from those targets. From an index
  only the manifests of the wanted platforms (the host's by default) are
  followed, unless ``all_platforms``;
* docker's ``manifest.json`` (``Config``, ``RepoTags``, ``Layers``, one entry
  per manifest, the names familiar: ``alpine:latest``) unless
  ``skip_compatibility_manifest``, so that ``docker load`` reads it too.

Members are sorted by name, as containerd sorts them. Everything is checked
before the first byte goes out (blobs present with their sizes); blobs then
stream from the content store into the writer and are verified on the way.
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from services.images.archive_names import descriptor_json, go_json, reference_object
from services.images.pull import Progress, ProgressFn
from shared import content, oci
from shared.diff import Descriptor
from shared.errors import DataLoss, InvalidArgument, NotFound
from shared.images import ImageStore
from shared.registry.reference import DOCKER_HOST, OFFICIAL_PREFIX, normalize

LAYOUT = go_json({"imageLayoutVersion": "1.0.0"})
_BLOCK = 512
_NON_DISTRIBUTABLE = (
    "application/vnd.oci.image.layer.nondistributable.",
    "application/vnd.docker.image.rootfs.foreign.",
)
_COALESCE = 64 << 10  # smaller writes (headers, padding, JSON) are gathered up to this


class Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...


@dataclass
class ExportOptions:
    platforms: Sequence[oci.Platform] | None = None  # None: the host's
    all_platforms: bool = False
    skip_compatibility_manifest: bool = False
    skip_non_distributable: bool = False


def familiar_name(name: str) -> str:
    """Docker's short form of a name: ``docker.io/library/alpine:latest`` -> ``alpine:latest``."""
    full = normalize(name)
    if not full.startswith(f"{DOCKER_HOST}/"):
        return full
    rest = full.removeprefix(f"{DOCKER_HOST}/")
    path = rest.split("@", 1)[0].split(":", 1)[0]
    if path.startswith(OFFICIAL_PREFIX) and path.count("/") == 1:
        return rest.removeprefix(OFFICIAL_PREFIX)
    return rest


def non_distributable(media_type: str) -> bool:
    return media_type.startswith(
        (
            "application/vnd.oci.image.layer.nondistributable.",
            "application/vnd.docker.image.rootfs.foreign.",
        )
    )


def _blob_path(digest: str) -> str:
    algorithm, hexdigest = content.parse_digest(digest)
    return f"blobs/{algorithm}/{hexdigest}"


@dataclass
class _Plan:
    """What goes into the archive: blobs by path, and manifests for manifest.json."""

    blobs: dict[str, Descriptor] = field(default_factory=dict)
    docker: dict[str, tuple[Descriptor, list[str]]] = field(default_factory=dict)


class ArchiveExporter:
    def __init__(self, content: content.Provider, images: ImageStore) -> None:
        self.content = content
        self.images = images

    def export(
        self,
        out: Writable,
        names: Sequence[str],
        opts: ExportOptions,
        progress: ProgressFn = lambda p: None,
    ) -> None:
        """Write the archive of the images ``names`` (of the request's namespace) to ``out``."""
        if not names:
            raise InvalidArgument("export needs at least one image name")
        progress(Progress("", "Exporting"))
        targets = []
        for name in names:
            target = self.images.get(name).target
            annotations = {**target.annotations, oci.ANNOTATION_IMAGE_NAME: name,
                           oci.ANNOTATION_REF_NAME: reference_object(name)}  # fmt: skip
            targets.append(Descriptor(target.media_type, target.digest, target.size, annotations))
        plan = _Plan()
        for target in targets:
            self._plan_image(plan, target, opts)
        index = {
            "schemaVersion": 2,
            "mediaType": oci.MT_OCI_INDEX,
            "manifests": [descriptor_json(t) for t in targets],
        }
        files = {"oci-layout": LAYOUT, "index.json": go_json(index)}
        if not opts.skip_compatibility_manifest and plan.docker:
            files["manifest.json"] = self._docker_manifests(plan)
        _TarWriter(out, self.content).write(plan.blobs, files)
        progress(Progress("", "Completed export"))

    def _plan_image(self, plan: _Plan, target: Descriptor, opts: ExportOptions) -> None:
        name = target.annotations[oci.ANNOTATION_IMAGE_NAME]
        if target.media_type in oci.MANIFESTS:
            self._walk(plan, target, opts)
            plan.docker.setdefault(target.digest, (target, []))[1].append(name)
        elif target.media_type in oci.INDEXES:
            self._add(plan, target, opts)
            wanted = list(opts.platforms or [oci.host_platform()])
            chosen = []
            for entry in oci.index_entries(self._read(target)):
                plat = entry.platform
                if plat is None or any(oci.platform_matches(p, plat) for p in wanted):
                    chosen.append(entry)
                elif not opts.all_platforms:
                    continue
                self._walk(plan, entry.desc, opts)
            if not chosen:
                shown = ", ".join(map(str, wanted))
                raise NotFound(f"image {name}: no manifest for platform {shown}")

            def preference(e: oci.IndexEntry) -> int:
                plat = e.platform
                ranks = (i for i, p in enumerate(wanted) if plat and oci.platform_matches(p, plat))
                return next(ranks, len(wanted))

            best = min(chosen, key=preference).desc
            if best.media_type in oci.MANIFESTS:
                plan.docker.setdefault(best.digest, (best, []))[1].append(name)
        else:
            raise InvalidArgument(
                f"image {name}: only manifests and indexes may be exported, not {target.media_type}"
            )

    def _add(self, plan: _Plan, desc: Descriptor, opts: ExportOptions) -> None:
        try:
            info = self.content.info(desc.digest)
        except NotFound:
            raise NotFound(
                f"export: {desc.digest} ({desc.media_type}) is not in the content store"
            ) from None
        if info.size != desc.size:
            raise DataLoss(f"export: {desc.digest} has {info.size} bytes, not {desc.size}")
        if not (opts.skip_non_distributable and non_distributable(desc.media_type)):
            plan.blobs[_blob_path(desc.digest)] = desc

    def _read(self, desc: Descriptor) -> bytes:
        if desc.size > oci.MAX_MANIFEST_SIZE:
            raise InvalidArgument(f"export: {desc.digest} is {desc.size} bytes, too big")
        return b"".join(self.content.read(desc.digest))

    def _walk(self, plan: _Plan, desc: Descriptor, opts: ExportOptions) -> None:
        """The blob and everything below it, every platform (containerd's ChildrenHandler)."""
        self._add(plan, desc, opts)
        if desc.media_type in oci.INDEXES:
            for entry in oci.index_entries(self._read(desc)):
                self._walk(plan, entry.desc, opts)
        elif desc.media_type in oci.MANIFESTS:
            doc = oci.parse_json(self._read(desc), f"manifest {desc.digest}")
            if isinstance(doc.get("config"), dict):
                self._add(plan, oci.descriptor_from_json(doc["config"]), opts)
            for layer in doc.get("layers") or []:
                self._add(plan, oci.descriptor_from_json(layer), opts)

    def _docker_manifests(self, plan: _Plan) -> bytes:
        entries = []
        for manifest, names in plan.docker.values():
            doc = oci.parse_json(self._read(manifest), f"manifest {manifest.digest}")
            config = oci.descriptor_from_json(doc.get("config"))
            layers = [oci.descriptor_from_json(d) for d in doc.get("layers") or []]
            entries.append({
                "Config": _blob_path(config.digest),
                "RepoTags": [familiar_name(n) for n in names] or None,
                "Layers": [_blob_path(d.digest) for d in layers] or None,
            })  # fmt: skip
        return go_json(entries)


class _TarWriter:
    """A tar as Go's archive/tar writes it: USTAR headers, mtime 0, two zero blocks at the end."""

    def __init__(self, out: Writable, provider: content.Provider) -> None:
        self._out = out
        self._provider = provider
        self._pending = bytearray()

    def _emit(self, data: bytes) -> None:
        if len(self._pending) + len(data) > _COALESCE:
            self._flush()
        if len(data) >= _COALESCE:
            self._out.write(data)
        else:
            self._pending += data

    def _flush(self) -> None:
        if self._pending:
            self._out.write(bytes(self._pending))
            self._pending.clear()

    def _header(self, name: str, size: int, mode: int, directory: bool = False) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = size, mode, 0
        info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
        self._emit(info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict"))

    def _pad(self, size: int) -> None:
        self._emit(bytes(-size % _BLOCK))

    def write(self, blobs: Mapping[str, Descriptor], files: Mapping[str, bytes]) -> None:
        records: dict[str, Descriptor | bytes | None] = {**blobs, **files}
        for path in blobs:
            records["blobs/"] = records[path.rsplit("/", 1)[0] + "/"] = None
        for name in sorted(records):
            record = records[name]
            if record is None:
                self._header(name, 0, 0o755, directory=True)
            elif isinstance(record, bytes):
                self._header(name, len(record), 0o444 if name == "oci-layout" else 0o644)
                self._emit(record)
                self._pad(len(record))
            else:
                self._header(name, record.size, 0o444)
                self._blob(record)
                self._pad(record.size)
        self._emit(bytes(2 * _BLOCK))
        self._flush()

    def _blob(self, desc: Descriptor) -> None:
        algorithm, _ = content.parse_digest(desc.digest)
        h = hashlib.new(algorithm)
        size = 0
        for chunk in self._provider.read(desc.digest):
            h.update(chunk)
            size += len(chunk)
            if size > desc.size:
                break
            self._emit(chunk)
        if size != desc.size or f"{algorithm}:{h.hexdigest()}" != desc.digest:
            raise DataLoss(f"export: blob {desc.digest} in the content store is corrupt")
