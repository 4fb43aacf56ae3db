"""Every table of the suite, grouped by the process that writes it.

Each service writes only its own tables (ARCHITECTURE.md); the garbage
collector is the one reader across them. Timestamps are integer nanoseconds
since the epoch (protobuf Timestamp precision on SQLite and PostgreSQL alike);
labels are JSON objects of strings.
"""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, Index, MetaData, String, Table

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# ---- content service ------------------------------------------------------

content_blobs = Table(
    "content_blobs",
    metadata,
    Column("namespace", String(76), primary_key=True),
    Column("digest", String(160), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("labels", JSON, nullable=False, default=dict),
)
Index("ix_content_blobs_digest", content_blobs.c.digest)

content_ingests = Table(
    "content_ingests",
    metadata,
    Column("namespace", String(76), primary_key=True),
    Column("ref", String(512), primary_key=True),
    # Directory name of the ingest under <root>/content/ingest; derived from namespace+ref.
    Column("key", String(64), nullable=False, unique=True),
    Column("expected", String(160), nullable=False, default=""),
    Column("total", BigInteger, nullable=False, default=0),
    Column("started_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    # Who is writing now: "<boot id>/<pid>/<process start ticks>@<host>", or "".
    Column("holder", String(255), nullable=False, default=""),
    Column("held_until", BigInteger, nullable=False, default=0),
)

# Content and ingests created under a lease (containerd-lease), for the GC.
content_lease_refs = Table(
    "content_lease_refs",
    metadata,
    Column("namespace", String(76), primary_key=True),
    Column("lease", String(76), primary_key=True),
    Column("kind", String(16), primary_key=True),  # "content" or "ingests"
    Column("id", String(512), primary_key=True),
)
