"""storage tiers and fixity: one preservation row per referenced blob (tier, replica copy, last fixity check)

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-02 04:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import archipel.platform.db

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "preserved_blobs",
        sa.Column("store", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("tier", sa.String(length=16), server_default="hot", nullable=False),
        sa.Column("tiered_at", archipel.platform.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("replicated_at", archipel.platform.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("checked_at", archipel.platform.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=16), server_default="", nullable=False),
        sa.Column("problem", sa.Text(), server_default="", nullable=False),
        sa.Column("problem_since", archipel.platform.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("store", "key", name=op.f("pk_preserved_blobs")),
    )
    with op.batch_alter_table("preserved_blobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_preserved_blobs_checked_at"), ["checked_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_preserved_blobs_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_preserved_blobs_tier"), ["tier"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("preserved_blobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_preserved_blobs_tier"))
        batch_op.drop_index(batch_op.f("ix_preserved_blobs_status"))
        batch_op.drop_index(batch_op.f("ix_preserved_blobs_checked_at"))
    op.drop_table("preserved_blobs")
