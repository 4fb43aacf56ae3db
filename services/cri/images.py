"""CRI images over the suite's image records, as containerd's CRI plugin keeps them.

A CRI image is identified by its config digest (the image ID). A pull records up to
three names for one image, as containerd does: the reference pulled
(``docker.io/library/busybox:latest``), its repository digest
(``docker.io/library/busybox@sha256:<manifest>``) and the ID itself
(``sha256:<config>``). Listing groups the namespace's records by ID; removing an
image removes every name that points at it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.errors import InvalidArgument, NotFound
from shared.registry import reference

if TYPE_CHECKING:
    import berth

NAMESPACE = "k8s.io"
# Labels containerd's CRI puts on the records it makes; ctr and kubelet tooling read them.
MANAGED_LABEL = "io.cri-containerd.image"
MANAGED = "managed"
PINNED_LABEL = "io.cri-containerd.pinned"
PINNED = "pinned"
_ID = re.compile(r"(?:sha256:)?([a-f0-9]{64})\Z")


@dataclass(frozen=True)
class CriImage:
    """What ``ListImages`` and ``ImageStatus`` report for one image ID."""

    id: str
    repo_tags: list[str] = field(default_factory=list)
    repo_digests: list[str] = field(default_factory=list)
    size: int = 0
    uid: int | None = None
    username: str = ""
    pinned: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    chain_id: str = ""


@dataclass(frozen=True)
class Credentials:
    """A CRI ``AuthConfig``, reduced to what a registry login takes."""

    username: str = ""
    password: str = ""
    auth: str = ""  # base64 of "user:password", as in a docker config.json
    identity_token: str = ""
    registry_token: str = ""

    def login(self) -> tuple[str, str] | None:
        if self.auth:
            try:
                user, _, secret = base64.b64decode(self.auth).decode().partition(":")
            except ValueError as e:
                raise InvalidArgument(f"auth is not base64 of user:password: {e}") from None
            return user, secret
        if self.username or self.password:
            return self.username, self.password
        if self.registry_token:
            return "", self.registry_token
        if self.identity_token:
            return "", self.identity_token
        return None


@dataclass(frozen=True)
class _Summary:
    """What the content says about one manifest: immutable, so cached by its digest."""

    config_digest: str
    size: int
    user: str
    config: dict[str, Any]
    chain_id: str


def image_id(value: str) -> str | None:
    """``sha256:<hex>`` when ``value`` is an image ID (with or without the algorithm)."""
    match = _ID.match(value)
    return f"sha256:{match.group(1)}" if match else None


def _is_digest_name(name: str) -> bool:
    return "@" in name


class CriImages:
    """ImageService's logic over a berth client bound to the ``k8s.io`` namespace."""

    def __init__(self, client: berth.Client, snapshotter: str = "overlayfs") -> None:
        self._client = client
        self._snapshotter = snapshotter
        self._summaries: dict[str, _Summary] = {}
        self._lock = threading.Lock()

    # -- reading ---------------------------------------------------------------

    def _summary(self, image: berth.Image) -> _Summary:
        key = image.target.digest
        with self._lock:
            known = self._summaries.get(key)
        if known is not None:
            return known
        config = image.config()
        user = str((config.get("config") or {}).get("User") or "")
        summary = _Summary(
            image.config_descriptor().digest, image.size(), user, config, image.chain_id()
        )
        with self._lock:
            self._summaries[key] = summary
        return summary

    def _records(self) -> list[berth.Image]:
        return self._client.list_images()

    def _group(self, records: Iterable[berth.Image]) -> dict[str, list[berth.Image]]:
        groups: dict[str, list[berth.Image]] = {}
        for record in records:
            try:
                summary = self._summary(record)
            except NotFound:
                continue  # content not (or no longer) there: not an image kubelet can use
            groups.setdefault(summary.config_digest, []).append(record)
        return groups

    def _describe(self, config_digest: str, records: list[berth.Image]) -> CriImage:
        summary = self._summary(records[0])
        tags: list[str] = []
        digests: list[str] = []
        for record in sorted(records, key=lambda r: r.name):
            name = record.name
            if image_id(name):
                continue
            if _is_digest_name(name):
                repository = name.partition("@")[0]
            else:
                repository = name.rpartition(":")[0]
                tags.append(name)
            digest = f"{repository}@{record.target.digest}"
            if digest not in digests:
                digests.append(digest)
        uid, username = _user(summary.user)
        pinned = any(r.labels.get(PINNED_LABEL) == PINNED for r in records)
        return CriImage(
            config_digest, tags, digests, summary.size, uid, username, pinned,
            summary.config, summary.chain_id,
        )  # fmt: skip

    def list(self, wanted: str = "") -> list[CriImage]:
        """Every image of the namespace, or those ``wanted`` (a name or ID) resolves to."""
        if wanted:
            found = self.status(wanted)
            return [found] if found else []
        groups = self._group(self._records())
        return [self._describe(config_digest, group) for config_digest, group in groups.items()]

    def resolve(self, ref_or_id: str) -> str | None:
        """The image ID a reference or ID names here, or None."""
        if not ref_or_id:
            raise InvalidArgument("no image named")
        wanted_id = image_id(ref_or_id)
        if wanted_id is None:
            name = reference.normalize(ref_or_id)
            try:
                return self._summary(self._client.get_image(name)).config_digest
            except NotFound:
                return None
        if wanted_id in self._group(self._records()):
            return wanted_id
        return None

    def record(self, image_id_: str) -> berth.Image:
        """An image record of the ID ``image_id_`` (the ID's own name when there is one)."""
        import berth

        with contextlib.suppress(berth.NotFound):
            return self._client.get_image(image_id_)
        group = self._group(self._records()).get(image_id_)
        if not group:
            raise NotFound(f"image {image_id_}: not found")
        return sorted(group, key=lambda r: r.name)[0]

    def status(self, ref_or_id: str) -> CriImage | None:
        """The image ``ref_or_id`` names (tag, digest reference or ID), None if absent."""
        found = self.resolve(ref_or_id)
        if found is None:
            return None
        group = self._group(self._records()).get(found)
        return self._describe(found, group) if group else None

    # -- changing --------------------------------------------------------------

    def pull(
        self,
        ref: str,
        credentials: Credentials | None = None,
        progress: Callable[[Any], None] | None = None,
    ) -> str:
        """Pull and unpack ``ref``; returns the image ID, as containerd's CRI does."""
        name = reference.normalize(ref)
        login = credentials.login() if credentials else None
        image = self._client.pull(
            name,
            snapshotter=self._snapshotter,
            labels={MANAGED_LABEL: MANAGED},
            credentials=(lambda host: login) if login else None,
            progress=progress,
        )
        summary = self._summary(image)
        parsed = reference.parse(name)
        for extra in (f"{parsed.name}@{image.target.digest}", summary.config_digest):
            if extra != name:
                self._point(extra, image)
        return summary.config_digest

    def _point(self, name: str, image: berth.Image) -> None:
        """Make ``name`` an image record for ``image``'s target (moving it if it was
        another's)."""
        import berth

        try:
            existing = self._client.get_image(name)
        except NotFound:
            # AlreadyExists: made meanwhile by a concurrent pull of the same image.
            with contextlib.suppress(berth.AlreadyExists):
                self._client.create_image(name, image.target, {MANAGED_LABEL: MANAGED})
            return
        if existing.target.digest != image.target.digest:
            self._client.delete_image(name)
            self._client.create_image(name, image.target, {MANAGED_LABEL: MANAGED})

    def pin(self, image_id_: str) -> None:
        """Mark every name of the image pinned (``io.cri-containerd.pinned=pinned``):
        kubelet's image garbage collection leaves pinned images alone, as containerd's
        CRI pins its sandbox image."""
        for record in self._group(self._records()).get(image_id_, []):
            if record.labels.get(PINNED_LABEL) != PINNED:
                record.set_labels({PINNED_LABEL: PINNED})

    def remove(self, ref_or_id: str) -> None:
        """Remove every name of the image ``ref_or_id`` names; absent is fine (kubelet
        retries removals)."""
        found = self.resolve(ref_or_id)
        if found is None:
            return
        records = self._group(self._records()).get(found, [])
        # The ID last: while any name remains, the image stays findable by ID.
        for record in sorted(records, key=lambda r: image_id(r.name) is not None):
            with contextlib.suppress(NotFound):
                self._client.delete_image(record.name)

    # -- file system -------------------------------------------------------------

    def filesystem_usage(self) -> tuple[str, int, int]:
        """(mount point, bytes, inodes) of the snapshotter's store, summed over the
        namespace's snapshots as containerd's CRI does."""
        snapshots = self._client.snapshot_service(self._snapshotter)
        used = inodes = 0
        for info in snapshots.walk():
            try:
                usage = snapshots.usage(info.name)
            except NotFound:
                continue  # removed meanwhile
            used += usage.size
            inodes += usage.inodes
        return self.snapshotter_root(), used, inodes

    def snapshotter_root(self) -> str:
        # One filter with both terms: separate filters would match either.
        for plugin in self._client.plugins(
            f"type==io.containerd.snapshotter.v1,id=={self._snapshotter}"
        ):
            root = plugin.exports.get("root")
            if root:
                return str(root)
        return ""


def _user(value: str) -> tuple[int | None, str]:
    """An image's ``User`` as CRI reports it: a uid when numeric, else a name."""
    user = value.partition(":")[0]
    if not user:
        return None, ""
    if user.isdigit():
        return int(user), ""
    return None, user


def verbose_info(image: CriImage) -> dict[str, str]:
    """``ImageStatus(verbose=True)``'s ``info``: the image config and chain ID as JSON."""
    return {
        "info": json.dumps(
            {"imageSpec": image.config, "chainID": image.chain_id, "id": image.id},
            sort_keys=True,
        )
    }
