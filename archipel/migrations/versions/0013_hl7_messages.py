"""HL7 v2 from the sites' RIS: received messages and their dead-letter list

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 00:50:00.000000

Reserved in the revision chain when the work of issue 7 was split; the module that owns these tables fills it in.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import archipel.platform.db

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_WHEN = archipel.platform.db.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "hl7_sources",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("facility", sa.String(length=64), nullable=False),
        sa.Column("application", sa.String(length=64), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hl7_sources")),
        sa.UniqueConstraint("facility", "application", name=op.f("uq_hl7_sources_facility")),
    )
    op.create_table(
        "hl7_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("facility", sa.String(length=64), nullable=False),
        sa.Column("application", sa.String(length=64), nullable=False),
        sa.Column("control_id", sa.String(length=64), nullable=False),
        sa.Column("message_type", sa.String(length=16), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("received_at", _WHEN, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hl7_messages")),
        sa.UniqueConstraint("facility", "application", "control_id", name=op.f("uq_hl7_messages_facility")),
    )
    op.create_index(op.f("ix_hl7_messages_received_at"), "hl7_messages", ["received_at"], unique=False)
    op.create_table(
        "hl7_dead_letters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("received_at", _WHEN, nullable=False),
        sa.Column("peer", sa.String(length=255), nullable=False),
        sa.Column("facility", sa.String(length=64), nullable=False),
        sa.Column("application", sa.String(length=64), nullable=False),
        sa.Column("control_id", sa.String(length=64), nullable=False),
        sa.Column("message_type", sa.String(length=16), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("ack_code", sa.String(length=2), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("replays", sa.Integer(), nullable=False),
        sa.Column("resolved_at", _WHEN, nullable=True),
        sa.Column("resolved_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hl7_dead_letters")),
    )
    op.create_index(
        op.f("ix_hl7_dead_letters_received_at"), "hl7_dead_letters", ["received_at"], unique=False
    )
    op.create_index(op.f("ix_hl7_dead_letters_state"), "hl7_dead_letters", ["state"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_hl7_dead_letters_state"), table_name="hl7_dead_letters")
    op.drop_index(op.f("ix_hl7_dead_letters_received_at"), table_name="hl7_dead_letters")
    op.drop_table("hl7_dead_letters")
    op.drop_index(op.f("ix_hl7_messages_received_at"), table_name="hl7_messages")
    op.drop_table("hl7_messages")
    op.drop_table("hl7_sources")
