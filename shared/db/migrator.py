"""Apply the alembic history at start-up, safely from several processes at once.

Every service calls :func:`migrate` before serving. Concurrent callers are
serialized (a file lock beside a SQLite database, an advisory lock on
PostgreSQL); the first applies what is missing, the rest find nothing to do.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
# Any fixed 64-bit number; it names berth's migration lock on a PostgreSQL server.
_PG_LOCK_ID = 0x62657274685F6D67


def alembic_config(connection: Connection | None = None) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@contextlib.contextmanager
def _migration_lock(engine: Engine, conn: Connection) -> Iterator[None]:
    if engine.dialect.name == "sqlite":
        database = engine.url.database or ""
        if not database or database == ":memory:":
            yield
            return
        lock_path = os.path.abspath(database) + ".migrate.lock"
        with open(lock_path, "a+b") as lock_file:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)
    elif engine.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _PG_LOCK_ID})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _PG_LOCK_ID})
            conn.commit()
    else:
        yield


def migrate(engine: Engine) -> str | None:
    """Bring the schema to the newest revision; returns that revision."""
    head = head_revision()
    with engine.connect() as conn, _migration_lock(engine, conn):
        current = MigrationContext.configure(conn).get_current_revision()
        if current != head:
            log.info("migrating database from %s to %s", current or "empty", head)
            command.upgrade(alembic_config(conn), "head")
            conn.commit()
    return head
