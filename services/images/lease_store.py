"""Leases (containerd's metadata/leases.go): what keeps resources alive while a client works.

A lease holds the resources added to it (``Leases.AddResource``) and those that
the content and snapshots services created under it (``containerd-lease``
metadata), which those services record in their own tables. A lease with the
``containerd.io/gc.expire`` label (RFC 3339) ends at that time: the garbage
collector deletes it.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping, Sequence

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Connection

from shared import content, filters
from shared import context as request_context
from shared.db import Database
from shared.db.schema import content_lease_refs, lease_resources, leases, snapshot_lease_refs
from shared.errors import AlreadyExists, InvalidArgument, NotFound
from shared.images import Lease, Resource


class LeaseAdaptor:
    def __init__(self, lease: Lease) -> None:
        self._lease = lease

    def field(self, path: Sequence[str]) -> tuple[str, bool]:
        if path == ["id"] or tuple(path) == ("id",):
            return self._lease.id, True
        if path and path[0] == "labels" and len(path) > 1:
            value = self._lease.labels.get(".".join(path[1:]))
            return (value, True) if value is not None else ("", False)
        return "", False


def validate_lease_id(lease_id: str) -> str:
    """containerd takes any lease id (ctr's random ones look like ``340439221--Xgu``)."""
    if not lease_id or len(lease_id) > 76:
        raise InvalidArgument("lease id must be 1 to 76 characters")
    if any(ord(c) < 0x21 or c in "/\x7f" for c in lease_id):
        raise InvalidArgument(
            f"lease id {lease_id!r} must not contain spaces, '/' or control characters"
        )
    return lease_id


def validate_resource(resource: Resource) -> Resource:
    if resource.type == "content":
        content.parse_digest(resource.id)
    elif resource.type == "ingests":
        content.validate_ref(resource.id)
    elif resource.type.startswith("snapshots/") and resource.type != "snapshots/":
        if not resource.id:
            raise InvalidArgument("snapshot resource needs a key")
    else:
        raise InvalidArgument(
            f"unsupported lease resource type {resource.type!r}: "
            "want content, ingests or snapshots/<snapshotter>"
        )
    return resource


class LeaseRecords:
    def __init__(self, db: Database) -> None:
        self.db = db

    def _exists(self, conn: Connection, namespace: str, lease_id: str) -> bool:
        row = conn.execute(
            select(leases.c.id).where(leases.c.namespace == namespace, leases.c.id == lease_id)
        ).one_or_none()
        return row is not None

    def create(self, lease_id: str, labels: Mapping[str, str]) -> Lease:
        namespace = request_context.require_namespace()
        lease_id = lease_id or f"lease-{secrets.token_hex(8)}"
        validate_lease_id(lease_id)
        content.validate_labels(labels)
        now = time.time_ns()
        clean = {k: v for k, v in labels.items() if v != ""}
        with self.db.write() as conn:
            if self._exists(conn, namespace, lease_id):
                raise AlreadyExists(f"lease {lease_id!r}: already exists")
            conn.execute(
                insert(leases).values(
                    namespace=namespace, id=lease_id, labels=clean, created_at=now
                )
            )
        return Lease(lease_id, now, clean)

    def delete(self, lease_id: str) -> None:
        namespace = request_context.require_namespace()
        with self.db.write() as conn:
            result = conn.execute(
                delete(leases).where(leases.c.namespace == namespace, leases.c.id == lease_id)
            )
            if not result.rowcount:
                raise NotFound(f"lease {lease_id!r}: not found")
            conn.execute(
                delete(lease_resources).where(
                    lease_resources.c.namespace == namespace, lease_resources.c.lease == lease_id
                )
            )

    def list(self, filter_exprs: Sequence[str] = ()) -> list[Lease]:
        namespace = request_context.require_namespace()
        match = filters.parse_all(list(filter_exprs))
        with self.db.read() as conn:
            rows = conn.execute(
                select(leases).where(leases.c.namespace == namespace).order_by(leases.c.id)
            ).all()
        found = [Lease(r.id, r.created_at, dict(r.labels or {})) for r in rows]
        return [lease for lease in found if match.match(LeaseAdaptor(lease))]

    def add_resource(self, lease_id: str, resource: Resource) -> None:
        namespace = request_context.require_namespace()
        validate_resource(resource)
        with self.db.write() as conn:
            if not self._exists(conn, namespace, lease_id):
                raise NotFound(f"lease {lease_id!r}: not found")
            present = conn.execute(
                select(lease_resources.c.id).where(
                    lease_resources.c.namespace == namespace,
                    lease_resources.c.lease == lease_id,
                    lease_resources.c.type == resource.type,
                    lease_resources.c.id == resource.id,
                )
            ).one_or_none()
            if present is None:
                conn.execute(
                    insert(lease_resources).values(
                        namespace=namespace, lease=lease_id, type=resource.type, id=resource.id
                    )
                )

    def delete_resource(self, lease_id: str, resource: Resource) -> None:
        namespace = request_context.require_namespace()
        validate_resource(resource)
        with self.db.write() as conn:
            if not self._exists(conn, namespace, lease_id):
                raise NotFound(f"lease {lease_id!r}: not found")
            conn.execute(
                delete(lease_resources).where(
                    lease_resources.c.namespace == namespace,
                    lease_resources.c.lease == lease_id,
                    lease_resources.c.type == resource.type,
                    lease_resources.c.id == resource.id,
                )
            )

    def list_resources(self, lease_id: str) -> Sequence[Resource]:
        """Added resources and those created under the lease, as containerd lists them."""
        namespace = request_context.require_namespace()
        with self.db.read() as conn:
            if not self._exists(conn, namespace, lease_id):
                raise NotFound(f"lease {lease_id!r}: not found")
            found = {
                (r.type, r.id)
                for r in conn.execute(
                    select(lease_resources).where(
                        lease_resources.c.namespace == namespace,
                        lease_resources.c.lease == lease_id,
                    )
                )
            }
            found |= {
                (r.kind, r.id)
                for r in conn.execute(
                    select(content_lease_refs).where(
                        content_lease_refs.c.namespace == namespace,
                        content_lease_refs.c.lease == lease_id,
                    )
                )
            }
            found |= {
                (f"snapshots/{r.snapshotter}", r.key)
                for r in conn.execute(
                    select(snapshot_lease_refs).where(
                        snapshot_lease_refs.c.namespace == namespace,
                        snapshot_lease_refs.c.lease == lease_id,
                    )
                )
            }
        return [Resource(ident, kind) for kind, ident in sorted(found)]
