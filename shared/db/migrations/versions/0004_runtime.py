"""runtime service: container records

Revision ID: 0004_runtime
Revises: 0003_images
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_runtime"
down_revision = "0003_images"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "containers",
        sa.Column("namespace", sa.String(76), nullable=False),
        sa.Column("id", sa.String(76), nullable=False),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("image", sa.String(1024), nullable=False),
        sa.Column("runtime_name", sa.String(255), nullable=False),
        sa.Column("runtime_options_type", sa.String(255), nullable=False),
        sa.Column("runtime_options", sa.LargeBinary, nullable=False),
        sa.Column("spec_type", sa.String(255), nullable=False),
        sa.Column("spec", sa.LargeBinary, nullable=False),
        sa.Column("snapshotter", sa.String(64), nullable=False),
        sa.Column("snapshot_key", sa.String(1024), nullable=False),
        sa.Column("extensions", sa.JSON, nullable=False),
        sa.Column("sandbox", sa.String(76), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("namespace", "id", name="pk_containers"),
    )


def downgrade() -> None:
    op.drop_table("containers")
