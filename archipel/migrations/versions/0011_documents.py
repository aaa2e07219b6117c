"""document registry: reports, letters and forms (IHE XDS.b / MHD), their studies and full-text index

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 00:50:00.000000

Reserved in the revision chain when the work of issue 7 was split; the module that owns these tables fills it in.
"""

from __future__ import annotations

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
