"""The native backend: every snapshot is a full copy of its parent (containerd's native).

Works on any filesystem; costs a copy per prepare. Layers are applied with
real deletions for whiteouts. Mounts are bind mounts of ``snapshots/<id>/fs``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from services.snapshots.backends.local import SnapshotDirs, disk_usage
from services.snapshots.storage import Record
from shared.errors import ResourceExhausted
from shared.snapshots import Kind, Mount, Usage


def copy_tree(source: Path, target: Path) -> None:
    """Copy keeping owners, modes, xattrs, hardlinks, devices; reflinks where possible."""
    result = subprocess.run(
        ["cp", "-a", "--reflink=auto", f"{source}/.", str(target)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        message = result.stderr.strip()
        if "No space left" in message:
            raise ResourceExhausted(f"copying snapshot {source}: {message}")
        raise OSError(f"copying snapshot {source}: {message}")


class NativeBackend:
    def __init__(self, root: Path) -> None:
        self.dirs = SnapshotDirs(root)

    def fs(self, snapshot_id: int) -> Path:
        return self.dirs.path(snapshot_id) / "fs"

    def stage(self, kind: Kind, parents: list[Record]) -> Path | None:
        staged = self.dirs.new_staging()
        try:
            (staged / "fs").mkdir(mode=0o755)
            if parents:
                copy_tree(self.fs(parents[0].id), staged / "fs")
        except BaseException:
            self.dirs.remove_tree(staged)
            raise
        return staged

    def install(self, staged: Path | None, record: Record, parents: list[Record]) -> None:
        assert staged is not None
        self.dirs.install(staged, record.id)

    def discard(self, staged: Path | None) -> None:
        if staged is not None:
            self.dirs.remove_tree(staged)

    def mounts(self, record: Record, parents: list[Record]) -> list[Mount]:
        ro = "ro" if record.kind == Kind.VIEW else "rw"
        return [Mount("bind", str(self.fs(record.id)), "", (ro, "rbind"))]

    def usage(self, record: Record, parents: list[Record]) -> Usage:
        return disk_usage(self.fs(record.id))

    def commit(self, active: Record, committed: Record) -> None:
        pass

    def remove(self, record: Record) -> None:
        self.dirs.remove(record.id)

    def cleanup(self, known_ids: set[int]) -> list[str]:
        return self.dirs.cleanup(known_ids)
