"""How imported images get their names, and the small JSON shapes archives share.

containerd's transfer ImageStore and ``images/archive`` naming rules: a prefix
reference names each entry of the archive's index by its annotations
(``io.containerd.image.name`` as is, ``org.opencontainers.image.ref.name`` as a
tag on the prefix); a plain reference names the archive's own index.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared import oci
from shared.diff import Descriptor


@dataclass(frozen=True)
class ImageReference:
    """containerd's transfer ImageReference: how an imported image gets a name."""

    name: str
    is_prefix: bool = False  # a name to put a tag on, or to check full names against
    allow_overwrite: bool = False  # a full name in the archive may differ from the prefix
    add_digest: bool = False  # also ``<name>@<digest>``
    skip_named_digest: bool = False  # ... but not when a full name was found


@dataclass(frozen=True)
class Unpack:
    platform: oci.Platform
    snapshotter: str


@dataclass
class ImportOptions:
    name: str = ""  # names the archive's own index (containerd's ImageStore name)
    labels: Mapping[str, str] = field(default_factory=dict)
    platforms: Sequence[oci.Platform] | None = None  # None: every platform
    all_metadata: bool = False  # also check manifests and configs of other platforms
    manifest_limit: int = 0
    references: Sequence[ImageReference] = ()
    unpacks: Sequence[Unpack] = ()
    force_compress: bool = False


def _translator(prefix: str, check_prefix: bool) -> Callable[[str], str]:
    def translate(ref: str) -> str:
        if any(c in ref for c in "/:@"):
            under = ref.startswith(prefix) and (
                len(ref) == len(prefix) or ref[len(prefix)] in "/:@"
            )
            return ref if under or not check_prefix else ""
        return f"{prefix}:{ref}"

    return translate


def _annotated_name(annotations: Mapping[str, str], cleanup: Callable[[str], str]) -> str:
    name = annotations.get(oci.ANNOTATION_IMAGE_NAME, "")
    if name:
        return name if cleanup(name) == name else ""  # a full name is used as is or not at all
    ref = annotations.get(oci.ANNOTATION_REF_NAME, "")
    return cleanup(ref) if ref else ""


def names_for(desc: Descriptor, from_index: bool, opts: ImportOptions) -> list[str]:
    """The names of one image: ``from_index`` for an entry of the archive's index (named by its
    annotations through the prefix references), else the archive's index itself."""
    names: list[str] = []
    if from_index:
        for ref in opts.references:
            if not ref.is_prefix:
                continue
            name = _annotated_name(desc.annotations, _translator(ref.name, not ref.allow_overwrite))
            if name:
                names.append(name)
            if ref.add_digest and not (name and ref.skip_named_digest):
                names.append(f"{ref.name}@{desc.digest}")
        return names
    if opts.name:
        names.append(opts.name)
    for ref in opts.references:
        if not ref.is_prefix:
            names.append(f"{ref.name}@{desc.digest}" if ref.add_digest else ref.name)
    return names


def reference_object(name: str) -> str:
    """The tag (or digest) part of a name, as containerd's ``reference.Parse(name).Object``:
    what ``org.opencontainers.image.ref.name`` carries."""
    host, slash, path = name.partition("/")
    if "://" in name or not slash or not host:
        return ""
    if ":" in host and not host.rpartition(":")[2].isdigit():
        return ""
    at = min((i for i in (path.find(":"), path.find("@")) if i >= 0), default=-1)
    if at < 0:
        return ""
    return path[at + 1 :] if path[at] == ":" else path[at:]


# -- JSON as containerd writes it ------------------------------------------------


def go_json(value: Any) -> bytes:
    """JSON as Go's encoding/json writes it (compact, HTML characters escaped), so that
    manifests built here have the digests containerd's have."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                          ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):  # fmt: skip
        text = text.replace(char, escaped)
    return text.encode()


def descriptor_json(desc: Descriptor, platform: Mapping[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"mediaType": desc.media_type, "digest": desc.digest, "size": desc.size}
    if desc.annotations:
        out["annotations"] = dict(sorted(desc.annotations.items()))
    if platform is not None:
        out["platform"] = platform
    return out


def config_platform(config: Mapping[str, Any]) -> dict[str, Any]:
    """The platform an image config declares, normalized as containerd's platforms.Normalize."""
    os_name = str(config.get("os", "")).lower()
    os_name = "darwin" if os_name == "macos" else os_name
    arch, variant = str(config.get("architecture", "")).lower(), str(config.get("variant", ""))
    variant = variant.lower()
    if arch == "i386":
        arch, variant = "386", ""
    elif arch in ("x86_64", "x86-64", "amd64"):
        arch, variant = "amd64", "" if variant == "v1" else variant
    elif arch in ("aarch64", "arm64"):
        arch, variant = "arm64", "" if variant in ("8", "v8") else variant
    elif arch == "armhf":
        arch, variant = "arm", "v7"
    elif arch == "armel":
        arch, variant = "arm", "v6"
    elif arch == "arm":
        variant = {"": "v7", "7": "v7", "5": "v5", "6": "v6", "8": "v8"}.get(variant, variant)
    platform: dict[str, Any] = {"architecture": arch, "os": os_name}
    if config.get("os.version"):
        platform["os.version"] = str(config["os.version"])
    if config.get("os.features"):
        platform["os.features"] = [str(f) for f in config["os.features"]]
    if variant:
        platform["variant"] = variant
    return platform
