"""a reading request records the prefetch job that asked the region for its priors

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-02 08:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("telerad_requests", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("prefetch_job_id", sa.String(length=32), server_default="", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("telerad_requests", schema=None) as batch_op:
        batch_op.drop_column("prefetch_job_id")
