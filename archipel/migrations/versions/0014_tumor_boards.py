"""tumor boards (RCP): remote query/retrieve nodes, sessions, registered patients, prefetch status per node

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 00:50:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import archipel.platform.db

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "prefetch_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("master_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("modalities", sa.String(length=128), nullable=False),
        sa.Column("date_from", sa.String(length=8), nullable=False),
        sa.Column("date_to", sa.String(length=8), nullable=False),
        sa.Column("study_uids", sa.Text(), nullable=False),
        sa.Column("destination_node_pk", sa.Integer(), nullable=True),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("requested_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", archipel.platform.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_run_at", archipel.platform.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["destination_node_pk"],
            ["dicom_nodes.id"],
            name=op.f("fk_prefetch_requests_destination_node_pk_dicom_nodes"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prefetch_requests")),
    )
    op.create_index(op.f("ix_prefetch_requests_master_id"), "prefetch_requests", ["master_id"], unique=False)
    op.create_table(
        "remote_nodes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("node_pk", sa.Integer(), nullable=False),
        sa.Column("retrieve", sa.String(length=16), nullable=False),
        sa.Column("dicomweb_url", sa.String(length=400), nullable=False),
        sa.Column("timeout_seconds", sa.Float(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", archipel.platform.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["node_pk"],
            ["dicom_nodes.id"],
            name=op.f("fk_remote_nodes_node_pk_dicom_nodes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_remote_nodes")),
        sa.UniqueConstraint("node_pk", name=op.f("uq_remote_nodes_node_pk")),
    )
    op.create_table(
        "tumor_board_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("scheduled_at", archipel.platform.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("place", sa.String(length=200), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("destination_node_pk", sa.Integer(), nullable=True),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", archipel.platform.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["destination_node_pk"],
            ["dicom_nodes.id"],
            name=op.f("fk_tumor_board_sessions_destination_node_pk_dicom_nodes"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tumor_board_sessions")),
    )
    op.create_index(
        op.f("ix_tumor_board_sessions_scheduled_at"), "tumor_board_sessions", ["scheduled_at"], unique=False
    )
    op.create_table(
        "prefetch_node_status",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("node_pk", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("studies_found", sa.Integer(), nullable=False),
        sa.Column("studies_ready", sa.Integer(), nullable=False),
        sa.Column("instances_retrieved", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("study_uids", sa.Text(), nullable=False),
        sa.Column("updated_at", archipel.platform.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["node_pk"],
            ["dicom_nodes.id"],
            name=op.f("fk_prefetch_node_status_node_pk_dicom_nodes"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["prefetch_requests.id"],
            name=op.f("fk_prefetch_node_status_request_id_prefetch_requests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prefetch_node_status")),
        sa.UniqueConstraint("request_id", "node_pk", name=op.f("uq_prefetch_node_status_request_id")),
    )
    op.create_index(
        op.f("ix_prefetch_node_status_request_id"), "prefetch_node_status", ["request_id"], unique=False
    )
    op.create_table(
        "tumor_board_patients",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("master_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("prefetch_request_id", sa.Integer(), nullable=False),
        sa.Column("registered_by", sa.String(length=128), nullable=False),
        sa.Column("registered_at", archipel.platform.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["prefetch_request_id"],
            ["prefetch_requests.id"],
            name=op.f("fk_tumor_board_patients_prefetch_request_id_prefetch_requests"),
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["tumor_board_sessions.id"],
            name=op.f("fk_tumor_board_patients_session_id_tumor_board_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tumor_board_patients")),
        sa.UniqueConstraint("session_id", "master_id", name=op.f("uq_tumor_board_patients_session_id")),
    )
    op.create_index(
        op.f("ix_tumor_board_patients_session_id"), "tumor_board_patients", ["session_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_tumor_board_patients_session_id"), table_name="tumor_board_patients")
    op.drop_table("tumor_board_patients")
    op.drop_index(op.f("ix_prefetch_node_status_request_id"), table_name="prefetch_node_status")
    op.drop_table("prefetch_node_status")
    op.drop_index(op.f("ix_tumor_board_sessions_scheduled_at"), table_name="tumor_board_sessions")
    op.drop_table("tumor_board_sessions")
    op.drop_table("remote_nodes")
    op.drop_index(op.f("ix_prefetch_requests_master_id"), table_name="prefetch_requests")
    op.drop_table("prefetch_requests")
