"""screening: programmes, qualified readers, episodes and their studies, reading tasks, readings, decisions
and outcomes of double reading

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 21:21:52.836745
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from archipel.platform.db import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "screening_programmes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("protocol", sa.String(length=32), nullable=False),
        sa.Column("arbitration_policy", sa.String(length=32), nullable=False),
        sa.Column("discordance_resolution", sa.String(length=32), nullable=False),
        sa.Column("arbitrator_sees_reads", sa.Boolean(), nullable=False),
        sa.Column("min_yearly_reads", sa.Integer(), nullable=False),
        sa.Column("result_deadline_days", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_screening_programmes")),
        sa.UniqueConstraint("code", name=op.f("uq_screening_programmes_code")),
    )
    op.create_table(
        "screening_episodes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("programme_id", sa.Integer(), nullable=False),
        sa.Column("external_id", sa.String(length=64), nullable=True),
        sa.Column("retake_of", sa.Integer(), nullable=True),
        sa.Column("issuer", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("master_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("round", sa.String(length=16), nullable=False),
        sa.Column("screen_date", sa.Date(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("flag", sa.String(length=255), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("batch", sa.String(length=64), nullable=False),
        sa.Column("priors", sa.String(length=16), nullable=False),
        sa.Column("woman_contact", sa.String(length=255), nullable=False),
        sa.Column("gp_contact", sa.String(length=255), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("received_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("result_sent_at", UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["programme_id"],
            ["screening_programmes.id"],
            name=op.f("fk_screening_episodes_programme_id_screening_programmes"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_screening_episodes")),
        sa.UniqueConstraint("programme_id", "external_id", name=op.f("uq_screening_episodes_programme_id")),
    )
    op.create_index(
        op.f("ix_screening_episodes_master_id"), "screening_episodes", ["master_id"], unique=False
    )
    op.create_index(
        op.f("ix_screening_episodes_programme_id"), "screening_episodes", ["programme_id"], unique=False
    )
    op.create_index(
        op.f("ix_screening_episodes_screen_date"), "screening_episodes", ["screen_date"], unique=False
    )
    op.create_table(
        "screening_qualifications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("programme_id", sa.Integer(), nullable=False),
        sa.Column("reader", sa.String(length=128), nullable=False),
        sa.Column("qualification", sa.String(length=16), nullable=False),
        sa.Column("granted_by", sa.String(length=128), nullable=False),
        sa.Column("granted_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["programme_id"],
            ["screening_programmes.id"],
            name=op.f("fk_screening_qualifications_programme_id_screening_programmes"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_screening_qualifications")),
        sa.UniqueConstraint(
            "programme_id", "reader", "qualification", name=op.f("uq_screening_qualifications_programme_id")
        ),
    )
    op.create_index(
        op.f("ix_screening_qualifications_reader"), "screening_qualifications", ["reader"], unique=False
    )
    op.create_table(
        "screening_decisions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("episode_id", sa.Integer(), nullable=False),
        sa.Column("decision", sa.String(length=32), nullable=False),
        sa.Column("reasons", sa.Text(), nullable=False),
        sa.Column("decided_by", sa.String(length=128), nullable=False),
        sa.Column("decided_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("letters", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["episode_id"],
            ["screening_episodes.id"],
            name=op.f("fk_screening_decisions_episode_id_screening_episodes"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_screening_decisions")),
        sa.UniqueConstraint("episode_id", name=op.f("uq_screening_decisions_episode_id")),
    )
    op.create_table(
        "screening_outcomes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("episode_id", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("workup", sa.String(length=255), nullable=False),
        sa.Column("biopsy", sa.Boolean(), nullable=False),
        sa.Column("size_mm", sa.Integer(), nullable=True),
        sa.Column("diagnosed_on", sa.Date(), nullable=True),
        sa.Column("recorded_by", sa.String(length=128), nullable=False),
        sa.Column("recorded_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["episode_id"],
            ["screening_episodes.id"],
            name=op.f("fk_screening_outcomes_episode_id_screening_episodes"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_screening_outcomes")),
    )
    op.create_index(
        op.f("ix_screening_outcomes_episode_id"), "screening_outcomes", ["episode_id"], unique=False
    )
    op.create_table(
        "screening_studies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("episode_id", sa.Integer(), nullable=True),
        sa.Column("issuer", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("study_date", sa.String(length=8), nullable=False),
        sa.Column("views", sa.Text(), nullable=False),
        sa.Column("flag", sa.String(length=255), nullable=False),
        sa.Column("received_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["episode_id"],
            ["screening_episodes.id"],
            name=op.f("fk_screening_studies_episode_id_screening_episodes"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_screening_studies")),
        sa.UniqueConstraint("study_uid", name=op.f("uq_screening_studies_study_uid")),
    )
    op.create_index(
        op.f("ix_screening_studies_episode_id"), "screening_studies", ["episode_id"], unique=False
    )
    op.create_table(
        "screening_tasks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("episode_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("claimed_by", sa.String(length=128), nullable=False),
        sa.Column("claimed_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("deferred_until", UTCDateTime(timezone=True), nullable=True),
        sa.Column("passed_by", sa.Text(), nullable=False),
        sa.Column("note", sa.String(length=255), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("done_at", UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["episode_id"],
            ["screening_episodes.id"],
            name=op.f("fk_screening_tasks_episode_id_screening_episodes"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_screening_tasks")),
    )
    op.create_index(op.f("ix_screening_tasks_episode_id"), "screening_tasks", ["episode_id"], unique=False)
    op.create_index(op.f("ix_screening_tasks_status"), "screening_tasks", ["status"], unique=False)
    op.create_table(
        "screening_readings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("episode_id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=True),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("reader", sa.String(length=128), nullable=False),
        sa.Column("blind", sa.Boolean(), nullable=False),
        sa.Column("right_assessment", sa.Integer(), nullable=False),
        sa.Column("left_assessment", sa.Integer(), nullable=False),
        sa.Column("right_result", sa.String(length=16), nullable=False),
        sa.Column("left_result", sa.String(length=16), nullable=False),
        sa.Column("density", sa.String(length=1), nullable=False),
        sa.Column("findings", sa.Text(), nullable=False),
        sa.Column("quality", sa.Text(), nullable=False),
        sa.Column("form", sa.Text(), nullable=False),
        sa.Column("opened_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("submitted_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["episode_id"],
            ["screening_episodes.id"],
            name=op.f("fk_screening_readings_episode_id_screening_episodes"),
        ),
        sa.ForeignKeyConstraint(
            ["task_id"], ["screening_tasks.id"], name=op.f("fk_screening_readings_task_id_screening_tasks")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_screening_readings")),
        sa.UniqueConstraint("episode_id", "role", "reader", name=op.f("uq_screening_readings_episode_id")),
    )
    op.create_index(
        op.f("ix_screening_readings_episode_id"), "screening_readings", ["episode_id"], unique=False
    )
    op.create_index(op.f("ix_screening_readings_reader"), "screening_readings", ["reader"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_screening_readings_reader"), table_name="screening_readings")
    op.drop_index(op.f("ix_screening_readings_episode_id"), table_name="screening_readings")
    op.drop_table("screening_readings")
    op.drop_index(op.f("ix_screening_tasks_status"), table_name="screening_tasks")
    op.drop_index(op.f("ix_screening_tasks_episode_id"), table_name="screening_tasks")
    op.drop_table("screening_tasks")
    op.drop_index(op.f("ix_screening_studies_episode_id"), table_name="screening_studies")
    op.drop_table("screening_studies")
    op.drop_index(op.f("ix_screening_outcomes_episode_id"), table_name="screening_outcomes")
    op.drop_table("screening_outcomes")
    op.drop_table("screening_decisions")
    op.drop_index(op.f("ix_screening_qualifications_reader"), table_name="screening_qualifications")
    op.drop_table("screening_qualifications")
    op.drop_index(op.f("ix_screening_episodes_screen_date"), table_name="screening_episodes")
    op.drop_index(op.f("ix_screening_episodes_programme_id"), table_name="screening_episodes")
    op.drop_index(op.f("ix_screening_episodes_master_id"), table_name="screening_episodes")
    op.drop_table("screening_episodes")
    op.drop_table("screening_programmes")
