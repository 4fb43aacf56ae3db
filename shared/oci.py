"""OCI and Docker image formats: media types, walking an image, platforms.

What containerd's ``images`` package does for handlers: which descriptors an
index or manifest refers to, which platform a manifest is for, which children
to keep (``containerd.io/gc.ref.content.*`` labels), and what the config says
about the layers' diff IDs.
"""

from __future__ import annotations

import json
import platform as host_platform_module
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shared import content
from shared.diff import Descriptor
from shared.errors import InvalidArgument

MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"

INDEXES = frozenset({MT_OCI_INDEX, MT_DOCKER_LIST})
MANIFESTS = frozenset({MT_OCI_MANIFEST, MT_DOCKER_MANIFEST})
CONFIGS = frozenset({MT_OCI_CONFIG, MT_DOCKER_CONFIG})
LAYERS = frozenset(
    {
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.diff.tar",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    }
)
MAX_MANIFEST_SIZE = 4 << 20  # as containerd: a bigger manifest is refused

LABEL_DISTRIBUTION_SOURCE = "containerd.io/distribution.source."
LABEL_UNCOMPRESSED = "containerd.io/uncompressed"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "i386": "386"}


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def host_platform() -> Platform:
    arch = _ARCH.get(host_platform_module.machine(), host_platform_module.machine())
    return Platform("linux", arch, "v8" if arch == "arm64" else "")


def parse_platform(text: str) -> Platform:
    """``linux/arm64/v8``, ``linux/amd64``, or just ``arm64`` (os defaults to linux)."""
    parts = [p for p in text.strip().lower().split("/") if p]
    if not parts or len(parts) > 3:
        raise InvalidArgument(f"invalid platform {text!r}: want os/arch[/variant]")
    if len(parts) == 1:
        parts = ["linux", parts[0]]
    arch = _ARCH.get(parts[1], parts[1])
    variant = parts[2] if len(parts) == 3 else ("v8" if arch == "arm64" else "")
    return Platform(parts[0], arch, variant)


def platform_matches(wanted: Platform, candidate: Platform) -> bool:
    """containerd's matcher: same os and architecture; a variant must agree when both have one
    (arm64 with no variant means v8)."""
    if wanted.os != candidate.os or wanted.architecture != candidate.architecture:
        return False
    want_variant = wanted.variant or ("v8" if wanted.architecture == "arm64" else "")
    have_variant = candidate.variant or ("v8" if candidate.architecture == "arm64" else "")
    return not want_variant or not have_variant or want_variant == have_variant


def descriptor_from_json(d: Any) -> Descriptor:
    if not isinstance(d, dict):
        raise InvalidArgument("descriptor must be a JSON object")
    try:
        desc = Descriptor(
            media_type=str(d["mediaType"]),
            digest=str(d["digest"]),
            size=int(d["size"]),
            annotations={str(k): str(v) for k, v in (d.get("annotations") or {}).items()},
        )
    except (KeyError, TypeError, ValueError) as e:
        raise InvalidArgument(f"invalid descriptor {json.dumps(d)[:200]}: {e}") from e
    content.parse_digest(desc.digest)
    if desc.size < 0:
        raise InvalidArgument(f"descriptor {desc.digest}: negative size")
    return desc


def descriptor_to_json(desc: Descriptor, platform: Platform | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"mediaType": desc.media_type, "digest": desc.digest, "size": desc.size}
    if desc.annotations:
        out["annotations"] = dict(desc.annotations)
    if platform is not None:
        plat = {"architecture": platform.architecture, "os": platform.os}
        if platform.variant:
            plat["variant"] = platform.variant
        out["platform"] = plat
    return out


def parse_json(data: bytes, what: str) -> dict[str, Any]:
    if len(data) > MAX_MANIFEST_SIZE:
        raise InvalidArgument(f"{what} is {len(data)} bytes, over the {MAX_MANIFEST_SIZE} limit")
    try:
        parsed = json.loads(data)
    except ValueError as e:
        raise InvalidArgument(f"{what} is not valid JSON: {e}") from e
    if not isinstance(parsed, dict):
        raise InvalidArgument(f"{what} must be a JSON object")
    return parsed


@dataclass(frozen=True)
class IndexEntry:
    desc: Descriptor
    platform: Platform | None


def index_entries(data: bytes) -> list[IndexEntry]:
    doc = parse_json(data, "image index")
    entries = []
    for m in doc.get("manifests") or []:
        desc = descriptor_from_json(m)
        p = m.get("platform") if isinstance(m, dict) else None
        plat = (
            Platform(
                str(p.get("os", "")), str(p.get("architecture", "")), str(p.get("variant", ""))
            )
            if isinstance(p, dict)
            else None
        )
        entries.append(IndexEntry(desc, plat))
    return entries


@dataclass(frozen=True)
class Manifest:
    config: Descriptor
    layers: list[Descriptor]


def parse_manifest(data: bytes) -> Manifest:
    doc = parse_json(data, "image manifest")
    if "config" not in doc:
        raise InvalidArgument("image manifest has no config")
    layers = [descriptor_from_json(layer) for layer in doc.get("layers") or []]
    for layer in layers:
        if layer.media_type not in LAYERS:
            raise InvalidArgument(
                f"layer {layer.digest}: unsupported media type {layer.media_type!r}"
            )
    return Manifest(descriptor_from_json(doc["config"]), layers)


def diff_ids(config_data: bytes) -> list[str]:
    doc = parse_json(config_data, "image config")
    ids = (doc.get("rootfs") or {}).get("diff_ids") or []
    for diff_id in ids:
        content.parse_digest(str(diff_id))
    return [str(d) for d in ids]


def select_manifests(
    entries: Sequence[IndexEntry], platforms: Sequence[Platform] | None
) -> list[IndexEntry]:
    """The index entries to fetch: every one for ``None`` (all platforms), else the matches
    (entries without a platform are kept, as containerd does)."""
    if platforms is None:
        return list(entries)
    return [
        e
        for e in entries
        if e.platform is None or any(platform_matches(p, e.platform) for p in platforms)
    ]


def child_label(parent_media_type: str, index: int, child: Descriptor) -> str:
    """containerd's gc.ref label for a child (images.ChildGCLabels)."""
    if parent_media_type in INDEXES:
        return f"containerd.io/gc.ref.content.m.{index}"
    if child.media_type in CONFIGS:
        return "containerd.io/gc.ref.content.config"
    return f"containerd.io/gc.ref.content.l.{index}"
