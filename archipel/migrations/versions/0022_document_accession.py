"""document accession number: a report that arrives before its images is linked to the study when it is stored

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-02 08:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("accession_number", sa.String(64), nullable=False, server_default=""))
        batch_op.create_index("ix_documents_accession_number", ["accession_number"])


def downgrade() -> None:
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.drop_index("ix_documents_accession_number")
        batch_op.drop_column("accession_number")
