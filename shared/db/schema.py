"""Every table of the suite, grouped by the process that writes it.

Each service writes only its own tables (ARCHITECTURE.md); the garbage
collector is the one reader across them. Timestamps are integer nanoseconds
since the epoch (protobuf Timestamp precision on SQLite and PostgreSQL alike);
labels are JSON objects of strings.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# ---- content service ------------------------------------------------------

# A blob as one namespace sees it; the bytes are shared on disk by digest.
content_blobs = Table(
    "content_blobs",
    metadata,
    Column("namespace", String(76), primary_key=True),
    Column("digest", String(160), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("labels", JSON, nullable=False),
)
Index("ix_content_blobs_digest", content_blobs.c.digest)

# An ingest in progress in a namespace; its bytes live under <root>/content/ingest.
content_ingests = Table(
    "content_ingests",
    metadata,
    Column("namespace", String(76), primary_key=True),
    Column("ref", String(512), primary_key=True),
    Column("expected", String(160), nullable=False),
    Column("total", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
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

# ---- snapshots service ----------------------------------------------------

# Every snapshot of every snapshotter on every node. ``id`` names the snapshot's
# directory on its node; ``key`` is the active key or the committed name, unique
# per (node, snapshotter, namespace). Parents are rows of the same snapshotter.
snapshots = Table(
    "snapshots",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("node", String(255), nullable=False),
    Column("snapshotter", String(64), nullable=False),
    Column("namespace", String(76), nullable=False),
    Column("key", String(1024), nullable=False),
    Column("kind", SmallInteger, nullable=False),
    Column("parent_id", BigInteger, ForeignKey("snapshots.id"), nullable=True),
    Column("labels", JSON, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    # Usage over the parent, measured when committed (active snapshots are measured on demand).
    Column("size", BigInteger, nullable=False),
    Column("inodes", BigInteger, nullable=False),
    UniqueConstraint("node", "snapshotter", "namespace", "key", name="uq_snapshots_key"),
)
Index("ix_snapshots_parent_id", snapshots.c.parent_id)

# Snapshots created under a lease (containerd-lease), for the GC.
snapshot_lease_refs = Table(
    "snapshot_lease_refs",
    metadata,
    Column("namespace", String(76), primary_key=True),
    Column("lease", String(76), primary_key=True),
    Column("snapshotter", String(64), primary_key=True),
    Column("key", String(1024), primary_key=True),
)

# ---- images service ------------------------------------------------------

# Namespaces with labels. A namespace also exists while anything lives in it
# (containerd creates namespaces on first use): Namespaces.List joins both.
namespaces = Table(
    "namespaces",
    metadata,
    Column("name", String(76), primary_key=True),
    Column("labels", JSON, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

images = Table(
    "images",
    metadata,
    Column("namespace", String(76), primary_key=True),
    Column("name", String(1024), primary_key=True),
    Column("media_type", String(255), nullable=False),
    Column("digest", String(160), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("annotations", JSON, nullable=False),
    Column("labels", JSON, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)
Index("ix_images_digest", images.c.digest)

leases = Table(
    "leases",
    metadata,
    Column("namespace", String(76), primary_key=True),
    Column("id", String(76), primary_key=True),
    Column("labels", JSON, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

# Resources added to a lease by Leases.AddResource. (What services create under a
# lease they record themselves: content_lease_refs, snapshot_lease_refs.)
lease_resources = Table(
    "lease_resources",
    metadata,
    Column("namespace", String(76), primary_key=True),
    Column("lease", String(76), primary_key=True),
    Column("type", String(128), primary_key=True),  # content, ingests, snapshots/<snapshotter>
    Column("id", String(1024), primary_key=True),
)

# ---- runtime service -----------------------------------------------------

# containerd's container records. Protobuf Any values are kept as type URL + bytes.
containers = Table(
    "containers",
    metadata,
    Column("namespace", String(76), primary_key=True),
    Column("id", String(76), primary_key=True),
    Column("labels", JSON, nullable=False),
    Column("image", String(1024), nullable=False),
    Column("runtime_name", String(255), nullable=False),
    Column("runtime_options_type", String(255), nullable=False),
    Column("runtime_options", LargeBinary, nullable=False),
    Column("spec_type", String(255), nullable=False),
    Column("spec", LargeBinary, nullable=False),
    Column("snapshotter", String(64), nullable=False),
    Column("snapshot_key", String(1024), nullable=False),
    Column("extensions", JSON, nullable=False),  # name -> [type URL, base64 value]
    Column("sandbox", String(76), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)
