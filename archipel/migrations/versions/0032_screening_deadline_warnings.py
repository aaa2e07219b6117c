"""screening deadline warnings: the watch warns the programme's coordinators once per episode and state

Revision ID: 0032
Revises: 0031
Create Date: 2026-12-02 13:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import archipel.platform.db

revision = "0032"
down_revision = "0031"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "screening_deadline_warnings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("episode_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("warned_at", archipel.platform.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("recipients", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["episode_id"], ["screening_episodes.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("episode_id", "state"),
    )
    op.create_index(
        op.f("ix_screening_deadline_warnings_episode_id"), "screening_deadline_warnings", ["episode_id"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_screening_deadline_warnings_episode_id"), table_name="screening_deadline_warnings")
    op.drop_table("screening_deadline_warnings")
