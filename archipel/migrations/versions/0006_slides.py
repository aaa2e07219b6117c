"""slides: slide cases (the study of an accession), slides and their conversion state, resumable uploads

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24 12:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import archipel.platform.db

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_WHEN = archipel.platform.db.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "slide_cases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("issuer", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("accession", sa.String(length=16), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_slide_cases")),
        sa.UniqueConstraint("issuer", "patient_id", "accession", name=op.f("uq_slide_cases_issuer")),
        sa.UniqueConstraint("study_uid", name=op.f("uq_slide_cases_study_uid")),
    )
    op.create_table(
        "slides",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("issuer", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("accession", sa.String(length=16), nullable=False),
        sa.Column("container_id", sa.String(length=64), nullable=False),
        sa.Column("stain", sa.String(length=64), nullable=False),
        sa.Column("urgent", sa.Boolean(), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("source_key", sa.String(length=64), nullable=False),
        sa.Column("source_size", sa.BigInteger(), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("series_uid", sa.String(length=64), nullable=False),
        sa.Column("instances", sa.Integer(), nullable=False),
        sa.Column("zarr_path", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("updated_at", _WHEN, nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["slide_cases.id"], name=op.f("fk_slides_case_id_slide_cases")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_slides")),
    )
    with op.batch_alter_table("slides", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_slides_case_id"), ["case_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_slides_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_slides_job_id"), ["job_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_slides_patient_id"), ["patient_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_slides_series_uid"), ["series_uid"], unique=False)
    op.create_table(
        "slide_uploads",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("length", sa.BigInteger(), nullable=False),
        sa.Column("meta", sa.Text(), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("slide_id", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_slide_uploads")),
    )


def downgrade() -> None:
    op.drop_table("slide_uploads")
    op.drop_table("slides")
    op.drop_table("slide_cases")
