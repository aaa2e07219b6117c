"""tumor boards (RCP): sessions, registered patients, prefetch status per node

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 00:50:00.000000

Reserved in the revision chain when the work of issue 7 was split; the module that owns these tables fills it in.
"""

from __future__ import annotations

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
