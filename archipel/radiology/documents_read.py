"""Reading the document registry: one document's row and studies, what the access policy weighs about it,
and its content, verified against the stored SHA-256 on every read."""

from __future__ import annotations

import hashlib
import logging

from sqlalchemy import select

from archipel.platform import access, audit
from archipel.platform.authn import Principal
from archipel.platform.confidentiality import INVISIBLE_PATIENT, decode
from archipel.platform.db import Database
from archipel.platform.storage import BlobNotFound, BlobStore
from archipel.radiology.documents_models import RELEASED, Document, DocumentStudy

log = logging.getLogger("archipel.documents")

#: The access policy's resource kind.
DOCUMENT = access.DOCUMENT


class DocumentNotFound(LookupError):
    """No document with this id (HTTP 404)."""


class DocumentCorrupt(RuntimeError):
    """The stored content no longer matches its hash, or is gone (HTTP 500, logged)."""


def policy_codes(doc: Document) -> frozenset[str]:
    """The confidentiality codes the access policy weighs for ``doc``: its own, plus ``INVISIBLE_PATIENT``
    while it is not released to the patient (preliminary, entered-in-error)."""
    codes = decode(doc.codes)
    return codes if doc.status in RELEASED else codes | {INVISIBLE_PATIENT}


def resource_of(doc: Document) -> access.Resource:
    """The access policy's view of ``doc``."""
    return access.Resource(
        kind=DOCUMENT,
        site=doc.site,
        patient=doc.patient_ref,
        ident=str(doc.id),
        confidentiality=policy_codes(doc),
    )


def get(db: Database, doc_id: int) -> Document:
    """The document's row, unchecked (callers run the policy); raises :class:`DocumentNotFound`."""
    with db.sessions() as s:
        doc = s.get(Document, doc_id)
    if doc is None:
        raise DocumentNotFound(f"no document {doc_id}")
    return doc


def studies_of(db: Database, doc_id: int) -> list[str]:
    """The Study Instance UIDs ``doc_id`` concerns."""
    with db.sessions() as s:
        return list(
            s.execute(
                select(DocumentStudy.study_uid)
                .where(DocumentStudy.document_id == doc_id)
                .order_by(DocumentStudy.study_uid)
            ).scalars()
        )


def check_read(
    db: Database, principal: Principal, doc_id: int, *, client: str = "", facts: access.Facts | None = None
) -> Document:
    """The document after the policy allowed ``principal`` to read it (audited); raises
    :class:`DocumentNotFound` or ``access.AccessDenied``."""
    doc = get(db, doc_id)
    access.check(
        db,
        principal,
        access.READ,
        resource_of(doc),
        event_type=audit.PATIENT_RECORD,
        source=client,
        facts=facts,
    )
    return doc


def read_content(
    db: Database, blobs: BlobStore, principal: Principal, doc_id: int, *, client: str = ""
) -> tuple[Document, bytes]:
    """The document and its content, after the policy's READ (audited) and a check of the content against
    its SHA-256 (:class:`DocumentCorrupt` when it does not match or is gone)."""
    doc = check_read(db, principal, doc_id, client=client)
    try:
        data = blobs.get(doc.blob_key)
    except (BlobNotFound, FileNotFoundError) as exc:
        log.error("event=document_content_missing document=%d", doc.id)
        raise DocumentCorrupt(f"the content of document {doc.id} is missing from the blob store") from exc
    if hashlib.sha256(data).hexdigest() != doc.sha256:
        log.error("event=document_content_corrupt document=%d", doc.id)
        raise DocumentCorrupt(f"the content of document {doc.id} does not match its SHA-256")
    return doc, data
