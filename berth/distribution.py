"""Pull, push, import and export: one Transfer call each, done by the suite.

The work runs server side (``containerd.services.transfer.v1.Transfer``); the
client only opens the side streams the call names: progress, registry
credentials, and the archive bytes of an import or export.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, BinaryIO

from shared import oci as formats
from shared.proxy.transfer import CredentialsFn, ProgressFn, TransferClient, TransferProgress

if TYPE_CHECKING:
    from berth.client import Client
    from berth.image import Image

Progress = TransferProgress


def _platforms(platform: str | formats.Platform | None) -> list[formats.Platform]:
    if platform is None:
        return []
    return [formats.parse_platform(platform) if isinstance(platform, str) else platform]


def pull(
    client: Client,
    ref: str,
    *,
    unpack: bool,
    platform: str | formats.Platform | None,
    snapshotter: str | None,
    labels: Mapping[str, str] | None,
    progress: ProgressFn | None,
    credentials: CredentialsFn | None,
) -> Image:
    platforms = _platforms(platform) or [client.platform]
    TransferClient(client._channel).pull(
        ref,
        name=ref,
        platforms=platforms,
        unpack=unpack,
        snapshotter=(snapshotter or client.default_snapshotter()) if unpack else "",
        labels=dict(labels or {}),
        progress=progress,
        credentials=credentials,
    )
    image = client.get_image(ref)
    image.platform = platforms[0]
    return image


def push(
    client: Client,
    ref: str,
    image: Image | str | None,
    *,
    platform: str | formats.Platform | None,
    progress: ProgressFn | None,
    credentials: CredentialsFn | None,
) -> None:
    name = ref if image is None else image if isinstance(image, str) else image.name
    TransferClient(client._channel).push(
        name, ref, platforms=_platforms(platform), progress=progress, credentials=credentials
    )


@contextlib.contextmanager
def _opened(target: str | os.PathLike[str] | BinaryIO, mode: str) -> Iterator[BinaryIO]:
    if isinstance(target, str | os.PathLike):
        with open(target, mode) as f:
            yield f  # type: ignore[misc]
    else:
        yield target


def import_(
    client: Client,
    source: str | os.PathLike[str] | BinaryIO,
    *,
    base_name: str,
    platform: str | formats.Platform | None,
    all_platforms: bool,
    unpack: bool,
    snapshotter: str | None,
    progress: ProgressFn | None,
) -> list[Image]:
    saved: list[str] = []

    def watch(p: TransferProgress) -> None:
        # The importer names each image it records in a "saved" event.
        if p.event == "saved" and p.name and p.name not in saved:
            saved.append(p.name)
        if progress is not None:
            progress(p)

    with _opened(source, "rb") as stream:
        TransferClient(client._channel).import_archive(
            stream,
            name=base_name,
            platforms=_platforms(platform),
            unpack=unpack,
            snapshotter=(snapshotter or client.default_snapshotter()) if unpack else "",
            all_platforms=all_platforms,
            progress=watch,
        )
    return [client.get_image(name) for name in saved]


def export(
    client: Client,
    destination: str | os.PathLike[str] | BinaryIO,
    refs: str | Sequence[str],
    *,
    platform: str | formats.Platform | None,
    all_platforms: bool,
) -> None:
    names = [refs] if isinstance(refs, str) else list(refs)
    with _opened(destination, "wb") as stream:
        TransferClient(client._channel).export_archive(
            stream, names, platforms=_platforms(platform), all_platforms=all_platforms
        )
