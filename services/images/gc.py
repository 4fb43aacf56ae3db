"""The garbage collector (containerd's metadata/gc.go model), the one reader across all tables.

Mark: start from the roots - images, containers, unexpired leases, anything
labelled ``containerd.io/gc.root`` - and follow references:

* an image's target digest -> that content;
* ``containerd.io/gc.ref.content[.<anything>]`` labels -> content by digest;
* ``containerd.io/gc.ref.snapshot.<snapshotter>[/<anything>]`` labels -> that snapshot;
* a snapshot -> its parent;
* a container -> its snapshot (and its ``gc.ref`` labels);
* a lease -> its resources (with ``containerd.io/gc.flat``: only those, not what they reference).

Sweep: content and snapshots that were not marked are removed through their
owning services (Content.Delete, Snapshots.Remove, children first); expired
leases are deleted. In-flight ingests are never touched.

Crash-safe by construction: a run keeps no state; it recomputes from the
records and every removal is idempotent. The mark phase reads in one
transaction (a consistent view) and runs twice; only what is unreachable in
both runs is removed, which narrows the window for a reference created
between planning and sweeping.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.engine import Connection

from shared import context as request_context
from shared.content import Manager as ContentManager
from shared.db import Database
from shared.db.schema import (
    content_blobs,
    content_lease_refs,
    images,
    lease_resources,
    leases,
    metadata,
    snapshot_lease_refs,
    snapshots,
)
from shared.errors import FailedPrecondition, NotFound
from shared.images import (
    LABEL_GC_EXPIRE,
    LABEL_GC_FLAT,
    LABEL_GC_REF_CONTENT,
    LABEL_GC_REF_SNAPSHOT,
    LABEL_GC_ROOT,
)
from shared.snapshots import Snapshotter

log = logging.getLogger(__name__)

ContentKey = tuple[str, str]  # namespace, digest
SnapshotKey = tuple[str, str, str]  # namespace, snapshotter, key


@dataclass
class Plan:
    """What a collection removes (or, as a dry run, would remove)."""

    content: list[ContentKey] = field(default_factory=list)
    snapshots: list[SnapshotKey] = field(default_factory=list)
    expired_leases: list[tuple[str, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.content or self.snapshots or self.expired_leases)


@dataclass
class _Graph:
    content_labels: dict[ContentKey, dict[str, str]] = field(default_factory=dict)
    snapshot_labels: dict[SnapshotKey, dict[str, str]] = field(default_factory=dict)
    snapshot_parent: dict[SnapshotKey, SnapshotKey | None] = field(default_factory=dict)
    snapshot_depth: dict[SnapshotKey, int] = field(default_factory=dict)
    content_roots: set[ContentKey] = field(default_factory=set)
    snapshot_roots: set[SnapshotKey] = field(default_factory=set)
    flat_content: set[ContentKey] = field(default_factory=set)
    flat_snapshots: set[SnapshotKey] = field(default_factory=set)
    expired_leases: list[tuple[str, str]] = field(default_factory=list)


def _expired(labels: Mapping[str, str], now: float) -> bool:
    value = labels.get(LABEL_GC_EXPIRE)
    if not value:
        return False
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() <= now
    except ValueError:
        log.warning("ignoring unparsable %s=%r", LABEL_GC_EXPIRE, value)
        return False


def references(
    namespace: str, labels: Mapping[str, str]
) -> tuple[set[ContentKey], set[SnapshotKey]]:
    """What a set of labels keeps alive."""
    content_refs: set[ContentKey] = set()
    snapshot_refs: set[SnapshotKey] = set()
    for key, value in labels.items():
        if key == LABEL_GC_REF_CONTENT or key.startswith(LABEL_GC_REF_CONTENT + "."):
            content_refs.add((namespace, value))
        elif key.startswith(LABEL_GC_REF_SNAPSHOT):
            snapshotter = key.removeprefix(LABEL_GC_REF_SNAPSHOT).split("/", 1)[0]
            if snapshotter:
                snapshot_refs.add((namespace, snapshotter, value))
    return content_refs, snapshot_refs


class Collector:
    def __init__(
        self,
        db: Database,
        node: str,
        content: ContentManager,
        snapshotter: Callable[[str], Snapshotter | None],
    ) -> None:
        self._db = db
        self._node = node
        self._content = content
        self._snapshotter = snapshotter

    # -- mark -------------------------------------------------------------

    def _load(self, conn: Connection, now: float) -> _Graph:
        g = _Graph()
        for row in conn.execute(
            select(content_blobs.c.namespace, content_blobs.c.digest, content_blobs.c.labels)
        ):
            key = (row.namespace, row.digest)
            g.content_labels[key] = dict(row.labels or {})
            if LABEL_GC_ROOT in g.content_labels[key]:
                g.content_roots.add(key)
        rows = conn.execute(select(snapshots).where(snapshots.c.node == self._node)).all()
        by_id = {r.id: (r.namespace, r.snapshotter, r.key) for r in rows}
        for r in rows:
            skey = by_id[r.id]
            g.snapshot_labels[skey] = dict(r.labels or {})
            g.snapshot_parent[skey] = by_id.get(r.parent_id) if r.parent_id is not None else None
            if LABEL_GC_ROOT in g.snapshot_labels[skey]:
                g.snapshot_roots.add(skey)
        for skey in g.snapshot_parent:
            depth, cursor = 0, g.snapshot_parent[skey]
            while cursor is not None:
                depth, cursor = depth + 1, g.snapshot_parent.get(cursor)
            g.snapshot_depth[skey] = depth
        for image in conn.execute(select(images.c.namespace, images.c.digest)):
            g.content_roots.add((image.namespace, image.digest))
        self._load_containers(conn, g)
        self._load_leases(conn, g, now)
        return g

    def _load_containers(self, conn: Connection, g: _Graph) -> None:
        table = metadata.tables.get("containers")
        if table is None:  # the runtime service's table, once it exists
            return
        for row in conn.execute(select(table)):
            ns = row.namespace
            if getattr(row, "snapshotter", "") and getattr(row, "snapshot_key", ""):
                g.snapshot_roots.add((ns, row.snapshotter, row.snapshot_key))
            content_refs, snapshot_refs = references(ns, dict(getattr(row, "labels", None) or {}))
            g.content_roots |= content_refs
            g.snapshot_roots |= snapshot_refs

    def _load_leases(self, conn: Connection, g: _Graph, now: float) -> None:
        alive: dict[tuple[str, str], bool] = {}
        for row in conn.execute(select(leases)):
            labels = dict(row.labels or {})
            if _expired(labels, now):
                g.expired_leases.append((row.namespace, row.id))
                continue
            alive[(row.namespace, row.id)] = LABEL_GC_FLAT in labels
        resources: list[tuple[str, str, str, str]] = [
            (r.namespace, r.lease, r.type, r.id) for r in conn.execute(select(lease_resources))
        ]
        resources += [
            (r.namespace, r.lease, r.kind, r.id) for r in conn.execute(select(content_lease_refs))
        ]
        resources += [
            (r.namespace, r.lease, f"snapshots/{r.snapshotter}", r.key)
            for r in conn.execute(select(snapshot_lease_refs))
        ]
        for ns, lease, kind, ident in resources:
            flat = alive.get((ns, lease))
            if flat is None:
                continue  # no such lease (deleted, or expired above)
            if kind == "content":
                (g.flat_content if flat else g.content_roots).add((ns, ident))
            elif kind.startswith("snapshots/"):
                key = (ns, kind.removeprefix("snapshots/"), ident)
                (g.flat_snapshots if flat else g.snapshot_roots).add(key)

    @staticmethod
    def _mark(g: _Graph) -> tuple[set[ContentKey], set[SnapshotKey]]:
        content_seen: set[ContentKey] = set()
        snapshot_seen: set[SnapshotKey] = set()
        content_todo = list(g.content_roots)
        snapshot_todo = list(g.snapshot_roots)
        while content_todo or snapshot_todo:
            if content_todo:
                key = content_todo.pop()
                if key in content_seen:
                    continue
                content_seen.add(key)
                labels = g.content_labels.get(key, {})
            else:
                skey = snapshot_todo.pop()
                if skey in snapshot_seen:
                    continue
                snapshot_seen.add(skey)
                parent = g.snapshot_parent.get(skey)
                if parent is not None:
                    snapshot_todo.append(parent)
                key, labels = skey[:2], g.snapshot_labels.get(skey, {})
            c_refs, s_refs = references(key[0], labels)
            content_todo += c_refs
            snapshot_todo += s_refs
        # Flat-leased items stay alive without keeping what they reference alive.
        return content_seen | g.flat_content, snapshot_seen | g.flat_snapshots

    def plan(self) -> Plan:
        now = time.time()
        with self._db.read() as conn:
            g = self._load(conn, now)
        content_alive, snapshots_alive = self._mark(g)
        dead_content = sorted(k for k in g.content_labels if k not in content_alive)
        dead_snapshots = sorted(
            (k for k in g.snapshot_parent if k not in snapshots_alive),
            key=lambda k: -g.snapshot_depth.get(k, 0),  # children before parents
        )
        return Plan(dead_content, dead_snapshots, sorted(g.expired_leases))

    # -- sweep ------------------------------------------------------------

    def collect(self, dry_run: bool = False) -> Plan:
        first = self.plan()
        if dry_run or not first:
            return first
        second = self.plan()
        plan = Plan(
            [c for c in second.content if c in set(first.content)],
            [s for s in second.snapshots if s in set(first.snapshots)],
            [le for le in second.expired_leases if le in set(first.expired_leases)],
        )
        self._sweep(plan)
        return plan

    def _sweep(self, plan: Plan) -> None:
        from services.images.lease_store import LeaseRecords

        lease_records = LeaseRecords(self._db)
        for ns, lease_id in plan.expired_leases:
            with request_context.using(namespace=ns), _ignore(NotFound):
                lease_records.delete(lease_id)
        for ns, snapshotter_name, key in plan.snapshots:
            snapshotter = self._snapshotter(snapshotter_name)
            if snapshotter is None:
                continue
            with request_context.using(namespace=ns), _ignore(NotFound, FailedPrecondition):
                snapshotter.remove(key)
        for ns, digest in plan.content:
            with request_context.using(namespace=ns), _ignore(NotFound):
                self._content.delete(digest)
        if plan:
            log.info(
                "garbage collected %d blobs, %d snapshots, %d expired leases",
                len(plan.content),
                len(plan.snapshots),
                len(plan.expired_leases),
            )


class _ignore:
    """Suppress the given errors, logging them (a removal raced another one)."""

    def __init__(self, *errors: type[Exception]) -> None:
        self._errors = errors

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, error: object, tb: object) -> bool:
        if isinstance(error, self._errors):
            log.debug("gc: %s", error)
            return True
        return False
