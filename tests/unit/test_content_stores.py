"""The content contract on the local store and the namespaced store (SQLite, PostgreSQL)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from services.content.local import LocalStore
from services.content.metadata import NamespacedStore
from shared import context
from shared.db import Database, migrate
from shared.db.schema import content_lease_refs
from shared.errors import FailedPrecondition, InvalidArgument, NotFound
from tests.conformance.content import ContentStoreConformance, digest_of, put, read_all


class TestLocalStore(ContentStoreConformance):
    supports_labels = False

    @pytest.fixture
    def store(self, tmp_path: Path) -> LocalStore:
        return LocalStore(tmp_path / "content")


def _namespaced(root: Path, url: str) -> Iterator[NamespacedStore]:
    db = Database(url)
    migrate(db.engine)
    try:
        yield NamespacedStore(LocalStore(root / "content"), db)
    finally:
        db.dispose()


class TestNamespacedStoreSqlite(ContentStoreConformance):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[NamespacedStore]:
        yield from _namespaced(tmp_path, f"sqlite:///{tmp_path / 'berth.db'}")


@pytest.mark.postgres
class TestNamespacedStorePostgres(ContentStoreConformance):
    @pytest.fixture
    def store(self, tmp_path: Path, postgres_url: str) -> Iterator[NamespacedStore]:
        yield from _namespaced(tmp_path, postgres_url)


@pytest.fixture
def namespaced(tmp_path: Path) -> Iterator[NamespacedStore]:
    yield from _namespaced(tmp_path, f"sqlite:///{tmp_path / 'berth.db'}")


def test_namespaces_see_only_their_blobs(namespaced: NamespacedStore) -> None:
    data = b"shared bytes"
    digest = digest_of(data)
    with context.using(namespace="a"):
        put(namespaced, data, labels={"owner": "a"})
    with context.using(namespace="b"):
        with pytest.raises(NotFound):
            namespaced.info(digest)
        # Knowing the digest is not enough: b must supply the bytes itself.
        put(namespaced, data, labels={"owner": "b"})
        assert namespaced.info(digest).labels == {"owner": "b"}
    with context.using(namespace="a"):
        namespaced.delete(digest)
        with pytest.raises(NotFound):
            namespaced.info(digest)
    with context.using(namespace="b"):
        assert read_all(namespaced, digest) == data  # still on disk for b
        namespaced.delete(digest)
    assert not namespaced.local.blob_path(digest).exists()


def test_ingests_are_per_namespace(namespaced: NamespacedStore) -> None:
    with context.using(namespace="a"):
        w = namespaced.writer("same-ref")
        w.write(b"from a")
        w.close()
    with context.using(namespace="b"):
        assert namespaced.list_statuses() == []
        w = namespaced.writer("same-ref")  # not locked by a's ingest
        assert w.status().offset == 0
        w.close()
        namespaced.abort("same-ref")
    with context.using(namespace="a"):
        assert namespaced.status("same-ref").offset == len(b"from a")


def test_namespace_required(namespaced: NamespacedStore) -> None:
    with pytest.raises(FailedPrecondition, match="namespace is required"):
        namespaced.info(digest_of(b"x"))
    with context.using(namespace="bad/name"), pytest.raises(InvalidArgument):
        namespaced.info(digest_of(b"x"))


def test_leases_record_ingests_and_content(namespaced: NamespacedStore) -> None:
    data = b"leased"
    digest = digest_of(data)

    def refs() -> set[tuple[str, str, str]]:
        with namespaced.db.read() as conn:
            rows = conn.execute(select(content_lease_refs)).all()
        return {(r.lease, r.kind, r.id) for r in rows}

    with context.using(namespace="default", lease="pull-1"):
        w = namespaced.writer("layer-1", total=len(data), expected=digest)
        assert refs() == {("pull-1", "ingests", "layer-1")}
        w.write(data)
        w.commit(len(data), digest)
        w.close()
    assert refs() == {("pull-1", "content", digest)}
    with context.using(namespace="default"):
        namespaced.delete(digest)
    assert refs() == set()


def test_ingest_paths_never_come_from_refs(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "content")
    w = store.writer("default/layer-sha256:abc")
    w.close()
    dirs = [p.name for p in store.ingests.iterdir()]
    assert dirs == [hashlib.sha256(b"default/layer-sha256:abc").hexdigest()]


def test_local_store_keeps_no_labels(tmp_path: Path) -> None:
    from shared.content import Info
    from shared.errors import Unimplemented

    store = LocalStore(tmp_path / "content")
    with pytest.raises(Unimplemented, match="no labels"):
        store.update(Info("sha256:" + "a" * 64, 0, 0, 0, {"k": "v"}))
