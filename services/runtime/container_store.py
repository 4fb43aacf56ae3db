"""Container records in the database (containerd's metadata/containers.go)."""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from dataclasses import replace

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Row

from shared import content, filters, identifiers
from shared import context as request_context
from shared.containers import AnyValue, Container
from shared.db import Database
from shared.db.schema import containers
from shared.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound

MUTABLE = ("labels", "spec", "extensions", "image", "snapshotkey", "runtime")


def _container(row: Row) -> Container:  # type: ignore[type-arg]
    extensions = {
        name: AnyValue(pair[0], base64.b64decode(pair[1]))
        for name, pair in (row.extensions or {}).items()
    }
    return Container(
        id=row.id,
        runtime_name=row.runtime_name,
        runtime_options=AnyValue(row.runtime_options_type, bytes(row.runtime_options)),
        spec=AnyValue(row.spec_type, bytes(row.spec)),
        image=row.image,
        labels=dict(row.labels or {}),
        snapshotter=row.snapshotter,
        snapshot_key=row.snapshot_key,
        extensions=extensions,
        sandbox=row.sandbox,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _columns(c: Container) -> dict[str, object]:
    return {
        "labels": {k: v for k, v in c.labels.items() if v != ""},
        "image": c.image,
        "runtime_name": c.runtime_name,
        "runtime_options_type": c.runtime_options.type_url,
        "runtime_options": c.runtime_options.value,
        "spec_type": c.spec.type_url,
        "spec": c.spec.value,
        "snapshotter": c.snapshotter,
        "snapshot_key": c.snapshot_key,
        "extensions": {
            name: [v.type_url, base64.b64encode(v.value).decode()]
            for name, v in c.extensions.items()
        },
        "sandbox": c.sandbox,
    }


def validate(c: Container) -> None:
    """containerd's validateContainer."""
    identifiers.validate(c.id, what="container id")
    if not c.runtime_name:
        raise InvalidArgument(f"container {c.id}: runtime name must not be empty")
    if not c.spec.type_url:
        raise InvalidArgument(f"container {c.id}: spec must not be empty")
    if c.snapshot_key and not c.snapshotter:
        raise InvalidArgument(f"container {c.id}: a snapshot key needs a snapshotter")
    content.validate_labels(c.labels)


class ContainerAdaptor:
    def __init__(self, c: Container) -> None:
        self._c = c

    def field(self, path: Sequence[str]) -> tuple[str, bool]:
        if not path:
            return "", False
        head, rest = path[0], ".".join(path[1:])
        if head == "id" and not rest:
            return self._c.id, bool(self._c.id)
        if head == "image" and not rest:
            return self._c.image, bool(self._c.image)
        if head == "runtime" and rest == "name":
            return self._c.runtime_name, bool(self._c.runtime_name)
        if head == "labels" and rest:
            value = self._c.labels.get(rest)
            return (value, True) if value is not None else ("", False)
        return "", False


class ContainerRecords:
    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, container_id: str) -> Container:
        namespace = request_context.require_namespace()
        with self.db.read() as conn:
            row = conn.execute(
                select(containers).where(
                    containers.c.namespace == namespace, containers.c.id == container_id
                )
            ).one_or_none()
        if row is None:
            raise NotFound(f"container {container_id!r}: not found")
        return _container(row)

    def list(self, filter_exprs: Sequence[str] = ()) -> Sequence[Container]:
        namespace = request_context.require_namespace()
        match = filters.parse_all(list(filter_exprs))
        with self.db.read() as conn:
            rows = conn.execute(
                select(containers)
                .where(containers.c.namespace == namespace)
                .order_by(containers.c.id)
            ).all()
        return [c for c in map(_container, rows) if match.match(ContainerAdaptor(c))]

    def create(self, c: Container) -> Container:
        namespace = request_context.require_namespace()
        validate(c)
        now = time.time_ns()
        with self.db.write() as conn:
            exists = conn.execute(
                select(containers.c.id).where(
                    containers.c.namespace == namespace, containers.c.id == c.id
                )
            ).one_or_none()
            if exists is not None:
                raise AlreadyExists(f"container {c.id!r}: already exists")
            conn.execute(
                insert(containers).values(
                    namespace=namespace, id=c.id, created_at=now, updated_at=now, **_columns(c)
                )
            )
        return self.get(c.id)

    def update(self, c: Container, fieldpaths: Sequence[str] = ()) -> Container:
        namespace = request_context.require_namespace()
        current = self.get(c.id)
        updated = current
        for path in fieldpaths or ["labels", "spec", "extensions", "image", "snapshotkey"]:
            if path == "labels":
                updated = replace(updated, labels=dict(c.labels))
            elif path.startswith("labels."):
                key = path.removeprefix("labels.")
                labels = dict(updated.labels)
                if c.labels.get(key):
                    labels[key] = c.labels[key]
                else:
                    labels.pop(key, None)
                updated = replace(updated, labels=labels)
            elif path == "spec":
                updated = replace(updated, spec=c.spec)
            elif path == "extensions":
                updated = replace(updated, extensions=dict(c.extensions))
            elif path.startswith("extensions."):
                key = path.removeprefix("extensions.")
                extensions = dict(updated.extensions)
                if key in c.extensions:
                    extensions[key] = c.extensions[key]
                else:
                    extensions.pop(key, None)
                updated = replace(updated, extensions=extensions)
            elif path == "image":
                updated = replace(updated, image=c.image)
            elif path == "snapshotkey":
                updated = replace(updated, snapshot_key=c.snapshot_key)
            else:
                raise InvalidArgument(f"cannot update {path!r} field on container {c.id}")
        if c.runtime_name and c.runtime_name != current.runtime_name:
            raise FailedPrecondition(f"container {c.id}: the runtime cannot be changed")
        if c.snapshotter and c.snapshotter != current.snapshotter:
            raise FailedPrecondition(f"container {c.id}: the snapshotter cannot be changed")
        validate(updated)
        with self.db.write() as conn:
            conn.execute(
                update(containers)
                .where(containers.c.namespace == namespace, containers.c.id == c.id)
                .values(updated_at=time.time_ns(), **_columns(updated))
            )
        return self.get(c.id)

    def delete(self, container_id: str) -> None:
        namespace = request_context.require_namespace()
        with self.db.write() as conn:
            result = conn.execute(
                delete(containers).where(
                    containers.c.namespace == namespace, containers.c.id == container_id
                )
            )
        if not result.rowcount:
            raise NotFound(f"container {container_id!r}: not found")
