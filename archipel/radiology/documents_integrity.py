"""Keeping the document registry sound over time: every content against its hash, and the full-text index
rebuilt from the contents.

These are operator tasks (``archipel documents verify`` / ``reindex``), not reads for a person: they name
documents by id only and never print or log their words.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import select

from archipel.platform.db import Database
from archipel.platform.storage import BlobNotFound, BlobStore
from archipel.radiology import documents_search
from archipel.radiology.documents_content import searchable_text, without_accents
from archipel.radiology.documents_models import Document

log = logging.getLogger("archipel.documents")


@dataclass(frozen=True)
class ContentProblem:
    """A document whose content is missing from the blob store or no longer matches its SHA-256."""

    document_id: int
    reason: str


def _ids(db: Database) -> list[int]:
    with db.sessions() as s:
        return list(s.execute(select(Document.id).order_by(Document.id)).scalars())


def _content(blobs: BlobStore, doc: Document) -> bytes | None:
    try:
        return blobs.get(doc.blob_key)
    except (BlobNotFound, FileNotFoundError):
        return None


def verify_contents(db: Database, blobs: BlobStore) -> Iterator[ContentProblem | int]:
    """Check every document's content against its size and SHA-256; yield each problem, and the number of
    documents checked so far after each one (for a progress bar)."""
    for n, doc_id in enumerate(_ids(db), start=1):
        with db.sessions() as s:
            doc = s.get(Document, doc_id)
        if doc is None:  # deleted meanwhile: documents are never deleted, but a restore may race
            continue
        data = _content(blobs, doc)
        if data is None:
            log.error("event=document_content_missing document=%d", doc.id)
            yield ContentProblem(doc.id, "content missing from the blob store")
        elif len(data) != doc.size or hashlib.sha256(data).hexdigest() != doc.sha256:
            log.error("event=document_content_corrupt document=%d", doc.id)
            yield ContentProblem(doc.id, "content does not match its SHA-256")
        yield n


def reindex(db: Database, blobs: BlobStore) -> Iterator[ContentProblem | int]:
    """Recompute every document's searchable text from its content and refresh the full-text index (after a
    restore, or when the extraction rules change); yield problems (a content gone or altered is indexed by its
    title only) and the count done."""
    for n, doc_id in enumerate(_ids(db), start=1):
        with db.sessions() as s:
            found = s.get(Document, doc_id)
        if found is None:
            continue
        # The text is extracted before the write transaction: a PDF's takes a while, and SQLite has one writer.
        data = _content(blobs, found)
        problem: ContentProblem | None = None
        if data is None or hashlib.sha256(data).hexdigest() != found.sha256:
            words = without_accents(found.title)
            problem = ContentProblem(doc_id, "content unreadable; indexed by its title")
        else:
            words = searchable_text(found.title, data, found.content_type)
        with db.write() as s:
            doc = s.get(Document, doc_id)
            if doc is None or (doc.blob_key, doc.title) != (found.blob_key, found.title):
                continue  # revised meanwhile: the revision indexed its own text
            doc.search_text = words
            documents_search.index(s, doc)
        if problem is not None:
            yield problem
        yield n
    log.info("event=documents_reindexed")
