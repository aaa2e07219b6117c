"""in-app notifications for professionals: the portal's bell (``platform.inbox``)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02 00:50:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import archipel.platform.db

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_WHEN = archipel.platform.db.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "inbox_notifications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("recipient", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("title", sa.String(length=255), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("link", sa.String(length=512), nullable=False),
        sa.Column("master_id", sa.Integer(), nullable=True),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("read_at", _WHEN, nullable=True),
        sa.Column("requires_ack", sa.Boolean(), nullable=False),
        sa.Column("acknowledged_at", _WHEN, nullable=True),
        sa.Column("acknowledged_by", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(["master_id"], ["master_patients.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_inbox_notifications_recipient", "inbox_notifications", ["recipient"])


def downgrade() -> None:
    op.drop_index("ix_inbox_notifications_recipient", table_name="inbox_notifications")
    op.drop_table("inbox_notifications")
