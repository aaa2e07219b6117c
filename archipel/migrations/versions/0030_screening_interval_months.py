"""screening interval: a programme's interval in months, within which a cancer after a normal screening is an
interval cancer

Revision ID: 0030
Revises: 0029
Create Date: 2026-12-02 12:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0030"
down_revision = "0029"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("screening_programmes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("interval_months", sa.Integer(), server_default="24", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("screening_programmes", schema=None) as batch_op:
        batch_op.drop_column("interval_months")
