"""A named snapshotter: records in the database, directories by a backend.

Implements ``shared.snapshots.Snapshotter`` for the request's namespace.
Slow filesystem work (copying a parent, measuring usage, deleting a tree)
happens outside database transactions; the quick steps that must agree with
the records (renaming a staged directory into place) happen inside them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence

from services.snapshots.backends import Backend
from services.snapshots.storage import Record, SnapshotStorage, validate_key
from shared import context as request_context
from shared import filters
from shared.errors import InvalidArgument, NotFound
from shared.snapshots import Info, Kind, Mount, Usage

log = logging.getLogger(__name__)

_KIND_NAMES = {Kind.ACTIVE: "active", Kind.VIEW: "view", Kind.COMMITTED: "committed"}


class InfoAdaptor:
    """Filter fields: ``kind``, ``name``, ``parent``, ``labels.<key>`` (containerd's)."""

    def __init__(self, info: Info) -> None:
        self._info = info

    def field(self, path: Sequence[str]) -> tuple[str, bool]:
        if not path:
            return "", False
        head = path[0]
        if head == "kind":
            return _KIND_NAMES.get(self._info.kind, ""), True
        if head == "name":
            return self._info.name, bool(self._info.name)
        if head == "parent":
            return self._info.parent, bool(self._info.parent)
        if head == "labels" and len(path) > 1:
            value = self._info.labels.get(".".join(path[1:]))
            return (value, True) if value is not None else ("", False)
        return "", False


class Snapshotter:
    def __init__(self, name: str, storage: SnapshotStorage, backend: Backend) -> None:
        self._name = name
        self.storage = storage
        self.backend = backend

    @property
    def name(self) -> str:
        return self._name

    def _info(self, record: Record, parent: str | None = None) -> Info:
        return Info(
            name=record.key,
            parent=self.storage.parent_key(record) if parent is None else parent,
            kind=record.kind,
            created_at=record.created_at,
            updated_at=record.updated_at,
            labels=dict(record.labels),
        )

    def stat(self, key: str) -> Info:
        namespace = request_context.require_namespace()
        return self._info(self.storage.get(namespace, validate_key(key)))

    def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        namespace = request_context.require_namespace()
        record = self.storage.update_labels(
            namespace, validate_key(info.name), info.labels, fieldpaths
        )
        return self._info(record)

    def usage(self, key: str) -> Usage:
        namespace = request_context.require_namespace()
        record = self.storage.get(namespace, validate_key(key))
        if record.kind == Kind.COMMITTED:
            return Usage(record.size, record.inodes)
        return self.backend.usage(record, self.storage.chain(record))

    def mounts(self, key: str) -> list[Mount]:
        namespace = request_context.require_namespace()
        record = self.storage.get(namespace, validate_key(key))
        if record.kind == Kind.COMMITTED:
            raise NotFound(f"snapshot {key} is committed: mount a view or an active child instead")
        return self.backend.mounts(record, self.storage.chain(record))

    def _create(
        self, kind: Kind, key: str, parent: str, labels: Mapping[str, str] | None
    ) -> list[Mount]:
        namespace = request_context.require_namespace()
        validate_key(key)
        # Stage on disk first (for native, a full copy) without holding the database.
        if parent:
            parent_record = self.storage.get(namespace, parent)
            if parent_record.kind != Kind.COMMITTED:
                raise InvalidArgument(f"parent {parent} is not a committed snapshot")
            chain = [parent_record, *self.storage.chain(parent_record)]
        else:
            chain = []
        staged = self.backend.stage(kind, chain)
        try:
            with self.storage.db.write() as conn:
                record, parents = self.storage.create(
                    conn, namespace, key, kind, parent, dict(labels or {})
                )
                if [p.id for p in parents] != [p.id for p in chain]:
                    raise InvalidArgument(f"parent {parent} changed while preparing {key}")
                self.backend.install(staged, record, parents)
        except BaseException:
            self.backend.discard(staged)
            raise
        return self.backend.mounts(record, parents)

    def prepare(
        self, key: str, parent: str = "", labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        return self._create(Kind.ACTIVE, key, parent, labels)

    def view(
        self, key: str, parent: str = "", labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        return self._create(Kind.VIEW, key, parent, labels)

    def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> None:
        namespace = request_context.require_namespace()
        validate_key(name, "name")
        active = self.storage.get(namespace, validate_key(key))
        usage = (
            self.backend.usage(active, self.storage.chain(active))
            if active.kind == Kind.ACTIVE
            else Usage(0, 0)
        )
        with self.storage.db.write() as conn:
            committed = self.storage.commit(
                conn, namespace, name, key, dict(labels or {}), usage.size, usage.inodes
            )
            self.backend.commit(active, committed)

    def remove(self, key: str) -> None:
        namespace = request_context.require_namespace()
        with self.storage.db.write() as conn:
            record = self.storage.remove(conn, namespace, validate_key(key))
        self.backend.remove(record)

    def walk(self, filter_exprs: Sequence[str] = ()) -> Iterator[Info]:
        namespace = request_context.require_namespace()
        match = filters.parse_all(list(filter_exprs))
        records = self.storage.all(namespace)
        keys = {r.id: r.key for r in records}
        for record in records:
            parent = keys.get(record.parent_id, "") if record.parent_id is not None else ""
            info = self._info(record, parent)
            if match.match(InfoAdaptor(info)):
                yield info

    def cleanup(self) -> None:
        removed = self.backend.cleanup(self.storage.ids())
        if removed:
            log.info("%s: removed leftovers %s", self._name, ", ".join(removed))
