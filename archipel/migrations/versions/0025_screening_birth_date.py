"""screening episodes keep the woman's birth date when the source gives it (the history import)

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-02 08:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("screening_episodes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("birth_date", sa.Date(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("screening_episodes", schema=None) as batch_op:
        batch_op.drop_column("birth_date")
