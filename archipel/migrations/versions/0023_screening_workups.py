"""screening deferred work-up: the form after a recall, and the imaging centre's recall address per episode

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-02 08:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import archipel.platform.db

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "screening_workups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("episode_id", sa.Integer(), nullable=False),
        sa.Column("radiologist", sa.String(length=128), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("performed_on", sa.Date(), nullable=False),
        sa.Column("diagnostic_views", sa.Text(), nullable=False),
        sa.Column("ultrasound", sa.Boolean(), nullable=False),
        sa.Column("mri", sa.Boolean(), nullable=False),
        sa.Column("biopsy", sa.String(length=32), nullable=False),
        sa.Column("biopsy_laterality", sa.String(length=1), nullable=False),
        sa.Column("right_assessment", sa.Integer(), nullable=False),
        sa.Column("left_assessment", sa.Integer(), nullable=False),
        sa.Column("conclusion", sa.String(length=16), nullable=False),
        sa.Column("pathology", sa.String(length=32), nullable=False),
        sa.Column("size_mm", sa.Integer(), nullable=True),
        sa.Column("notes", sa.Text(), nullable=False),
        sa.Column("outcome_id", sa.Integer(), nullable=True),
        sa.Column("recorded_by", sa.String(length=128), nullable=False),
        sa.Column("recorded_at", archipel.platform.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["episode_id"], ["screening_episodes.id"]),
        sa.ForeignKeyConstraint(["outcome_id"], ["screening_outcomes.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("screening_workups", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_screening_workups_episode_id"), ["episode_id"], unique=False)
    with op.batch_alter_table("screening_episodes", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("centre_contact", sa.String(length=255), server_default="", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("screening_episodes", schema=None) as batch_op:
        batch_op.drop_column("centre_contact")
    with op.batch_alter_table("screening_workups", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_screening_workups_episode_id"))
    op.drop_table("screening_workups")
