"""alembic environment: berth always hands in a live connection (shared.db.migrator)."""

from __future__ import annotations

from alembic import context

from shared.db import schema

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through shared.db.migrator, which supplies a connection")

context.configure(
    connection=connection,
    target_metadata=schema.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
