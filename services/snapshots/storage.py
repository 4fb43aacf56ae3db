"""Snapshot records in the database (containerd's snapshots/storage, shared by all backends).

A record is one snapshot of one snapshotter on one node, in one namespace.
Its ``id`` names its directory; ``key`` is the active key or, once committed,
the committed name. Backends (``services.snapshots.backends``) only ever see
records: they turn them into directories and mounts.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.sql.elements import ColumnElement

from shared import context as request_context
from shared.db import Database
from shared.db.schema import snapshot_lease_refs, snapshots
from shared.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from shared.snapshots import Kind


@dataclass(frozen=True)
class Record:
    id: int
    namespace: str
    key: str
    kind: Kind
    parent_id: int | None
    labels: Mapping[str, str] = field(default_factory=dict)
    created_at: int = 0
    updated_at: int = 0
    size: int = 0
    inodes: int = 0


def _record(row: Row) -> Record:  # type: ignore[type-arg]
    return Record(
        id=row.id,
        namespace=row.namespace,
        key=row.key,
        kind=Kind(row.kind),
        parent_id=row.parent_id,
        labels=dict(row.labels or {}),
        created_at=row.created_at,
        updated_at=row.updated_at,
        size=row.size,
        inodes=row.inodes,
    )


def validate_key(key: str, what: str = "key") -> str:
    if not key:
        raise InvalidArgument(f"snapshot {what} must not be empty")
    if len(key) > 1024:
        raise InvalidArgument(f"snapshot {what} is longer than 1024 characters")
    if any(ord(c) < 0x20 for c in key):
        raise InvalidArgument(f"snapshot {what} {key!r} contains control characters")
    return key


class SnapshotStorage:
    """The records of one snapshotter on this node."""

    def __init__(self, db: Database, node: str, snapshotter: str) -> None:
        self.db = db
        self.node = node
        self.snapshotter = snapshotter

    def _where(self, namespace: str) -> list[ColumnElement[bool]]:
        return [
            snapshots.c.node == self.node,
            snapshots.c.snapshotter == self.snapshotter,
            snapshots.c.namespace == namespace,
        ]

    def _find(self, conn: Connection, namespace: str, key: str) -> Record | None:
        row = conn.execute(
            select(snapshots).where(*self._where(namespace), snapshots.c.key == key)
        ).one_or_none()
        return None if row is None else _record(row)

    def _by_id(self, conn: Connection, snapshot_id: int) -> Record:
        row = conn.execute(select(snapshots).where(snapshots.c.id == snapshot_id)).one()
        return _record(row)

    def get(self, namespace: str, key: str) -> Record:
        with self.db.read() as conn:
            found = self._find(conn, namespace, key)
        if found is None:
            raise NotFound(f"snapshot {key}: not found")
        return found

    def parent_key(self, record: Record) -> str:
        if record.parent_id is None:
            return ""
        with self.db.read() as conn:
            return self._by_id(conn, record.parent_id).key

    def chain(self, record: Record) -> list[Record]:
        """The record's parents, nearest first."""
        parents = []
        with self.db.read() as conn:
            parent_id = record.parent_id
            while parent_id is not None:
                parent = self._by_id(conn, parent_id)
                parents.append(parent)
                parent_id = parent.parent_id
        return parents

    def create(
        self,
        conn: Connection,
        namespace: str,
        key: str,
        kind: Kind,
        parent: str,
        labels: Mapping[str, str],
    ) -> tuple[Record, list[Record]]:
        """Insert an active snapshot or a view; returns it and its parents (nearest first)."""
        validate_key(key)
        if self._find(conn, namespace, key) is not None:
            raise AlreadyExists(f"snapshot {key}: already exists")
        parents: list[Record] = []
        parent_id = None
        if parent:
            found = self._find(conn, namespace, parent)
            if found is None:
                raise NotFound(f"parent snapshot {parent}: not found")
            if found.kind != Kind.COMMITTED:
                raise InvalidArgument(f"parent {parent} is not a committed snapshot")
            parent_id = found.id
            parents.append(found)
            while parents[-1].parent_id is not None:
                parents.append(self._by_id(conn, parents[-1].parent_id))
        now = time.time_ns()
        result = conn.execute(
            insert(snapshots).values(
                node=self.node,
                snapshotter=self.snapshotter,
                namespace=namespace,
                key=key,
                kind=int(kind),
                parent_id=parent_id,
                labels=dict(labels),
                created_at=now,
                updated_at=now,
                size=0,
                inodes=0,
            )
        )
        snapshot_id = result.inserted_primary_key[0] if result.inserted_primary_key else None
        if snapshot_id is None:
            raise RuntimeError("database returned no id for the new snapshot")
        self._add_lease_ref(conn, namespace, key)
        return self._by_id(conn, int(snapshot_id)), parents

    def commit(
        self,
        conn: Connection,
        namespace: str,
        name: str,
        key: str,
        labels: Mapping[str, str],
        size: int,
        inodes: int,
    ) -> Record:
        validate_key(name, "name")
        active = self._find(conn, namespace, key)
        if active is None:
            raise NotFound(f"snapshot {key}: not found")
        if active.kind != Kind.ACTIVE:
            raise FailedPrecondition(f"snapshot {key} is not active; only active snapshots commit")
        if self._find(conn, namespace, name) is not None:
            raise AlreadyExists(f"snapshot {name}: already exists")
        merged = {**active.labels, **labels}
        conn.execute(
            update(snapshots)
            .where(snapshots.c.id == active.id)
            .values(
                key=name,
                kind=int(Kind.COMMITTED),
                labels=merged,
                updated_at=time.time_ns(),
                size=size,
                inodes=inodes,
            )
        )
        self._drop_lease_refs(conn, namespace, key)
        self._add_lease_ref(conn, namespace, name)
        return self._by_id(conn, active.id)

    def remove(self, conn: Connection, namespace: str, key: str) -> Record:
        found = self._find(conn, namespace, key)
        if found is None:
            raise NotFound(f"snapshot {key}: not found")
        children = conn.execute(
            select(func.count()).select_from(snapshots).where(snapshots.c.parent_id == found.id)
        ).scalar()
        if children:
            raise FailedPrecondition(f"cannot remove snapshot {key}: it has {children} children")
        conn.execute(delete(snapshots).where(snapshots.c.id == found.id))
        self._drop_lease_refs(conn, namespace, key)
        return found

    def update_labels(
        self, namespace: str, key: str, labels: Mapping[str, str], fieldpaths: Sequence[str]
    ) -> Record:
        with self.db.write() as conn:
            found = self._find(conn, namespace, key)
            if found is None:
                raise NotFound(f"snapshot {key}: not found")
            merged = dict(found.labels)
            if not fieldpaths:
                merged = dict(labels)
            for path in fieldpaths:
                if path == "labels":
                    merged = dict(labels)
                elif path.startswith("labels."):
                    name = path.removeprefix("labels.")
                    if labels.get(name):
                        merged[name] = labels[name]
                    else:
                        merged.pop(name, None)
                else:
                    raise InvalidArgument(f"cannot update {path!r} field on snapshot {key}")
            merged = {k: v for k, v in merged.items() if v != ""}
            conn.execute(
                update(snapshots)
                .where(snapshots.c.id == found.id)
                .values(labels=merged, updated_at=time.time_ns())
            )
            return self._by_id(conn, found.id)

    def all(self, namespace: str) -> list[Record]:
        with self.db.read() as conn:
            rows = conn.execute(
                select(snapshots).where(*self._where(namespace)).order_by(snapshots.c.key)
            ).all()
        return [_record(row) for row in rows]

    def keys_by_id(self, ids: Sequence[int]) -> dict[int, str]:
        if not ids:
            return {}
        with self.db.read() as conn:
            rows = conn.execute(
                select(snapshots.c.id, snapshots.c.key).where(snapshots.c.id.in_(list(ids)))
            ).all()
        return {row.id: row.key for row in rows}

    def ids(self) -> set[int]:
        """Every id this snapshotter has on this node, in every namespace."""
        with self.db.read() as conn:
            rows = conn.execute(
                select(snapshots.c.id).where(
                    snapshots.c.node == self.node, snapshots.c.snapshotter == self.snapshotter
                )
            ).scalars()
            return set(rows)

    # -- leases ------------------------------------------------------------

    def _add_lease_ref(self, conn: Connection, namespace: str, key: str) -> None:
        lease = request_context.current_lease()
        if not lease:
            return
        where = [
            snapshot_lease_refs.c.namespace == namespace,
            snapshot_lease_refs.c.lease == lease,
            snapshot_lease_refs.c.snapshotter == self.snapshotter,
            snapshot_lease_refs.c.key == key,
        ]
        if not conn.execute(
            select(func.count()).select_from(snapshot_lease_refs).where(*where)
        ).scalar():
            conn.execute(
                insert(snapshot_lease_refs).values(
                    namespace=namespace, lease=lease, snapshotter=self.snapshotter, key=key
                )
            )

    def _drop_lease_refs(self, conn: Connection, namespace: str, key: str) -> None:
        conn.execute(
            delete(snapshot_lease_refs).where(
                snapshot_lease_refs.c.namespace == namespace,
                snapshot_lease_refs.c.snapshotter == self.snapshotter,
                snapshot_lease_refs.c.key == key,
            )
        )
