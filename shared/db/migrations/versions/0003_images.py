"""images service: namespaces, images, leases and their resources

Revision ID: 0003_images
Revises: 0002_snapshots
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_images"
down_revision = "0002_snapshots"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "namespaces",
        sa.Column("name", sa.String(76), nullable=False),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_namespaces"),
    )
    op.create_table(
        "images",
        sa.Column("namespace", sa.String(76), nullable=False),
        sa.Column("name", sa.String(1024), nullable=False),
        sa.Column("media_type", sa.String(255), nullable=False),
        sa.Column("digest", sa.String(160), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("annotations", sa.JSON, nullable=False),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("namespace", "name", name="pk_images"),
    )
    op.create_index("ix_images_digest", "images", ["digest"])
    op.create_table(
        "leases",
        sa.Column("namespace", sa.String(76), nullable=False),
        sa.Column("id", sa.String(76), nullable=False),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("namespace", "id", name="pk_leases"),
    )
    op.create_table(
        "lease_resources",
        sa.Column("namespace", sa.String(76), nullable=False),
        sa.Column("lease", sa.String(76), nullable=False),
        sa.Column("type", sa.String(128), nullable=False),
        sa.Column("id", sa.String(1024), nullable=False),
        sa.PrimaryKeyConstraint("namespace", "lease", "type", "id", name="pk_lease_resources"),
    )


def downgrade() -> None:
    op.drop_table("lease_resources")
    op.drop_table("leases")
    op.drop_index("ix_images_digest", table_name="images")
    op.drop_table("images")
    op.drop_table("namespaces")
