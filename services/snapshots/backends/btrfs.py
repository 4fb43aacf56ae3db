"""The btrfs backend: each snapshot a subvolume, children as btrfs snapshots (containerd's btrfs).

``snapshots/<id>`` is a subvolume. Prepare snapshots the parent's subvolume
(copy-on-write, instant) or creates an empty one; commit makes it read-only;
views are snapshots too, mounted read-only. The backend's root must be on
btrfs (``[plugins."io.containerd.snapshotter.v1.btrfs"] root_path``); if it is
not, the plugin is listed with that reason and not served.
"""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from pathlib import Path

from services.snapshots.backends.local import SnapshotDirs, disk_usage
from services.snapshots.storage import Record
from shared.errors import FailedPrecondition
from shared.snapshots import Kind, Mount, Usage


def filesystem_type(path: Path) -> str:
    result = subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True)
    return result.stdout.strip()


def _btrfs(*args: str) -> None:
    result = subprocess.run(["btrfs", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise OSError(f"btrfs {' '.join(args)}: {result.stderr.strip()}")


class BtrfsDirs(SnapshotDirs):
    def new_staging(self) -> Path:
        return self.snapshots / f"new-{uuid.uuid4().hex}"

    def remove_tree(self, path: Path) -> None:
        if not path.exists():
            return
        try:
            _btrfs("subvolume", "delete", str(path))
        except OSError:
            super().remove_tree(path)


class BtrfsBackend:
    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        kind = filesystem_type(root)
        if kind != "btrfs":
            raise FailedPrecondition(f"{root} is on {kind or 'an unknown filesystem'}, not btrfs")
        self.dirs = BtrfsDirs(root)

    def stage(self, kind: Kind, parents: list[Record]) -> Path | None:
        staged = self.dirs.new_staging()
        if parents:
            _btrfs("subvolume", "snapshot", str(self.dirs.path(parents[0].id)), str(staged))
        else:
            _btrfs("subvolume", "create", str(staged))
        return staged

    def install(self, staged: Path | None, record: Record, parents: list[Record]) -> None:
        assert staged is not None
        self.dirs.install(staged, record.id)
        if record.kind == Kind.VIEW:
            _btrfs("property", "set", "-ts", str(self.dirs.path(record.id)), "ro", "true")

    def discard(self, staged: Path | None) -> None:
        if staged is not None:
            self.dirs.remove_tree(staged)

    def mounts(self, record: Record, parents: list[Record]) -> list[Mount]:
        ro = "ro" if record.kind == Kind.VIEW else "rw"
        return [Mount("bind", str(self.dirs.path(record.id)), "", (ro, "rbind"))]

    def usage(self, record: Record, parents: list[Record]) -> Usage:
        return disk_usage(self.dirs.path(record.id))

    def commit(self, active: Record, committed: Record) -> None:
        _btrfs("property", "set", "-ts", str(self.dirs.path(committed.id)), "ro", "true")

    def remove(self, record: Record) -> None:
        with contextlib.suppress(OSError):
            _btrfs("property", "set", "-ts", str(self.dirs.path(record.id)), "ro", "false")
        self.dirs.remove(record.id)

    def cleanup(self, known_ids: set[int]) -> list[str]:
        return self.dirs.cleanup(known_ids)
