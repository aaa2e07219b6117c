"""frozen sections: requests, their slides and events, the on-duty roster, viewer timings, amendments, WSI validation

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 21:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import archipel.platform.db

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_WHEN = archipel.platform.db.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "duty_shifts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pathologist", sa.String(length=128), nullable=False),
        sa.Column("start", _WHEN, nullable=False),
        sa.Column("end", _WHEN, nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("cancelled_at", _WHEN, nullable=True),
        sa.Column("cancelled_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_duty_shifts")),
    )
    op.create_index(op.f("ix_duty_shifts_end"), "duty_shifts", ["end"], unique=False)
    op.create_index(op.f("ix_duty_shifts_pathologist"), "duty_shifts", ["pathologist"], unique=False)
    op.create_table(
        "frozen_section_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("issuer", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("master_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("accession", sa.String(length=16), nullable=False),
        sa.Column("specimen", sa.String(length=200), nullable=False),
        sa.Column("specimen_site", sa.String(length=200), nullable=False),
        sa.Column("clinical_question", sa.Text(), nullable=False),
        sa.Column("or_phone", sa.String(length=32), nullable=False),
        sa.Column("requested_by", sa.String(length=128), nullable=False),
        sa.Column("requesting_site", sa.String(length=64), nullable=False),
        sa.Column("requested_at", _WHEN, nullable=False),
        sa.Column("first_slide_at", _WHEN, nullable=True),
        sa.Column("first_view_at", _WHEN, nullable=True),
        sa.Column("first_viewer", sa.String(length=128), nullable=False),
        sa.Column("claim_holder", sa.String(length=128), nullable=False),
        sa.Column("claim_expires_at", _WHEN, nullable=True),
        sa.Column("verdict_at", _WHEN, nullable=True),
        sa.Column("verdict_by", sa.String(length=128), nullable=False),
        sa.Column("diagnosis", sa.String(length=16), nullable=False),
        sa.Column("margins", sa.String(length=16), nullable=False),
        sa.Column("verdict_text", sa.Text(), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("sr_series_uid", sa.String(length=64), nullable=False),
        sa.Column("sr_sop_uid", sa.String(length=64), nullable=False),
        sa.Column("signed_payload", sa.Text(), nullable=False),
        sa.Column("signature", sa.String(length=128), nullable=False),
        sa.Column("signing_key_id", sa.String(length=16), nullable=False),
        sa.Column("seen_at", _WHEN, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_frozen_section_requests")),
    )
    op.create_index(
        op.f("ix_frozen_section_requests_master_id"), "frozen_section_requests", ["master_id"], unique=False
    )
    op.create_index(
        op.f("ix_frozen_section_requests_requested_at"),
        "frozen_section_requests",
        ["requested_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_frozen_section_requests_verdict_at"), "frozen_section_requests", ["verdict_at"], unique=False
    )
    op.create_table(
        "viewer_timings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", _WHEN, nullable=False),
        sa.Column("user", sa.String(length=128), nullable=False),
        sa.Column("event", sa.String(length=16), nullable=False),
        sa.Column("ms", sa.Float(), nullable=False),
        sa.Column("slide_id", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_viewer_timings")),
    )
    op.create_index(op.f("ix_viewer_timings_at"), "viewer_timings", ["at"], unique=False)
    op.create_table(
        "frozen_section_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("at", _WHEN, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["frozen_section_requests.id"],
            name=op.f("fk_frozen_section_events_request_id_frozen_section_requests"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_frozen_section_events")),
    )
    op.create_index(
        op.f("ix_frozen_section_events_request_id"), "frozen_section_events", ["request_id"], unique=False
    )
    op.create_table(
        "frozen_section_slides",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("slide_id", sa.String(length=32), nullable=False),
        sa.Column("attached_at", _WHEN, nullable=False),
        sa.Column("attached_by", sa.String(length=128), nullable=False),
        sa.Column("how", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["frozen_section_requests.id"],
            name=op.f("fk_frozen_section_slides_request_id_frozen_section_requests"),
        ),
        sa.ForeignKeyConstraint(
            ["slide_id"], ["slides.id"], name=op.f("fk_frozen_section_slides_slide_id_slides")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_frozen_section_slides")),
        sa.UniqueConstraint("slide_id", name=op.f("uq_frozen_section_slides_slide_id")),
    )
    op.create_index(
        op.f("ix_frozen_section_slides_request_id"), "frozen_section_slides", ["request_id"], unique=False
    )

    op.create_table(
        "validation_studies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pathologist", sa.String(length=128), nullable=False),
        sa.Column("application", sa.String(length=32), nullable=False),
        sa.Column("min_cases", sa.Integer(), nullable=False),
        sa.Column("washout_days", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_validation_studies")),
    )
    op.create_index(
        op.f("ix_validation_studies_pathologist"), "validation_studies", ["pathologist"], unique=False
    )
    op.create_table(
        "validation_cases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("slide_id", sa.String(length=32), nullable=False),
        sa.Column("added_at", _WHEN, nullable=False),
        sa.Column("glass_diagnosis", sa.String(length=64), nullable=False),
        sa.Column("glass_text", sa.Text(), nullable=False),
        sa.Column("glass_read_at", _WHEN, nullable=True),
        sa.Column("digital_diagnosis", sa.String(length=64), nullable=False),
        sa.Column("digital_text", sa.Text(), nullable=False),
        sa.Column("digital_read_at", _WHEN, nullable=True),
        sa.ForeignKeyConstraint(
            ["slide_id"], ["slides.id"], name=op.f("fk_validation_cases_slide_id_slides")
        ),
        sa.ForeignKeyConstraint(
            ["study_id"],
            ["validation_studies.id"],
            name=op.f("fk_validation_cases_study_id_validation_studies"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_validation_cases")),
        sa.UniqueConstraint("study_id", "slide_id", name=op.f("uq_validation_cases_study_id")),
    )
    op.create_index(op.f("ix_validation_cases_study_id"), "validation_cases", ["study_id"], unique=False)

    op.create_table(
        "frozen_section_amendments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("at", _WHEN, nullable=False),
        sa.Column("by", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("diagnosis", sa.String(length=16), nullable=False),
        sa.Column("margins", sa.String(length=16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("sr_sop_uid", sa.String(length=64), nullable=False),
        sa.Column("signed_payload", sa.Text(), nullable=False),
        sa.Column("signature", sa.String(length=128), nullable=False),
        sa.Column("signing_key_id", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["frozen_section_requests.id"],
            name=op.f("fk_frozen_section_amendments_request_id_frozen_section_requests"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_frozen_section_amendments")),
    )
    op.create_index(
        op.f("ix_frozen_section_amendments_request_id"),
        "frozen_section_amendments",
        ["request_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_frozen_section_amendments_request_id"), table_name="frozen_section_amendments")
    op.drop_table("frozen_section_amendments")
    op.drop_index(op.f("ix_validation_cases_study_id"), table_name="validation_cases")
    op.drop_table("validation_cases")
    op.drop_index(op.f("ix_validation_studies_pathologist"), table_name="validation_studies")
    op.drop_table("validation_studies")
    op.drop_index(op.f("ix_frozen_section_slides_request_id"), table_name="frozen_section_slides")
    op.drop_table("frozen_section_slides")
    op.drop_index(op.f("ix_frozen_section_events_request_id"), table_name="frozen_section_events")
    op.drop_table("frozen_section_events")
    op.drop_index(op.f("ix_viewer_timings_at"), table_name="viewer_timings")
    op.drop_table("viewer_timings")
    op.drop_index(op.f("ix_frozen_section_requests_verdict_at"), table_name="frozen_section_requests")
    op.drop_index(op.f("ix_frozen_section_requests_requested_at"), table_name="frozen_section_requests")
    op.drop_index(op.f("ix_frozen_section_requests_master_id"), table_name="frozen_section_requests")
    op.drop_table("frozen_section_requests")
    op.drop_index(op.f("ix_duty_shifts_pathologist"), table_name="duty_shifts")
    op.drop_index(op.f("ix_duty_shifts_end"), table_name="duty_shifts")
    op.drop_table("duty_shifts")
