"""retention_holds_rejections: legal holds, and instances rejected by IOCM rejection notes

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-02 04:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import archipel.platform.db

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "legal_holds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("target", sa.String(length=160), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", archipel.platform.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("lifted_at", archipel.platform.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("lifted_by", sa.String(length=128), nullable=False),
        sa.Column("lift_reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("legal_holds", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_legal_holds_target"), ["target"], unique=False)
        batch_op.create_index(batch_op.f("ix_legal_holds_lifted_at"), ["lifted_at"], unique=False)
    op.create_table(
        "rejected_instances",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sop_uid", sa.String(length=64), nullable=False),
        sa.Column("sop_class_uid", sa.String(length=64), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("series_uid", sa.String(length=64), nullable=False),
        sa.Column("code", sa.String(length=16), nullable=False),
        sa.Column("note_uid", sa.String(length=64), nullable=False),
        sa.Column("rejected_at", archipel.platform.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("blob_key", sa.String(length=128), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("purged_at", archipel.platform.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sop_uid", name=op.f("uq_rejected_instances_sop_uid")),
    )
    with op.batch_alter_table("rejected_instances", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rejected_instances_study_uid"), ["study_uid"], unique=False)
        batch_op.create_index(batch_op.f("ix_rejected_instances_note_uid"), ["note_uid"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("rejected_instances", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rejected_instances_note_uid"))
        batch_op.drop_index(batch_op.f("ix_rejected_instances_study_uid"))
    op.drop_table("rejected_instances")
    with op.batch_alter_table("legal_holds", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_legal_holds_lifted_at"))
        batch_op.drop_index(batch_op.f("ix_legal_holds_target"))
    op.drop_table("legal_holds")
