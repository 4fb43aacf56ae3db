"""The content contract with namespaces, labels and leases (containerd's metadata/content.go).

Blobs are shared on disk by digest but visible per namespace: a namespace sees
a blob once something in it committed that blob (the writer must supply the
bytes; holding a digest is not proof of having the data). Labels, including
``containerd.io/gc.ref.*``, live in the database. Work done under a lease
(``containerd-lease``) is recorded against it for the garbage collector.

Several content processes may share one blob directory and one database: a
blob is renamed into place and recorded in the same write transaction that
removal also takes, so a concurrent delete in another replica can never
remove a blob that was just committed in a namespace.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence

from sqlalchemy import Table, and_, delete, func, insert, select, text, update
from sqlalchemy.engine import Connection, Row

from services.content.local import InfoAdaptor, LocalStore, LocalWriter, StatusAdaptor
from shared import content, filters
from shared import context as request_context
from shared.content import Info, Status
from shared.db import Database
from shared.db.schema import content_blobs, content_ingests, content_lease_refs
from shared.errors import AlreadyExists, InvalidArgument, NotFound

PAGE_SIZE = 500


def _info(row: Row[tuple[object, ...]] | Row) -> Info:  # type: ignore[type-arg]
    return Info(
        digest=row.digest,
        size=row.size,
        created_at=row.created_at,
        updated_at=row.updated_at,
        labels=dict(row.labels or {}),
    )


def _backend_ref(namespace: str, ref: str) -> str:
    return f"{namespace}/{ref}"


def _exists(conn: Connection, table: Table, **columns: str) -> bool:
    """Whether ``table`` has a row with these column values."""
    where = [table.c[name] == value for name, value in columns.items()]
    return bool(conn.execute(select(func.count()).select_from(table).where(*where)).scalar())


def _lock_digest(conn: Connection, digest: str) -> None:
    """Serialize commit and delete of one digest across replicas.

    SQLite write transactions are already serialized (BEGIN IMMEDIATE).
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:d))"), {"d": digest})


def _add_lease_ref(conn: Connection, namespace: str, kind: str, ident: str) -> None:
    lease = request_context.current_lease()
    if not lease:
        return
    ref = {"namespace": namespace, "lease": lease, "kind": kind, "id": ident}
    if not _exists(conn, content_lease_refs, **ref):
        conn.execute(insert(content_lease_refs).values(**ref))


def _drop_lease_refs(conn: Connection, namespace: str, kind: str, ident: str) -> None:
    conn.execute(
        delete(content_lease_refs).where(
            content_lease_refs.c.namespace == namespace,
            content_lease_refs.c.kind == kind,
            content_lease_refs.c.id == ident,
        )
    )


class NamespacedWriter:
    def __init__(
        self,
        store: NamespacedStore,
        backend: LocalWriter,
        namespace: str,
        ref: str,
        expected: str,
        total: int,
    ) -> None:
        self._store = store
        self._backend = backend
        self._namespace = namespace
        self._ref = ref
        self._expected = expected
        self._total = total

    @property
    def ref(self) -> str:
        return self._ref

    def status(self) -> Status:
        st = self._backend.status()
        return Status(
            ref=self._ref,
            offset=st.offset,
            total=st.total or self._total,
            expected=self._expected,
            started_at=st.started_at,
            updated_at=st.updated_at,
        )

    def digest(self) -> str:
        return self._backend.digest()

    def write(self, data: bytes) -> int:
        return self._backend.write(data)

    def truncate(self, size: int) -> None:
        self._backend.truncate(size)

    def commit(self, size: int, expected: str, labels: Mapping[str, str] | None = None) -> Info:
        labels = {k: v for k, v in content.validate_labels(labels or {}).items() if v != ""}
        expected = expected or self._expected
        now = time.time_ns()
        ns, ref = self._namespace, self._ref
        with self._store.db.write() as conn:
            if not _exists(conn, content_ingests, namespace=ns, ref=ref):
                raise NotFound(f"ingest {ref} was aborted")
            digest = self._backend.verify(size, expected)
            _lock_digest(conn, digest)
            present = _exists(conn, content_blobs, namespace=ns, digest=digest)
            if present:
                self._backend.discard()
            else:
                try:
                    info = self._backend.commit(size, expected)
                except AlreadyExists:
                    # The bytes were verified; another namespace committed them first.
                    info = self._store.local.info(digest)
                conn.execute(
                    insert(content_blobs).values(
                        namespace=ns,
                        digest=info.digest,
                        size=info.size,
                        created_at=now,
                        updated_at=now,
                        labels=labels,
                    )
                )
                _add_lease_ref(conn, ns, "content", info.digest)
            conn.execute(
                delete(content_ingests).where(
                    content_ingests.c.namespace == ns, content_ingests.c.ref == ref
                )
            )
            _drop_lease_refs(conn, ns, "ingests", ref)
        if present:
            raise AlreadyExists(f"content {digest}: already exists")
        return Info(info.digest, info.size, now, now, labels)

    def close(self) -> None:
        self._backend.close()


