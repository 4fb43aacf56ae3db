"""What the on-disk backends share: a directory per snapshot id, staged then renamed."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path

from shared.snapshots import Usage


def disk_usage(path: Path) -> Usage:
    """Bytes (allocated blocks) and inodes under ``path``, hardlinks counted once."""
    size = inodes = 0
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(path):
        for name in (*dirnames, *filenames):
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            inodes += 1
            size += st.st_blocks * 512
    return Usage(size=size, inodes=inodes)


class SnapshotDirs:
    """``<root>/snapshots/<id>`` per snapshot; ``new-*`` staged, ``rm-*`` being removed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.snapshots = root / "snapshots"
        self.snapshots.mkdir(parents=True, exist_ok=True)

    def path(self, snapshot_id: int) -> Path:
        return self.snapshots / str(snapshot_id)

    def new_staging(self) -> Path:
        path = self.snapshots / f"new-{uuid.uuid4().hex}"
        path.mkdir(mode=0o700)
        return path

    def install(self, staged: Path, snapshot_id: int) -> None:
        os.rename(staged, self.path(snapshot_id))

    def remove(self, snapshot_id: int) -> None:
        path = self.path(snapshot_id)
        doomed = self.snapshots / f"rm-{snapshot_id}-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(path, doomed)
        except FileNotFoundError:
            return
        self.remove_tree(doomed)

    def remove_tree(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def leftovers(self, known_ids: set[int]) -> list[Path]:
        found = []
        for entry in self.snapshots.iterdir():
            name = entry.name
            if name.startswith(("new-", "rm-")) or (name.isdigit() and int(name) not in known_ids):
                found.append(entry)
        return found

    def cleanup(self, known_ids: set[int]) -> list[str]:
        removed = []
        for path in self.leftovers(known_ids):
            with contextlib.suppress(OSError):
                self.remove_tree(path)
                removed.append(path.name)
        return removed
