"""contacts: a professional's e-mail address (alerts), and who holds a patient access code

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 13:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("email", sa.String(length=255), nullable=False, server_default=""))
    with op.batch_alter_table("patient_access_codes") as batch:
        batch.add_column(sa.Column("holder", sa.String(length=32), nullable=False, server_default="patient"))


def downgrade() -> None:
    with op.batch_alter_table("patient_access_codes") as batch:
        batch.drop_column("holder")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("email")
