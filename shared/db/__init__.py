"""The metadata database: one SQLAlchemy URL for the suite, one alembic history."""

from shared.db.engine import Database, create_engine, normalize_url
from shared.db.migrator import migrate

__all__ = ["Database", "create_engine", "migrate", "normalize_url"]
