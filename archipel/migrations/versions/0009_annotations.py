"""annotations: a slide's annotations (GeoJSON in level-0 pixels) and the state of their DICOM instance

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 21:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import archipel.platform.db

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_WHEN = archipel.platform.db.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "slide_annotations",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("slide_id", sa.String(length=32), nullable=False),
        sa.Column("geometry_type", sa.String(length=16), nullable=False),
        sa.Column("coordinates", sa.Text(), nullable=False),
        sa.Column("label", sa.String(length=64), nullable=False),
        sa.Column("author", sa.String(length=128), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("deleted_at", _WHEN, nullable=True),
        sa.Column("deleted_by", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(["slide_id"], ["slides.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_slide_annotations_slide_id", "slide_annotations", ["slide_id"])
    op.create_table(
        "slide_annotation_sets",
        sa.Column("slide_id", sa.String(length=32), nullable=False),
        sa.Column("series_uid", sa.String(length=64), nullable=False),
        sa.Column("sop_uid", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("pending", sa.Boolean(), nullable=False),
        sa.Column("updated_at", _WHEN, nullable=False),
        sa.ForeignKeyConstraint(["slide_id"], ["slides.id"]),
        sa.PrimaryKeyConstraint("slide_id"),
    )


def downgrade() -> None:
    op.drop_table("slide_annotation_sets")
    op.drop_index("ix_slide_annotations_slide_id", table_name="slide_annotations")
    op.drop_table("slide_annotations")
