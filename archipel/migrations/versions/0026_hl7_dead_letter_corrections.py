"""hl7 dead letter corrections: a message over the size limit is kept truncated, and a correction is kept beside
the message as received

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-02 08:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import archipel.platform.db

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hl7_dead_letters", schema=None) as batch_op:
        batch_op.add_column(sa.Column("truncated", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(
            sa.Column(
                "received_size",
                sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                nullable=False,
                server_default="0",
            )
        )
        batch_op.add_column(sa.Column("corrected", sa.LargeBinary(), nullable=True))
        batch_op.add_column(
            sa.Column("corrected_at", archipel.platform.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("corrected_by", sa.String(128), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("hl7_dead_letters", schema=None) as batch_op:
        for column in ("corrected_by", "corrected_at", "corrected", "received_size", "truncated"):
            batch_op.drop_column(column)
