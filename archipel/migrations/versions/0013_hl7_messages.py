"""HL7 v2 from the sites' RIS: received messages and their dead-letter list

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 00:50:00.000000

Reserved in the revision chain when the work of issue 7 was split; the module that owns these tables fills it in.
"""

from __future__ import annotations

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
