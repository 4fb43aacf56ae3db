"""Namespaces (containerd's metadata/namespaces.go).

A namespace exists once anything was created in it - a blob, a snapshot, an
image, a lease, a container - or once it was created explicitly. Labels live
in the ``namespaces`` table. Finding what a namespace holds reads the other
services' tables (read only), the same reading across that the garbage
collector does.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from sqlalchemy import Table, delete, insert, select, union, update
from sqlalchemy.engine import Connection

from shared import content, identifiers
from shared.db import Database
from shared.db.schema import metadata, namespaces
from shared.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from shared.images import Namespace


def _resource_tables() -> list[Table]:
    """Every table that keeps something per namespace (new services' tables join by themselves)."""
    return [t for t in metadata.sorted_tables if "namespace" in t.c and t is not namespaces]


def _in_use(conn: Connection) -> set[str]:
    selects = [select(t.c.namespace).distinct() for t in _resource_tables()]
    return {row[0] for row in conn.execute(union(*selects))}


class NamespaceRecords:
    def __init__(self, db: Database) -> None:
        self.db = db

    def _labels(self, conn: Connection, name: str) -> dict[str, str] | None:
        row = conn.execute(
            select(namespaces.c.labels).where(namespaces.c.name == name)
        ).one_or_none()
        return None if row is None else dict(row.labels or {})

    def get(self, name: str) -> Namespace:
        """Never NotFound: an unknown namespace has no labels (clients rely on this)."""
        identifiers.validate(name, what="namespace")
        with self.db.read() as conn:
            return Namespace(name, self._labels(conn, name) or {})

    def list(self) -> list[Namespace]:
        with self.db.read() as conn:
            rows = {r.name: dict(r.labels or {}) for r in conn.execute(select(namespaces))}
            names = set(rows) | _in_use(conn)
        return [Namespace(n, rows.get(n, {})) for n in sorted(names)]

    def create(self, name: str, labels: Mapping[str, str]) -> Namespace:
        identifiers.validate(name, what="namespace")
        content.validate_labels(labels)
        now = time.time_ns()
        with self.db.write() as conn:
            if self._labels(conn, name) is not None or name in _in_use(conn):
                raise AlreadyExists(f"namespace {name!r}: already exists")
            clean = {k: v for k, v in labels.items() if v != ""}
            conn.execute(
                insert(namespaces).values(name=name, labels=clean, created_at=now, updated_at=now)
            )
        return Namespace(name, clean)

    def update(self, name: str, labels: Mapping[str, str], fieldpaths: Sequence[str]) -> Namespace:
        identifiers.validate(name, what="namespace")
        now = time.time_ns()
        with self.db.write() as conn:
            current = self._labels(conn, name)
            merged = dict(current or {})
            for path in fieldpaths or ["labels"]:
                if path == "labels":
                    merged = dict(labels)
                elif path.startswith("labels."):
                    key = path.removeprefix("labels.")
                    if labels.get(key):
                        merged[key] = labels[key]
                    else:
                        merged.pop(key, None)
                else:
                    raise InvalidArgument(f"cannot update {path!r} field on namespace {name!r}")
            merged = {k: v for k, v in merged.items() if v != ""}
            content.validate_labels(merged)
            if current is None:
                conn.execute(
                    insert(namespaces).values(
                        name=name, labels=merged, created_at=now, updated_at=now
                    )
                )
            else:
                conn.execute(
                    update(namespaces)
                    .where(namespaces.c.name == name)
                    .values(labels=merged, updated_at=now)
                )
        return Namespace(name, merged)

    def delete(self, name: str) -> None:
        identifiers.validate(name, what="namespace")
        with self.db.write() as conn:
            held = []
            for table in _resource_tables():
                count = conn.execute(
                    select(table.c.namespace).where(table.c.namespace == name).limit(1)
                ).first()
                if count is not None:
                    held.append(table.name)
            if held:
                raise FailedPrecondition(
                    f"namespace {name!r} must be empty, but it still has {', '.join(held)}"
                )
            result = conn.execute(delete(namespaces).where(namespaces.c.name == name))
            if not result.rowcount:
                raise NotFound(f"namespace {name!r}: not found")
