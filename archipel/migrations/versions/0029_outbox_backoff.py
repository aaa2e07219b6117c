"""outbox backoff: a failed message's next attempt time, and when its attempt budget ran out

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-02 08:12:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import archipel.platform.db

revision = "0029"
down_revision = "0028"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("notify_outbox", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("next_attempt_at", archipel.platform.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("failed_at", archipel.platform.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.create_index(batch_op.f("ix_notify_outbox_failed_at"), ["failed_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("notify_outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notify_outbox_failed_at"))
        batch_op.drop_column("failed_at")
        batch_op.drop_column("next_attempt_at")
