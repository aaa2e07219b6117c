"""screening priors: each fetch of an episode's priors from the region's PACS, and earlier studies marked as priors

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02 01:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import archipel.platform.db

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "screening_prior_fetches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("episode_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("prefetch_request_id", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("requested_by", sa.String(length=128), nullable=False),
        sa.Column("requested_at", archipel.platform.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", archipel.platform.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["episode_id"], ["screening_episodes.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("screening_prior_fetches", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_screening_prior_fetches_episode_id"), ["episode_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_screening_prior_fetches_state"), ["state"], unique=False)
    with op.batch_alter_table("screening_studies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("prior_of", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("screening_studies", schema=None) as batch_op:
        batch_op.drop_column("prior_of")
    with op.batch_alter_table("screening_prior_fetches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_screening_prior_fetches_state"))
        batch_op.drop_index(batch_op.f("ix_screening_prior_fetches_episode_id"))
    op.drop_table("screening_prior_fetches")
