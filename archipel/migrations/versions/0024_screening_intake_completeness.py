"""screening intake: the views a programme's exams need and their settle time, and each study's latest image

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-02 08:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import archipel.platform.db

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("screening_programmes", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "screening_views",
                sa.String(length=128),
                server_default="R-CC,R-MLO,L-CC,L-MLO",
                nullable=False,
            )
        )
        batch_op.add_column(sa.Column("settle_minutes", sa.Integer(), server_default="20", nullable=False))
    with op.batch_alter_table("screening_studies", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("last_image_at", archipel.platform.db.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("screening_studies", schema=None) as batch_op:
        batch_op.drop_column("last_image_at")
    with op.batch_alter_table("screening_programmes", schema=None) as batch_op:
        batch_op.drop_column("settle_minutes")
        batch_op.drop_column("screening_views")
