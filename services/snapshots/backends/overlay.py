"""The overlayfs backend (containerd's overlay snapshotter).

``snapshots/<id>/fs`` is a snapshot's own layer (the overlay upperdir while
active), ``snapshots/<id>/work`` the overlay workdir. Mounts, as containerd:

* active, no parent: a bind mount of ``fs`` (overlay needs a lower layer);
* active with parents: ``overlay`` with ``upperdir``/``workdir`` and the
  parents' ``fs`` dirs as ``lowerdir`` (nearest first);
* view of one parent: a read-only bind of the parent's ``fs``;
* view of several: ``overlay`` with only ``lowerdir`` (read-only).

A deep chain (100+ layers) gives options longer than a page; the caller's
mount helper (``shared.mount``) shortens them as containerd's does.
"""

from __future__ import annotations

import os
from pathlib import Path

from services.snapshots.backends.local import SnapshotDirs, disk_usage
from services.snapshots.storage import Record
from shared.snapshots import Kind, Mount, Usage


def _supports_index_off() -> bool:
    return os.path.exists("/sys/module/overlay/parameters/index")


class OverlayBackend:
    def __init__(self, root: Path) -> None:
        self.dirs = SnapshotDirs(root)
        self._options = ("index=off",) if _supports_index_off() else ()

    def fs(self, snapshot_id: int) -> Path:
        return self.dirs.path(snapshot_id) / "fs"

    def stage(self, kind: Kind, parents: list[Record]) -> Path | None:
        staged = self.dirs.new_staging()
        (staged / "fs").mkdir(mode=0o755)
        if kind == Kind.ACTIVE:
            (staged / "work").mkdir(mode=0o711)
        if parents:
            # The new layer's root starts owned like its parent's (containerd does the same).
            st = os.stat(self.fs(parents[0].id))
            os.lchown(staged / "fs", st.st_uid, st.st_gid)
        return staged

    def install(self, staged: Path | None, record: Record, parents: list[Record]) -> None:
        assert staged is not None
        self.dirs.install(staged, record.id)

    def discard(self, staged: Path | None) -> None:
        if staged is not None:
            self.dirs.remove_tree(staged)

    def mounts(self, record: Record, parents: list[Record]) -> list[Mount]:
        if not parents:
            ro = "ro" if record.kind == Kind.VIEW else "rw"
            return [Mount("bind", str(self.fs(record.id)), "", (ro, "rbind"))]
        options = list(self._options)
        if record.kind == Kind.ACTIVE:
            options.append(f"workdir={self.dirs.path(record.id) / 'work'}")
            options.append(f"upperdir={self.fs(record.id)}")
        elif len(parents) == 1:
            return [Mount("bind", str(self.fs(parents[0].id)), "", ("ro", "rbind"))]
        options.append("lowerdir=" + ":".join(str(self.fs(p.id)) for p in parents))
        return [Mount("overlay", "overlay", "", tuple(options))]

    def usage(self, record: Record, parents: list[Record]) -> Usage:
        return disk_usage(self.fs(record.id))

    def commit(self, active: Record, committed: Record) -> None:
        # The upperdir becomes a lower layer as it is; the work dir is no longer needed.
        self.dirs.remove_tree(self.dirs.path(active.id) / "work")

    def remove(self, record: Record) -> None:
        self.dirs.remove(record.id)

    def cleanup(self, known_ids: set[int]) -> list[str]:
        return self.dirs.cleanup(known_ids)
