"""Applying layers to snapshot mounts and computing layers from two mounts (containerd's differ).

Apply reads the compressed layer from the content service and streams it:
decompress, hash (the diff ID), untar. Where the mounts are a snapshot this
process made, it writes into the directory behind them without mounting
anything: an overlay's ``upperdir`` (whiteouts become overlay whiteouts, as
containerd's overlay apply does) or a bind mount's source (whiteouts delete).
Anything else is mounted on a temporary directory first.

Diff writes a gzip layer of the changes from ``left`` to ``right`` into the
content service and returns its descriptor, labelled with the uncompressed
digest.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from services.snapshots import archive, compression, layerdiff
from shared import mount as mounting
from shared.content import CHUNK_SIZE, Ingester, Provider
from shared.diff import (
    LABEL_UNCOMPRESSED,
    MEDIA_TYPE_LAYER,
    MEDIA_TYPE_LAYER_GZIP,
    Descriptor,
)
from shared.errors import InvalidArgument, Unimplemented
from shared.snapshots import Mount


def _option(options: Sequence[str], name: str) -> str | None:
    prefix = f"{name}="
    return next((o.removeprefix(prefix) for o in options if o.startswith(prefix)), None)


@dataclass(frozen=True)
class _Target:
    root: Path
    whiteouts: archive.Whiteouts
    parents: tuple[Path, ...] = ()  # lower layers, nearest first (overlay only)


@contextlib.contextmanager
def _target(mounts: Sequence[Mount], scratch: Path) -> Iterator[_Target]:
    """Where to write a layer for these mounts, and how to express deletions there."""
    if len(mounts) == 1:
        m = mounts[0]
        upper = _option(m.options, "upperdir") if m.type == "overlay" else None
        if upper:
            lowers = (_option(m.options, "lowerdir") or "").split(":")
            parents = tuple(Path(p) for p in lowers if p)
            yield _Target(Path(upper), archive.Whiteouts.OVERLAY, parents)
            return
        if m.type == "bind" and "ro" not in m.options:
            yield _Target(Path(m.source), archive.Whiteouts.DELETE)
            return
    with mounting.temporary(mounts, scratch) as root:
        yield _Target(root, archive.Whiteouts.DELETE)


class Differ:
    def __init__(self, content: Provider, ingester: Ingester, scratch: Path) -> None:
        self._content = content
        self._ingester = ingester
        self._scratch = scratch

    def apply(self, desc: Descriptor, mounts: Sequence[Mount]) -> Descriptor:
        if not mounts:
            raise InvalidArgument("apply needs the mounts of the target snapshot")
        compression.decompressor_for(desc.media_type)  # unsupported types fail before any work
        chunks = self._content.read(desc.digest)
        with _target(mounts, self._scratch) as target:
            result = archive.apply_layer(
                chunks,
                desc.media_type,
                target.root,
                target.whiteouts,
                parents=target.parents,
                label=desc.digest,
            )
        return Descriptor(MEDIA_TYPE_LAYER, result.diff_id, result.size)

    def diff(
        self,
        left: Sequence[Mount],
        right: Sequence[Mount],
        media_type: str = "",
        ref: str = "",
        labels: Mapping[str, str] | None = None,
    ) -> Descriptor:
        media_type = media_type or MEDIA_TYPE_LAYER_GZIP
        if media_type != MEDIA_TYPE_LAYER_GZIP:
            raise Unimplemented(f"diff to {media_type}: only {MEDIA_TYPE_LAYER_GZIP} is produced")
        ref = ref or f"diff-{secrets.token_hex(8)}"
        writer = self._ingester.writer(ref)
        try:
            sink = _WriterSink(writer)
            compressed = layerdiff.CompressedDigestWriter(sink)
            upper_dir = self._overlay_upper(left, right)
            if upper_dir is not None:
                # An overlay upperdir already is the change set, whiteouts included.
                layerdiff.write_diff(None, upper_dir, compressed, upper_is_overlay_upperdir=True)
            else:
                with contextlib.ExitStack() as stack:
                    lower = (
                        stack.enter_context(mounting.temporary(left, self._scratch))
                        if left
                        else None
                    )
                    upper = stack.enter_context(mounting.temporary(right, self._scratch))
                    layerdiff.write_diff(lower, upper, compressed, upper_is_overlay_upperdir=False)
            compressed.close()
            sink.flush()
            all_labels = {**(labels or {}), LABEL_UNCOMPRESSED: compressed.uncompressed_digest}
            info = writer.commit(
                compressed.compressed_size, compressed.compressed_digest, all_labels
            )
        finally:
            writer.close()
        return Descriptor(media_type, info.digest, info.size)

    @staticmethod
    def _overlay_upper(left: Sequence[Mount], right: Sequence[Mount]) -> Path | None:
        """The upperdir when ``right`` is an overlay of exactly ``left`` plus one layer."""
        if len(right) != 1 or right[0].type != "overlay":
            return None
        upper = _option(right[0].options, "upperdir")
        lowers = (_option(right[0].options, "lowerdir") or "").split(":")
        if upper is None:
            return None
        if not left:
            return Path(upper) if lowers == [""] else None
        if len(left) != 1:
            return None
        lm = left[0]
        if lm.type == "bind":
            left_lowers = [lm.source]
        elif lm.type == "overlay" and _option(lm.options, "upperdir") is None:
            left_lowers = (_option(lm.options, "lowerdir") or "").split(":")
        else:
            return None
        return Path(upper) if left_lowers == lowers else None


class _WriterSink:
    """Buffers the gzip stream into content writes of CHUNK_SIZE."""

    def __init__(self, writer: object) -> None:
        self._writer = writer
        self._buffer = bytearray()

    def write(self, data: bytes) -> int:
        self._buffer += data
        if len(self._buffer) >= CHUNK_SIZE:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self._buffer:
            self._writer.write(bytes(self._buffer))  # type: ignore[attr-defined]
            self._buffer.clear()
