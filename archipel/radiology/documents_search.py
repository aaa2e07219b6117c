"""Finding documents: by patient, type, date and status, and by the words of their title and text.

Full text is FTS5 on SQLite (table ``documents_fts``, ``porter unicode61`` tokenizer, diacritics removed) and
PostgreSQL's French text search on PostgreSQL (a GIN index on ``to_tsvector('french', search_text)``), so that
"poumons" finds "poumon" on both. The access policy's read scope is part of the one SQL statement
(``documents_visibility``): what a caller may not see is never counted, ranked or returned.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, TextClause, func, literal_column, select, text
from sqlalchemy.orm import Session

from archipel.platform.access import ReadScope
from archipel.platform.db import Database
from archipel.radiology import documents_visibility
from archipel.radiology.documents_content import without_accents
from archipel.radiology.documents_models import STATUSES, Document

#: The SQLite full-text table (its rowid is the document id).
FTS_TABLE = "documents_fts"
FTS_CREATE = (
    f"CREATE VIRTUAL TABLE {FTS_TABLE} USING fts5(search_text, "
    "tokenize = 'porter unicode61 remove_diacritics 2')"
)
#: The PostgreSQL expression index; queries repeat its expression so that the planner uses it.
PG_INDEX = "ix_documents_search_text_fr"
PG_CREATE = f"CREATE INDEX {PG_INDEX} ON documents USING gin (to_tsvector('french', search_text))"
_WORD = re.compile(r"\w+", re.UNICODE)
MAX_LIMIT = 200


class SearchInvalid(ValueError):
    """A search parameter is refused; the message names it (HTTP 400)."""


@dataclass(frozen=True)
class DocumentQuery:
    """What to look for. Every field narrows the result; ``words`` is the full-text query.

    ``master_id``: documents of that master patient (merges followed by the caller); ``issuer`` and
    ``patient_id``: of that local identity; ``created_from`` (inclusive) and ``created_before`` (exclusive):
    the registration date; ``statuses``: among these; ``type_codes``: LOINC codes."""

    master_id: int | None = None
    issuer: str = ""
    patient_id: str = ""
    type_codes: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    created_from: datetime | None = None
    created_before: datetime | None = None
    study_uid: str = ""
    words: str = ""
    limit: int = 50
    offset: int = 0


def index(s: Session, doc: Document) -> None:
    """Bring the full-text index in step with ``doc`` (in the caller's transaction). PostgreSQL indexes the
    column itself; SQLite keeps the FTS5 table."""
    if s.get_bind().dialect.name != "sqlite":
        return
    s.execute(text(f"DELETE FROM {FTS_TABLE} WHERE rowid = :id"), {"id": doc.id})
    s.execute(
        text(f"INSERT INTO {FTS_TABLE} (rowid, search_text) VALUES (:id, :t)"),
        {"id": doc.id, "t": doc.search_text},
    )


def _terms(words: str) -> list[str]:
    terms = _WORD.findall(without_accents(words))
    if not terms:
        raise SearchInvalid("the full-text query q has no word to look for")
    if len(terms) > 32:
        raise SearchInvalid("the full-text query q has more than 32 words")
    return terms


def _matches(dialect: str, words: str) -> tuple[ColumnElement[bool], ColumnElement[Any] | TextClause]:
    """The full-text condition for ``words`` (every word must be found, stemmed) and the ordering that puts
    the best match first."""
    terms = _terms(words)
    if dialect == "sqlite":
        # Each word quoted: a query is never FTS5 syntax, so no input can make it fail or widen it.
        fts = " ".join('"' + t.replace('"', "") + '"' for t in terms)
        rowids = text(f"SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :fts").bindparams(fts=fts)
        # bm25() is smaller for a better match, and is only defined inside a MATCH query of the table.
        best = text(
            f"(SELECT bm25({FTS_TABLE}) FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :fts "
            f"AND {FTS_TABLE}.rowid = documents.id) ASC"
        ).bindparams(fts=fts)
        return Document.id.in_(rowids.columns(literal_column("rowid"))), best
    vector = func.to_tsvector(literal_column("'french'"), Document.search_text)
    query = func.plainto_tsquery(literal_column("'french'"), " ".join(terms))
    return vector.op("@@")(query), func.ts_rank(vector, query).desc()


def statement(dialect: str, scope: ReadScope, q: DocumentQuery) -> Select[Document]:
    """The documents of ``q`` that ``scope`` makes visible, best match (or newest) first."""
    for status in q.statuses:
        if status not in STATUSES:
            raise SearchInvalid(f"unknown status {status!r}; use one of: {', '.join(STATUSES)}")
    conditions: list[ColumnElement[bool]] = [documents_visibility.condition(scope)]
    if q.master_id is not None:
        conditions.append(documents_visibility.of_master(q.master_id))
    if q.issuer:
        conditions.append(Document.issuer == q.issuer)
    if q.patient_id:
        conditions.append(Document.patient_id == q.patient_id)
    if q.type_codes:
        conditions.append(Document.type_code.in_(q.type_codes))
    if q.statuses:
        conditions.append(Document.status.in_(q.statuses))
    if q.created_from is not None:
        conditions.append(Document.created_at >= q.created_from)
    if q.created_before is not None:
        conditions.append(Document.created_at < q.created_before)
    if q.study_uid:
        from archipel.radiology.documents_models import DocumentStudy

        conditions.append(
            Document.id.in_(select(DocumentStudy.document_id).where(DocumentStudy.study_uid == q.study_uid))
        )
    stmt = select(Document).where(*conditions)
    order: list[ColumnElement[Any] | TextClause] = []
    if q.words:
        matched, best = _matches(dialect, q.words)
        stmt = stmt.where(matched)
        order.append(best)
    return stmt.order_by(*order, Document.created_at.desc(), Document.id.desc())


def find(db: Database, scope: ReadScope, q: DocumentQuery) -> tuple[list[Document], int]:
    """One page of the matching documents the scope makes visible, and how many match in all."""
    limit = min(max(q.limit, 1), MAX_LIMIT)
    stmt = statement(db.engine.dialect.name, scope, q)
    with db.sessions() as s:
        total = s.execute(select(func.count()).select_from(stmt.order_by(None).subquery())).scalar_one()
        rows: list[Document] = list(s.scalars(stmt.limit(limit).offset(max(q.offset, 0))))
    return rows, int(total)
