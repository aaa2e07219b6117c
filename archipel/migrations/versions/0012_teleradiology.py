"""teleradiology: reading requests, claims, reports, critical results, second opinions

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 00:50:00.000000

Reserved in the revision chain when the work of issue 7 was split; filled by the teleradiology worklist
(archipel/radiology/telerad_models.py).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import archipel.platform.db

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "telerad_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("accession_number", sa.String(length=16), nullable=False),
        sa.Column("issuer", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("master_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("requesting_site", sa.String(length=64), nullable=False),
        sa.Column("placer_order", sa.String(length=64), nullable=False),
        sa.Column("physician_name", sa.String(length=200), nullable=False),
        sa.Column("physician_email", sa.String(length=255), nullable=False),
        sa.Column("physician_phone", sa.String(length=32), nullable=False),
        sa.Column("physician_user", sa.String(length=128), nullable=False),
        sa.Column("clinical_info", sa.Text(), nullable=False),
        sa.Column("justification", sa.Text(), nullable=False),
        sa.Column("subspecialty", sa.String(length=32), nullable=False),
        sa.Column("priority", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("requested_at", archipel.platform.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("due_at", archipel.platform.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("claim_holder", sa.String(length=128), nullable=False),
        sa.Column("claim_expires_at", archipel.platform.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("claimed_at", archipel.platform.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("study_linked_at", archipel.platform.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("preliminary_at", archipel.platform.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("final_at", archipel.platform.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("final_by", sa.String(length=128), nullable=False),
        sa.Column("cancelled_at", archipel.platform.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("cancelled_by", sa.String(length=128), nullable=False),
        sa.Column("cancel_reason", sa.Text(), nullable=False),
        sa.Column("escalated_at", archipel.platform.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_telerad_requests")),
    )
    op.create_index(
        op.f("ix_telerad_requests_accession_number"), "telerad_requests", ["accession_number"], unique=False
    )
    op.create_index(op.f("ix_telerad_requests_due_at"), "telerad_requests", ["due_at"], unique=False)
    op.create_index(op.f("ix_telerad_requests_master_id"), "telerad_requests", ["master_id"], unique=False)
    op.create_index(
        op.f("ix_telerad_requests_requesting_site"), "telerad_requests", ["requesting_site"], unique=False
    )
    op.create_index(
        "ix_telerad_requests_site_order",
        "telerad_requests",
        ["requesting_site", "placer_order"],
        unique=False,
    )
    op.create_index(op.f("ix_telerad_requests_state"), "telerad_requests", ["state"], unique=False)
    op.create_index(op.f("ix_telerad_requests_study_uid"), "telerad_requests", ["study_uid"], unique=False)
    op.create_index(
        op.f("ix_telerad_requests_subspecialty"), "telerad_requests", ["subspecialty"], unique=False
    )
    op.create_table(
        "telerad_priors",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("study_date", sa.String(length=8), nullable=False),
        sa.Column("modalities", sa.String(length=128), nullable=False),
        sa.Column("description", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("listed_at", archipel.platform.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["telerad_requests.id"],
            name=op.f("fk_telerad_priors_request_id_telerad_requests"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_telerad_priors")),
    )
    op.create_index(op.f("ix_telerad_priors_request_id"), "telerad_priors", ["request_id"], unique=False)
    op.create_table(
        "telerad_reports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("critical", sa.Boolean(), nullable=False),
        sa.Column("critical_text", sa.Text(), nullable=False),
        sa.Column("author", sa.String(length=128), nullable=False),
        sa.Column("created_at", archipel.platform.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("signed_at", archipel.platform.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("document_id", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["telerad_requests.id"],
            name=op.f("fk_telerad_reports_request_id_telerad_requests"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_telerad_reports")),
    )
    op.create_index(op.f("ix_telerad_reports_request_id"), "telerad_reports", ["request_id"], unique=False)
    op.create_table(
        "telerad_second_opinions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("reading_request_id", sa.Integer(), nullable=True),
        sa.Column("issuer", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("master_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("to_site", sa.String(length=64), nullable=False),
        sa.Column("to_user", sa.String(length=128), nullable=False),
        sa.Column("asked_by", sa.String(length=128), nullable=False),
        sa.Column("asked_at", archipel.platform.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("answered_by", sa.String(length=128), nullable=False),
        sa.Column("answered_at", archipel.platform.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("answer_text", sa.Text(), nullable=False),
        sa.Column("answer_document_id", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["reading_request_id"],
            ["telerad_requests.id"],
            name=op.f("fk_telerad_second_opinions_reading_request_id_telerad_requests"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_telerad_second_opinions")),
    )
    op.create_index(
        op.f("ix_telerad_second_opinions_master_id"), "telerad_second_opinions", ["master_id"], unique=False
    )
    op.create_index(
        op.f("ix_telerad_second_opinions_to_site"), "telerad_second_opinions", ["to_site"], unique=False
    )
    op.create_index(
        op.f("ix_telerad_second_opinions_to_user"), "telerad_second_opinions", ["to_user"], unique=False
    )
    op.create_table(
        "telerad_critical_results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("report_id", sa.Integer(), nullable=False),
        sa.Column("finding", sa.Text(), nullable=False),
        sa.Column("recipient_user", sa.String(length=128), nullable=False),
        sa.Column("recipient_email", sa.String(length=255), nullable=False),
        sa.Column("recipient_phone", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("raised_by", sa.String(length=128), nullable=False),
        sa.Column("raised_at", archipel.platform.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("sends", sa.Integer(), nullable=False),
        sa.Column("last_sent_at", archipel.platform.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("escalated_at", archipel.platform.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_at", archipel.platform.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_by", sa.String(length=128), nullable=False),
        sa.Column("notification_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["report_id"],
            ["telerad_reports.id"],
            name=op.f("fk_telerad_critical_results_report_id_telerad_reports"),
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["telerad_requests.id"],
            name=op.f("fk_telerad_critical_results_request_id_telerad_requests"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_telerad_critical_results")),
    )
    op.create_index(
        op.f("ix_telerad_critical_results_request_id"),
        "telerad_critical_results",
        ["request_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_telerad_critical_results_state"), "telerad_critical_results", ["state"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_telerad_critical_results_state"), table_name="telerad_critical_results")
    op.drop_index(op.f("ix_telerad_critical_results_request_id"), table_name="telerad_critical_results")
    op.drop_table("telerad_critical_results")
    op.drop_index(op.f("ix_telerad_second_opinions_to_user"), table_name="telerad_second_opinions")
    op.drop_index(op.f("ix_telerad_second_opinions_to_site"), table_name="telerad_second_opinions")
    op.drop_index(op.f("ix_telerad_second_opinions_master_id"), table_name="telerad_second_opinions")
    op.drop_table("telerad_second_opinions")
    op.drop_index(op.f("ix_telerad_reports_request_id"), table_name="telerad_reports")
    op.drop_table("telerad_reports")
    op.drop_index(op.f("ix_telerad_priors_request_id"), table_name="telerad_priors")
    op.drop_table("telerad_priors")
    op.drop_index(op.f("ix_telerad_requests_subspecialty"), table_name="telerad_requests")
    op.drop_index(op.f("ix_telerad_requests_study_uid"), table_name="telerad_requests")
    op.drop_index(op.f("ix_telerad_requests_state"), table_name="telerad_requests")
    op.drop_index("ix_telerad_requests_site_order", table_name="telerad_requests")
    op.drop_index(op.f("ix_telerad_requests_requesting_site"), table_name="telerad_requests")
    op.drop_index(op.f("ix_telerad_requests_master_id"), table_name="telerad_requests")
    op.drop_index(op.f("ix_telerad_requests_due_at"), table_name="telerad_requests")
    op.drop_index(op.f("ix_telerad_requests_accession_number"), table_name="telerad_requests")
    op.drop_table("telerad_requests")
