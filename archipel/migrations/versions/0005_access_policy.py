"""access policy: care relationships, consent history and state, break-the-glass accesses, study confidentiality

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import archipel.platform.db

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_MASTER = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_WHEN = archipel.platform.db.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("confidentiality", sa.String(length=200), nullable=False, server_default="")
        )

    op.create_table(
        "care_relationships",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("professional", sa.String(length=128), nullable=False),
        sa.Column("master_id", _MASTER, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("valid_from", _WHEN, nullable=False),
        sa.Column("valid_to", _WHEN, nullable=True),
        sa.Column("named_by_patient", sa.Boolean(), nullable=False),
        sa.Column("context", sa.String(length=200), nullable=False),
        sa.Column("recorded_by", sa.String(length=128), nullable=False),
        sa.Column("recorded_at", _WHEN, nullable=False),
        sa.Column("ended_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_care_relationships")),
    )
    with op.batch_alter_table("care_relationships", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_care_relationships_professional"), ["professional"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_care_relationships_master_id"), ["master_id"], unique=False)

    op.create_table(
        "consent_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("master_id", _MASTER, nullable=False),
        sa.Column("sharing", sa.String(length=16), nullable=False),
        sa.Column("method", sa.String(length=24), nullable=False),
        sa.Column("recorded_by", sa.String(length=160), nullable=False),
        sa.Column("recorded_by_role", sa.String(length=32), nullable=False),
        sa.Column("at", _WHEN, nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_events")),
    )
    with op.batch_alter_table("consent_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_consent_events_master_id"), ["master_id"], unique=False)

    op.create_table(
        "consent_states",
        sa.Column("master_id", _MASTER, autoincrement=False, nullable=False),
        sa.Column("sharing", sa.String(length=16), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("at", _WHEN, nullable=False),
        sa.PrimaryKeyConstraint("master_id", name=op.f("pk_consent_states")),
    )
    with op.batch_alter_table("consent_states", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_consent_states_sharing"), ["sharing"], unique=False)

    op.create_table(
        "break_glass_accesses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("professional", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("master_id", _MASTER, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("started_at", _WHEN, nullable=False),
        sa.Column("expires_at", _WHEN, nullable=False),
        sa.Column("ended_at", _WHEN, nullable=True),
        sa.Column("alerted", sa.Text(), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_break_glass_accesses")),
    )
    with op.batch_alter_table("break_glass_accesses", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_break_glass_accesses_professional"), ["professional"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_break_glass_accesses_master_id"), ["master_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_break_glass_accesses_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_table("break_glass_accesses")
    op.drop_table("consent_states")
    op.drop_table("consent_events")
    op.drop_table("care_relationships")
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.drop_column("confidentiality")
