"""instances by blob key: the retention run asks whether a blob is still named, the storage lifecycle joins on it

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-02 04:00:00.000000

(Reserved for the S3 store, which needed no schema change; the file name stays, Alembic goes by revision.)
"""

from __future__ import annotations

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_instances_blob_key"), ["blob_key"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_instances_blob_key"))
