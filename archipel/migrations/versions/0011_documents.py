"""document registry: reports, letters and forms (IHE XDS.b / MHD), their studies and full-text index

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 00:50:00.000000

Reserved in the revision chain when the work of issue 7 was split; the module that owns these tables fills it in.
The full-text index is an FTS5 table on SQLite and a GIN expression index (French) on PostgreSQL
(see archipel/radiology/documents_search.py).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import archipel.platform.db

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_WHEN = archipel.platform.db.UTCDateTime(timezone=True)
_FTS_CREATE = (
    "CREATE VIRTUAL TABLE documents_fts USING fts5(search_text, "
    "tokenize = 'porter unicode61 remove_diacritics 2')"
)
_PG_CREATE = (
    "CREATE INDEX ix_documents_search_text_fr ON documents USING gin (to_tsvector('french', search_text))"
)


def upgrade() -> None:
    op.create_table(
        "documents",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uid", sa.String(length=64), nullable=False),
        sa.Column("master_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("issuer", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("type_code", sa.String(length=32), nullable=False),
        sa.Column("type_display", sa.String(length=200), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("author", sa.String(length=200), nullable=False),
        sa.Column("organisation", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("confidentiality", sa.String(length=1), nullable=False),
        sa.Column("codes", sa.String(length=200), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("signed_at", _WHEN, nullable=True),
        sa.Column("signed_by", sa.String(length=128), nullable=False),
        sa.Column("content_type", sa.String(length=64), nullable=False),
        sa.Column("blob_key", sa.String(length=128), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("relates_to", sa.Integer(), nullable=True),
        sa.Column("relation", sa.String(length=16), nullable=False),
        sa.Column("addendum_reason", sa.Text(), nullable=False),
        sa.Column("error_reason", sa.Text(), nullable=False),
        sa.Column("error_at", _WHEN, nullable=True),
        sa.Column("error_by", sa.String(length=128), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("search_text", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["relates_to"], ["documents.id"], name=op.f("fk_documents_relates_to_documents")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_documents")),
        sa.UniqueConstraint("uid", name=op.f("uq_documents_uid")),
    )
    op.create_index("ix_documents_patient", "documents", ["issuer", "patient_id"], unique=False)
    op.create_index(op.f("ix_documents_site"), "documents", ["site"], unique=False)
    op.create_index(op.f("ix_documents_type_code"), "documents", ["type_code"], unique=False)
    op.create_index(op.f("ix_documents_status"), "documents", ["status"], unique=False)
    op.create_index(op.f("ix_documents_created_at"), "documents", ["created_at"], unique=False)
    op.create_index(op.f("ix_documents_relates_to"), "documents", ["relates_to"], unique=False)
    op.create_table(
        "document_studies",
        sa.Column("document_id", sa.Integer(), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["document_id"], ["documents.id"], name=op.f("fk_document_studies_document_id_documents")
        ),
        sa.PrimaryKeyConstraint("document_id", "study_uid", name=op.f("pk_document_studies")),
    )
    op.create_index(op.f("ix_document_studies_study_uid"), "document_studies", ["study_uid"], unique=False)
    if op.get_bind().dialect.name == "sqlite":
        op.execute(_FTS_CREATE)
    else:
        op.execute(_PG_CREATE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS documents_fts")
    else:
        op.execute("DROP INDEX IF EXISTS ix_documents_search_text_fr")
    op.drop_index(op.f("ix_document_studies_study_uid"), table_name="document_studies")
    op.drop_table("document_studies")
    op.drop_index(op.f("ix_documents_relates_to"), table_name="documents")
    op.drop_index(op.f("ix_documents_created_at"), table_name="documents")
    op.drop_index(op.f("ix_documents_status"), table_name="documents")
    op.drop_index(op.f("ix_documents_type_code"), table_name="documents")
    op.drop_index(op.f("ix_documents_site"), table_name="documents")
    op.drop_index("ix_documents_patient", table_name="documents")
    op.drop_table("documents")
