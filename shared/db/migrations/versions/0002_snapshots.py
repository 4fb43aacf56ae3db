"""snapshots service: snapshots of every snapshotter and node, lease references

Revision ID: 0002_snapshots
Revises: 0001_content
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_snapshots"
down_revision = "0001_content"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "snapshots",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("node", sa.String(255), nullable=False),
        sa.Column("snapshotter", sa.String(64), nullable=False),
        sa.Column("namespace", sa.String(76), nullable=False),
        sa.Column("key", sa.String(1024), nullable=False),
        sa.Column("kind", sa.SmallInteger, nullable=False),
        sa.Column("parent_id", sa.BigInteger, sa.ForeignKey("snapshots.id"), nullable=True),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("inodes", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("node", "snapshotter", "namespace", "key", name="uq_snapshots_key"),
    )
    op.create_index("ix_snapshots_parent_id", "snapshots", ["parent_id"])
    op.create_table(
        "snapshot_lease_refs",
        sa.Column("namespace", sa.String(76), nullable=False),
        sa.Column("lease", sa.String(76), nullable=False),
        sa.Column("snapshotter", sa.String(64), nullable=False),
        sa.Column("key", sa.String(1024), nullable=False),
        sa.PrimaryKeyConstraint(
            "namespace", "lease", "snapshotter", "key", name="pk_snapshot_lease_refs"
        ),
    )


def downgrade() -> None:
    op.drop_table("snapshot_lease_refs")
    op.drop_index("ix_snapshots_parent_id", table_name="snapshots")
    op.drop_table("snapshots")
