"""patient access codes revoked by staff: who revoked a code and why, and the code a portal session was opened
with (so that revoking the code ends the session)

Revision ID: 0031
Revises: 0030
Create Date: 2026-12-02 12:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0031"
down_revision = "0030"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("patient_access_codes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("revoked_by", sa.String(length=160), server_default="", nullable=False))
        batch_op.add_column(
            sa.Column("revoked_reason", sa.String(length=500), server_default="", nullable=False)
        )
    with op.batch_alter_table("auth_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("access_code_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_auth_sessions_access_code_id"), ["access_code_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("auth_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_auth_sessions_access_code_id"))
        batch_op.drop_column("access_code_id")
    with op.batch_alter_table("patient_access_codes", schema=None) as batch_op:
        batch_op.drop_column("revoked_reason")
        batch_op.drop_column("revoked_by")
