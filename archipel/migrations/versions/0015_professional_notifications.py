"""in-app notifications for professionals

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02 00:50:00.000000

Reserved in the revision chain when the work of issue 7 was split; the module that owns these tables fills it in.
"""

from __future__ import annotations

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