class NamespacedStore:
    # Clients read blobs in many small ranged calls (ctr content get asks 32 KiB
    # at a time); remembering for a moment that a namespace sees a digest saves a
    # query per call. A delete here forgets at once; another replica's delete is
    # seen within the TTL, and reading then fails as the bytes are gone.
    VISIBLE_TTL_NS = 2_000_000_000
    VISIBLE_MAX = 4096

    def __init__(self, local: LocalStore, db: Database) -> None:
        self.local = local
        self.db = db
        self._visible: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._visible_lock = threading.Lock()

    def _remember_visible(self, namespace: str, digest: str) -> None:
        with self._visible_lock:
            self._visible[(namespace, digest)] = time.monotonic_ns() + self.VISIBLE_TTL_NS
            self._visible.move_to_end((namespace, digest))
            while len(self._visible) > self.VISIBLE_MAX:
                self._visible.popitem(last=False)

    def _known_visible(self, namespace: str, digest: str) -> bool:
        with self._visible_lock:
            expires = self._visible.get((namespace, digest))
            if expires is None:
                return False
            if expires < time.monotonic_ns():
                del self._visible[(namespace, digest)]
                return False
            return True

    def _forget_visible(self, namespace: str, digest: str) -> None:
        with self._visible_lock:
            self._visible.pop((namespace, digest), None)

    # -- Provider ------------------------------------------------------------

    def _row(self, conn: Connection, namespace: str, digest: str) -> Info:
        row = conn.execute(
            select(content_blobs).where(
                content_blobs.c.namespace == namespace, content_blobs.c.digest == digest
            )
        ).one_or_none()
        if row is None:
            raise NotFound(f"content {digest}: not found")
        return _info(row)

    def info(self, digest: str) -> Info:
        namespace = request_context.require_namespace()
        content.parse_digest(digest)
        with self.db.read() as conn:
            return self._row(conn, namespace, digest)

    def read(self, digest: str, offset: int = 0, size: int = 0) -> Iterator[bytes]:
        namespace = request_context.require_namespace()
        if not self._known_visible(namespace, digest):
            self.info(digest)
            self._remember_visible(namespace, digest)
        return self.local.read(digest, offset, size)

    # -- Ingester --------------------------------------------------------------

    def writer(self, ref: str, total: int = 0, expected: str = "") -> NamespacedWriter:
        namespace = request_context.require_namespace()
        content.validate_ref(ref)
        if expected:
            content.parse_digest(expected)
            with self.db.read() as conn:
                if _exists(conn, content_blobs, namespace=namespace, digest=expected):
                    raise AlreadyExists(f"content {expected}: already exists")
        # The backend never sees the digest: the namespace only gets the blob
        # once its own writer has supplied the bytes.
        backend = self.local.writer(_backend_ref(namespace, ref), total)
        try:
            with self.db.write() as conn:
                existing = conn.execute(
                    select(content_ingests).where(
                        content_ingests.c.namespace == namespace, content_ingests.c.ref == ref
                    )
                ).one_or_none()
                if existing is None:
                    conn.execute(
                        insert(content_ingests).values(
                            namespace=namespace,
                            ref=ref,
                            expected=expected,
                            total=total,
                            created_at=time.time_ns(),
                        )
                    )
                elif (expected and expected != existing.expected) or (
                    total and total != existing.total
                ):
                    conn.execute(
                        update(content_ingests)
                        .where(
                            content_ingests.c.namespace == namespace, content_ingests.c.ref == ref
                        )
                        .values(
                            expected=expected or existing.expected,
                            total=total or existing.total,
                        )
                    )
                _add_lease_ref(conn, namespace, "ingests", ref)
                if existing is not None:
                    expected = expected or existing.expected
                    total = total or existing.total
        except BaseException:
            backend.close()
            raise
        return NamespacedWriter(self, backend, namespace, ref, expected, total)

    # -- IngestManager ---------------------------------------------------------

    def _status(self, namespace: str, ref: str) -> Status:
        with self.db.read() as conn:
            row = conn.execute(
                select(content_ingests).where(
                    content_ingests.c.namespace == namespace, content_ingests.c.ref == ref
                )
            ).one_or_none()
        if row is None:
            raise NotFound(f"ingest {ref}: not found")
        try:
            st = self.local.status(_backend_ref(namespace, ref))
        except NotFound:
            raise NotFound(f"ingest {ref}: not found") from None
        return Status(
            ref=ref,
            offset=st.offset,
            total=st.total or row.total,
            expected=row.expected,
            started_at=st.started_at,
            updated_at=st.updated_at,
        )

    def status(self, ref: str) -> Status:
        namespace = request_context.require_namespace()
        content.validate_ref(ref)
        return self._status(namespace, ref)

    def list_statuses(self, filter_exprs: Sequence[str] = ()) -> list[Status]:
        namespace = request_context.require_namespace()
        match = filters.parse_all(list(filter_exprs))
        with self.db.read() as conn:
            refs = list(
                conn.execute(
                    select(content_ingests.c.ref)
                    .where(content_ingests.c.namespace == namespace)
                    .order_by(content_ingests.c.ref)
                ).scalars()
            )
        statuses = []
        for ref in refs:
            try:
                st = self._status(namespace, ref)
            except NotFound:
                continue
            if match.match(StatusAdaptor(st)):
                statuses.append(st)
        return statuses

    def abort(self, ref: str) -> None:
        namespace = request_context.require_namespace()
        content.validate_ref(ref)
        with self.db.write() as conn:
            deleted = conn.execute(
                delete(content_ingests).where(
                    content_ingests.c.namespace == namespace, content_ingests.c.ref == ref
                )
            ).rowcount
            if not deleted:
                raise NotFound(f"ingest {ref}: not found")
            _drop_lease_refs(conn, namespace, "ingests", ref)
        with contextlib.suppress(NotFound):
            self.local.abort(_backend_ref(namespace, ref))

    # -- Manager ---------------------------------------------------------------

    def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        namespace = request_context.require_namespace()
        content.parse_digest(info.digest)
        with self.db.write() as conn:
            current = self._row(conn, namespace, info.digest)
            labels = dict(current.labels)
            if not fieldpaths:
                labels = dict(info.labels)
            for path in fieldpaths:
                if path == "labels":
                    labels = dict(info.labels)
                elif path.startswith("labels."):
                    key = path.removeprefix("labels.")
                    if key in info.labels:
                        labels[key] = info.labels[key]
                    else:
                        labels.pop(key, None)
                else:
                    raise InvalidArgument(f"cannot update {path!r} field on content info")
            # An empty value removes the label, as in containerd's metadata store.
            labels = {k: v for k, v in labels.items() if v != ""}
            content.validate_labels(labels)
            now = time.time_ns()
            conn.execute(
                update(content_blobs)
                .where(
                    content_blobs.c.namespace == namespace, content_blobs.c.digest == info.digest
                )
                .values(labels=labels, updated_at=now)
            )
        return Info(current.digest, current.size, current.created_at, now, labels)

    def walk(self, filter_exprs: Sequence[str] = ()) -> Iterator[Info]:
        namespace = request_context.require_namespace()
        match = filters.parse_all(list(filter_exprs))
        return self._walk(namespace, match)

    def _walk(self, namespace: str, match: filters.Filter) -> Iterator[Info]:
        after = ""
        while True:
            with self.db.read() as conn:
                rows = conn.execute(
                    select(content_blobs)
                    .where(
                        and_(content_blobs.c.namespace == namespace, content_blobs.c.digest > after)
                    )
                    .order_by(content_blobs.c.digest)
                    .limit(PAGE_SIZE)
                ).all()
            for row in rows:
                info = _info(row)
                if match.match(InfoAdaptor(info)):
                    yield info
            if len(rows) < PAGE_SIZE:
                return
            after = rows[-1].digest

    def delete(self, digest: str) -> None:
        namespace = request_context.require_namespace()
        content.parse_digest(digest)
        with self.db.write() as conn:
            _lock_digest(conn, digest)
            deleted = conn.execute(
                delete(content_blobs).where(
                    content_blobs.c.namespace == namespace, content_blobs.c.digest == digest
                )
            ).rowcount
            self._forget_visible(namespace, digest)
            if not deleted:
                raise NotFound(f"content {digest}: not found")
            _drop_lease_refs(conn, namespace, "content", digest)
            if not _exists(conn, content_blobs, digest=digest):
                with contextlib.suppress(NotFound):
                    self.local.delete(digest)
