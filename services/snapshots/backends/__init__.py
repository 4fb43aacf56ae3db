"""Snapshotter backends: how records become directories and mounts.

A backend never sees namespaces or keys except to name them for an external
snapshotter; the records (``services.snapshots.storage``) carry all state.
Creating a snapshot happens in two steps so that slow filesystem work (a full
copy for ``native``) runs outside the database transaction:

    staged = backend.stage(kind, parents)        # no lock held
    with db.write():
        record = storage.create(...)
        backend.install(staged, record, parents) # quick: a rename
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from services.snapshots.storage import Record
from shared.snapshots import Kind, Mount, Usage


class Backend(Protocol):
    def stage(self, kind: Kind, parents: list[Record]) -> Path | None: ...

    def install(self, staged: Path | None, record: Record, parents: list[Record]) -> None: ...

    def discard(self, staged: Path | None) -> None: ...

    def mounts(self, record: Record, parents: list[Record]) -> list[Mount]: ...

    def usage(self, record: Record, parents: list[Record]) -> Usage: ...

    def commit(self, active: Record, committed: Record) -> None: ...

    def remove(self, record: Record) -> None: ...

    def cleanup(self, known_ids: set[int]) -> list[str]:
        """Remove what is on disk but in no record; return what was removed."""
        ...
