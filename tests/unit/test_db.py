"""The database layer on real SQLite files and a real PostgreSQL server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import insert, inspect, select, text

from shared.db import Database, migrate
from shared.db import migrator as migrate_module
from shared.db.schema import content_blobs

MIGRATE_SNIPPET = (
    "import sys; from shared.db import Database, migrate; "
    "db = Database(sys.argv[1]); print(migrate(db.engine)); db.dispose()"
)


def _exercise(db: Database) -> None:
    head = migrate(db.engine)
    assert head == migrate_module.head_revision()
    assert migrate_module.current_revision(db.engine) == head
    assert {"content_blobs", "content_ingests", "content_lease_refs"} <= set(
        inspect(db.engine).get_table_names()
    )
    with db.write() as conn:
        conn.execute(
            insert(content_blobs).values(
                namespace="default", digest="sha256:" + "a" * 64, size=3,
                created_at=1, updated_at=2, labels={"k": "v"},
            )
        )  # fmt: skip
    with db.read() as conn:
        row = conn.execute(select(content_blobs)).one()
    assert row.labels == {"k": "v"} and row.size == 3
    # A failing write transaction leaves nothing behind.
    with pytest.raises(RuntimeError), db.write() as conn:
        conn.execute(content_blobs.delete())
        raise RuntimeError("boom")
    with db.read() as conn:
        assert conn.execute(select(content_blobs)).all()
    # Migrating again is a no-op.
    assert migrate(db.engine) == head


def test_sqlite_wal_and_migrations(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'berth.db'}")
    try:
        _exercise(db)
        with db.read() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 1000
    finally:
        db.dispose()


def _migrate_concurrently(url: str) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-c", MIGRATE_SNIPPET, url], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]  # fmt: skip
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert out.strip() == migrate_module.head_revision()


def test_sqlite_concurrent_migrations_from_several_processes(tmp_path: Path) -> None:
    _migrate_concurrently(f"sqlite:///{tmp_path / 'berth.db'}")


@pytest.mark.postgres
def test_postgresql(postgres_url: str) -> None:
    db = Database(postgres_url)
    try:
        assert db.dialect == "postgresql"
        _exercise(db)
    finally:
        db.dispose()


@pytest.mark.postgres
def test_postgresql_concurrent_migrations(postgres_url: str) -> None:
    _migrate_concurrently(postgres_url)


def test_migrations_build_exactly_the_declared_schema(tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from shared.db.schema import metadata

    db = Database(f"sqlite:///{tmp_path / 'berth.db'}")
    try:
        migrate(db.engine)
        with db.engine.connect() as conn:
            differences = compare_metadata(MigrationContext.configure(conn), metadata)
        assert differences == []
    finally:
        db.dispose()
