"""content service: blobs per namespace, ingests, lease references

Revision ID: 0001_content
Revises:
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_content"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "content_blobs",
        sa.Column("namespace", sa.String(76), nullable=False),
        sa.Column("digest", sa.String(160), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("namespace", "digest", name="pk_content_blobs"),
    )
    op.create_index("ix_content_blobs_digest", "content_blobs", ["digest"])
    op.create_table(
        "content_ingests",
        sa.Column("namespace", sa.String(76), nullable=False),
        sa.Column("ref", sa.String(512), nullable=False),
        sa.Column("expected", sa.String(160), nullable=False),
        sa.Column("total", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("namespace", "ref", name="pk_content_ingests"),
    )
    op.create_table(
        "content_lease_refs",
        sa.Column("namespace", sa.String(76), nullable=False),
        sa.Column("lease", sa.String(76), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("id", sa.String(512), nullable=False),
        sa.PrimaryKeyConstraint("namespace", "lease", "kind", "id", name="pk_content_lease_refs"),
    )


def downgrade() -> None:
    op.drop_table("content_lease_refs")
    op.drop_table("content_ingests")
    op.drop_index("ix_content_blobs_digest", table_name="content_blobs")
    op.drop_table("content_blobs")
