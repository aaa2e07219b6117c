"""screening flag resolutions: a flag at intake released by hand, or the exam sent for a retake, with its reason

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-02 08:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import archipel.platform.db

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "screening_flag_resolutions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("episode_id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("problems", sa.Text(), nullable=False),
        sa.Column("reason", sa.String(length=255), nullable=False),
        sa.Column("resolved_by", sa.String(length=128), nullable=False),
        sa.Column("resolved_at", archipel.platform.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["episode_id"], ["screening_episodes.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("screening_flag_resolutions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_screening_flag_resolutions_episode_id"), ["episode_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("screening_flag_resolutions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_screening_flag_resolutions_episode_id"))
    op.drop_table("screening_flag_resolutions")
