"""A patient's documents (reports, letters, forms) in an export bag, and their restoration on import.

Each document travels as two payload files: its content, as stored, and its registry metadata as JSON
(``documents/<n>.json``: uid, status, signature, codes, the studies it concerns, the document it appends...).
Restoring puts the same row back (same uid, status, dates and signer: a signed report stays the one that was
signed), its content under its SHA-256, and re-indexes its text. A document whose uid is already registered is
left as it is.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from archipel.platform import access, audit
from archipel.platform.access_facts import master_of_ref
from archipel.platform.authn import Principal
from archipel.platform.db import Database
from archipel.platform.storage import BlobNotFound, BlobStore
from archipel.radiology import documents_search
from archipel.radiology.documents_content import media_type, searchable_text
from archipel.radiology.documents_models import Document, DocumentStudy
from archipel.radiology.documents_read import resource_of

log = logging.getLogger("archipel.export")

FOLDER = "documents"
#: The registry columns carried as they are (``id``, ``blob_key``, ``master_id`` and the search text are the
#: receiving platform's own; ``relates_to`` travels as the parent's uid).
_FIELDS = (
    "uid", "issuer", "patient_id", "site", "type_code", "type_display", "title", "author", "organisation",
    "status", "confidentiality", "codes", "created_by", "signed_by", "content_type", "sha256", "size",
    "relation", "addendum_reason", "error_reason", "error_by", "source",
)  # fmt: skip
_DATES = ("created_at", "signed_at", "error_at")
_EXTENSIONS = {"text/plain": "txt", "text/html": "html", "application/pdf": "pdf", "application/xml": "xml"}


class DocumentsRefused(ValueError):
    """The documents of a bag cannot be restored; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ExportedDocument:
    """One document to export: its row (detached), the parent's uid, its studies and its paths in the bag."""

    row: Document
    parent_uid: str
    studies: tuple[str, ...]
    index: int

    @property
    def resource(self) -> access.Resource:
        """The access policy's view of the document."""
        return resource_of(self.row)

    @property
    def content_path(self) -> str:
        """The content's path under the bag's ``data/``."""
        ext = _EXTENSIONS.get(media_type(self.row.content_type), "bin")
        return f"{FOLDER}/{self.index:06d}.{ext}"

    @property
    def metadata_path(self) -> str:
        """The metadata's path under the bag's ``data/``."""
        return f"{FOLDER}/{self.index:06d}.json"


def of_patients(db: Database, patients: list[tuple[str, str]]) -> list[ExportedDocument]:
    """Every registered document of the ``(issuer, PatientID)`` identities, oldest first (a parent before its
    addenda)."""
    if not patients:
        return []
    with db.sessions() as s:
        rows = list(
            s.execute(
                select(Document)
                .where(
                    Document.issuer.in_(sorted({i for i, _ in patients})),
                    Document.patient_id.in_(sorted({p for _, p in patients})),
                )
                .order_by(Document.created_at, Document.id)
            ).scalars()
        )
        rows = [d for d in rows if (d.issuer, d.patient_id) in set(patients)]
        uids = {d.id: d.uid for d in rows}
        studies: dict[int, list[str]] = {}
        if rows:
            for doc_id, study_uid in s.execute(
                select(DocumentStudy.document_id, DocumentStudy.study_uid).where(
                    DocumentStudy.document_id.in_(list(uids))
                )
            ):
                studies.setdefault(doc_id, []).append(study_uid)
        for d in rows:
            s.expunge(d)
    return [
        ExportedDocument(d, uids.get(d.relates_to or -1, ""), tuple(sorted(studies.get(d.id, []))), n)
        for n, d in enumerate(rows, start=1)
    ]


def package(blobs: BlobStore, doc: ExportedDocument) -> tuple[bytes, bytes]:
    """The document's content (checked against its SHA-256) and its metadata as JSON bytes."""
    row = doc.row
    try:
        content = blobs.get(row.blob_key)
    except (BlobNotFound, FileNotFoundError) as exc:
        raise DocumentsRefused(f"document {row.uid}: its stored content is missing") from exc
    if hashlib.sha256(content).hexdigest() != row.sha256:
        raise DocumentsRefused(f"document {row.uid}: its stored content does not match its SHA-256")
    meta: dict[str, Any] = {f: getattr(row, f) for f in _FIELDS}
    meta.update({f: (getattr(row, f).isoformat() if getattr(row, f) else None) for f in _DATES})
    meta.update(relates_to=doc.parent_uid, studies=list(doc.studies), content=doc.content_path)
    return content, json.dumps(meta, indent=1, ensure_ascii=False).encode()


def _row(meta: dict[str, Any], content: bytes, key: str, master: int | None) -> Document:
    values = {f: meta[f] for f in _FIELDS}
    dates = {f: (datetime.fromisoformat(meta[f]) if meta.get(f) else None) for f in _DATES}
    text = searchable_text(values["title"], content, values["content_type"])
    return Document(**values, **dates, master_id=master, blob_key=key, search_text=text)


def restore(db: Database, blobs: BlobStore, root: Path, actor: Principal, source: str = "") -> int:
    """Register again every document of the checked bag at ``root`` that this platform does not hold; return
    how many. Each is audited as an *Import*. A content that does not match its metadata's SHA-256 is refused
    (:class:`DocumentsRefused`) before any document is written."""
    folder = root / "data" / FOLDER
    metas = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))]
    contents: list[bytes] = []
    for meta in metas:
        content = (root / "data" / meta["content"]).read_bytes()
        if hashlib.sha256(content).hexdigest() != meta["sha256"]:
            raise DocumentsRefused(f"document {meta['uid']}: content does not match its metadata's SHA-256")
        contents.append(content)
    restored = 0
    for meta, content in zip(metas, contents, strict=True):
        with db.sessions() as s:
            known = s.execute(select(Document.id).where(Document.uid == meta["uid"])).scalar_one_or_none()
        if known is not None:
            continue
        blobs.put(meta["sha256"], content)
        with db.write() as s:
            doc = _row(
                meta, content, meta["sha256"], master_of_ref(s, f"{meta['issuer']}/{meta['patient_id']}")
            )
            if meta.get("relates_to"):
                doc.relates_to = s.execute(
                    select(Document.id).where(Document.uid == meta["relates_to"])
                ).scalar_one_or_none()
            s.add(doc)
            s.flush()
            s.add_all(DocumentStudy(document_id=doc.id, study_uid=u) for u in meta.get("studies", []))
            documents_search.index(s, doc)
            ref, doc_id = doc.patient_ref, doc.id
        audit.record(db, actor, audit.IMPORT, "import:document", patient=ref, obj=str(doc_id), source=source)
        restored += 1
    log.info("event=documents_restored count=%d", restored)
    return restored
