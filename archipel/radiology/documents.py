"""The document registry's service: register, revise, sign, add an addendum, mark entered-in-error, read.

This is the layer other modules write documents through (teleradiology reports, HL7 ORU^R01 results, portal
letters); the HTTP routes (``documents_api``) and FHIR (``documents_fhir``) are thin over it.

- :func:`register` stores a new document (``preliminary`` by default; ``final`` for one signed elsewhere);
- :func:`revise` replaces the content of a ``preliminary`` document;
- :func:`sign` makes it ``final``: from then on its content and status never change, except that
- :func:`add_addendum` adds a new, signed document that ``appends`` it, and the parent becomes ``amended``;
- :func:`enter_in_error` withdraws a document with a reason (``entered-in-error``); its content is kept;
- :func:`read_content` returns the bytes after verifying them against the stored SHA-256.

Every function takes the acting :class:`~archipel.platform.authn.Principal`, runs the access policy (CREATE,
UPDATE or READ on a ``document`` resource) and is audited. Refusals raise ``access.AccessDenied``; an unknown
id :class:`DocumentNotFound`; a change the status forbids :class:`DocumentLocked` (HTTP 409); bad content or
metadata :class:`DocumentInvalid` (422) or :class:`UnsupportedContentType` (415). The content is stored in the
blob store (fsynced) before the row is committed, under its SHA-256.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable, Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from archipel.platform import access, audit
from archipel.platform.access_facts import master_of_ref
from archipel.platform.authn import Principal
from archipel.platform.confidentiality import MASQUE_PS, encode
from archipel.platform.confidentiality import validate as validate_codes
from archipel.platform.db import Database, utcnow
from archipel.platform.storage import BlobStore
from archipel.radiology import documents_search
from archipel.radiology.documents_content import (
    CONTENT_TYPES,
    DocumentInvalid,
    UnsupportedContentType,
    check_content,
    searchable_text,
    without_accents,
)
from archipel.radiology.documents_models import (
    AMENDED,
    APPENDS,
    ENTERED_IN_ERROR,
    FINAL,
    PRELIMINARY,
    STATUSES,
    Document,
    DocumentStudy,
)
from archipel.radiology.documents_read import (
    DOCUMENT,
    DocumentCorrupt,
    DocumentNotFound,
    check_read,
    get,
    policy_codes,
    read_content,
    resource_of,
    studies_of,
)

__all__ = [
    "CONFIDENTIALITY_CODES",
    "CONTENT_TYPES",
    "DOCUMENT",
    "STATUSES",
    "Document",
    "DocumentCorrupt",
    "DocumentInvalid",
    "DocumentLocked",
    "DocumentNotFound",
    "DocumentStudy",
    "UnsupportedContentType",
    "add_addendum",
    "check_read",
    "enter_in_error",
    "get",
    "policy_codes",
    "read_content",
    "register",
    "resource_of",
    "revise",
    "sign",
    "studies_of",
]

log = logging.getLogger("archipel.documents")

#: HL7 v3 Confidentiality codes (FHIR securityLabel): unrestricted, low, moderate, normal, restricted, very.
CONFIDENTIALITY_CODES = {
    "U": "unrestricted",
    "L": "low",
    "M": "moderate",
    "N": "normal",
    "R": "restricted",
    "V": "very restricted",
}


class DocumentLocked(ValueError):
    """The document's status forbids the change: a signed document is immutable (HTTP 409)."""


#: A caller's step run inside the transaction that writes a document, after the write (``in_transaction``): the
#: caller re-checks and changes its own rows (locked) in the same commit; an exception it raises undoes the
#: document's change too, so a workflow that loses a race leaves no document behind.
InTransaction = Callable[[Session, "Document"], None]


def _store(blobs: BlobStore, content: bytes) -> tuple[str, str, int]:
    digest = hashlib.sha256(content).hexdigest()
    blobs.put(digest, content)
    return digest, digest, len(content)


def _checked_confidentiality(confidentiality: str, codes: Iterable[str]) -> tuple[str, str]:
    hl7 = (confidentiality or "N").strip().upper()
    if hl7 not in CONFIDENTIALITY_CODES:
        raise DocumentInvalid(
            f"unknown confidentiality {confidentiality!r}; use one of: {', '.join(CONFIDENTIALITY_CODES)}"
        )
    try:
        own = validate_codes(codes)
    except ValueError as exc:
        raise DocumentInvalid(str(exc)) from exc
    if hl7 == "V":
        own |= {MASQUE_PS}
    return hl7, encode(own)


def _required(**fields: str) -> None:
    for name, value in fields.items():
        if not value or not value.strip():
            raise DocumentInvalid(f"{name} is required")


def register(
    db: Database,
    blobs: BlobStore,
    principal: Principal,
    *,
    issuer: str,
    patient_id: str,
    type_code: str,
    title: str,
    content: bytes,
    content_type: str,
    author: str,
    organisation: str,
    site: str,
    type_display: str = "",
    status: str = PRELIMINARY,
    confidentiality: str = "N",
    codes: Iterable[str] = (),
    study_uids: Iterable[str] = (),
    source: str = "",
    accession_number: str = "",
    client: str = "",
    in_transaction: InTransaction | None = None,
) -> Document:
    """Register a new document for patient ``issuer/patient_id`` and return it.

    ``status`` is ``preliminary`` (to be revised and signed) or ``final`` (signed at once by ``principal``);
    ``confidentiality`` an HL7 code (N, R, V...), ``codes`` the platform's confidentiality codes
    (``MASQUE_PS``, ``PSY``...). ``source`` says where the document came from, ``client`` is the caller's
    address for the audit trail. ``accession_number`` names the study it reports on, which is linked when it is
    stored later (:mod:`archipel.radiology.documents_expected`). Checks access CREATE (audited), stores the
    content durably, then commits; ``in_transaction`` (:data:`InTransaction`) runs in the commit's transaction.
    """
    _required(issuer=issuer, patient_id=patient_id, type_code=type_code, title=title, site=site)
    if status not in (PRELIMINARY, FINAL):
        raise DocumentInvalid(f"a new document is preliminary or final, not {status!r}")
    hl7, stored_codes = _checked_confidentiality(confidentiality, codes)
    bare = check_content(content, content_type)
    uids = sorted({u.strip() for u in study_uids if u.strip()})
    if any(len(u) > 64 for u in uids):
        raise DocumentInvalid("a Study Instance UID has at most 64 characters")
    uid = f"urn:uuid:{uuid.uuid4()}"
    probe = access.Resource(kind=DOCUMENT, site=site, patient=f"{issuer}/{patient_id}", ident=uid)
    access.check(db, principal, access.CREATE, probe, event_type=audit.PATIENT_RECORD, source=client)
    key, digest, size = _store(blobs, content)
    words = searchable_text(title, content, bare)  # before the write lock: a PDF's text takes a while
    now = utcnow()
    with db.write() as s:
        doc = Document(
            uid=uid,
            master_id=master_of_ref(s, f"{issuer}/{patient_id}"),
            issuer=issuer,
            patient_id=patient_id,
            site=site,
            type_code=type_code.strip(),
            type_display=type_display,
            title=title.strip(),
            author=author,
            organisation=organisation,
            status=status,
            confidentiality=hl7,
            codes=stored_codes,
            created_at=now,
            created_by=principal.subject,
            signed_at=now if status == FINAL else None,
            signed_by=principal.subject if status == FINAL else "",
            content_type=bare,
            blob_key=key,
            sha256=digest,
            size=size,
            source=source,
            accession_number=accession_number.strip()[:64],
            search_text=words,
        )
        s.add(doc)
        s.flush()
        s.add_all(DocumentStudy(document_id=doc.id, study_uid=u) for u in uids)
        documents_search.index(s, doc)
        if in_transaction is not None:
            in_transaction(s, doc)
    log.info(
        "event=document_registered document=%d site=%s status=%s source=%s", doc.id, site, status, source
    )
    return doc


def _authorised(db: Database, principal: Principal, doc_id: int, client: str) -> Document:
    doc = get(db, doc_id)
    access.check(
        db, principal, access.UPDATE, resource_of(doc), event_type=audit.PATIENT_RECORD, source=client
    )
    return doc


def _locked_row(s: Session, doc_id: int) -> Document:
    doc = s.execute(select(Document).where(Document.id == doc_id).with_for_update()).scalar_one_or_none()
    if doc is None:
        raise DocumentNotFound(f"no document {doc_id}")
    return doc


def revise(
    db: Database,
    blobs: BlobStore,
    principal: Principal,
    doc_id: int,
    *,
    content: bytes,
    content_type: str,
    title: str | None = None,
    client: str = "",
    in_transaction: InTransaction | None = None,
) -> Document:
    """Replace the content (and optionally the title) of a preliminary document; a signed one is
    :class:`DocumentLocked`. ``in_transaction`` as for :func:`register`."""
    get(db, doc_id)  # an unknown document is 404 before its content is looked at
    bare = check_content(content, content_type)
    _authorised(db, principal, doc_id, client)
    key, digest, size = _store(blobs, content)
    body = searchable_text("", content, bare)
    with db.write() as s:
        doc = _locked_row(s, doc_id)
        if doc.status != PRELIMINARY:
            raise DocumentLocked(
                f"document {doc_id} is {doc.status}: a signed document is not changed; add an addendum"
            )
        if title is not None and title.strip():
            doc.title = title.strip()
        doc.content_type, doc.blob_key, doc.sha256, doc.size = bare, key, digest, size
        doc.search_text = f"{without_accents(doc.title)}\n{body}".strip()
        documents_search.index(s, doc)
        if in_transaction is not None:
            in_transaction(s, doc)
    log.info("event=document_revised document=%d", doc_id)
    return doc


def sign(
    db: Database,
    principal: Principal,
    doc_id: int,
    *,
    client: str = "",
    in_transaction: InTransaction | None = None,
) -> Document:
    """Sign a preliminary document: it becomes ``final`` and immutable. Signing it again is
    :class:`DocumentLocked`. ``in_transaction`` as for :func:`register`."""
    _authorised(db, principal, doc_id, client)
    with db.write() as s:
        doc = _locked_row(s, doc_id)
        if doc.status != PRELIMINARY:
            signed = f" by {doc.signed_by}" if doc.signed_by else ""
            raise DocumentLocked(
                f"document {doc_id} is {doc.status} already{signed}; it cannot be signed again"
            )
        doc.status, doc.signed_at, doc.signed_by = FINAL, utcnow(), principal.subject
        if in_transaction is not None:
            in_transaction(s, doc)
    log.info("event=document_signed document=%d", doc_id)
    return doc


def add_addendum(
    db: Database,
    blobs: BlobStore,
    principal: Principal,
    doc_id: int,
    *,
    content: bytes,
    content_type: str,
    reason: str,
    title: str = "",
    author: str = "",
    client: str = "",
) -> Document:
    """Add a signed addendum to a final (or already amended) document and return the addendum; the parent
    becomes ``amended`` and keeps its content. A preliminary document is revised instead
    (:class:`DocumentLocked`), as is one entered in error."""
    get(db, doc_id)
    _required(reason=reason)
    bare = check_content(content, content_type)
    _authorised(db, principal, doc_id, client)
    key, digest, size = _store(blobs, content)
    body = searchable_text("", content, bare)
    now = utcnow()
    with db.write() as s:
        parent = _locked_row(s, doc_id)
        if parent.status not in (FINAL, AMENDED):
            hint = "revise it instead" if parent.status == PRELIMINARY else "it was withdrawn"
            raise DocumentLocked(
                f"document {doc_id} is {parent.status}: an addendum needs a signed one; {hint}"
            )
        heading = title.strip() or f"Addendum: {parent.title}"[:300]
        doc = Document(
            uid=f"urn:uuid:{uuid.uuid4()}",
            master_id=parent.master_id,
            issuer=parent.issuer,
            patient_id=parent.patient_id,
            site=parent.site,
            type_code=parent.type_code,
            type_display=parent.type_display,
            title=heading,
            author=author or parent.author,
            organisation=parent.organisation,
            status=FINAL,
            confidentiality=parent.confidentiality,
            codes=parent.codes,
            created_at=now,
            created_by=principal.subject,
            signed_at=now,
            signed_by=principal.subject,
            content_type=bare,
            blob_key=key,
            sha256=digest,
            size=size,
            relates_to=parent.id,
            relation=APPENDS,
            addendum_reason=reason.strip(),
            source=parent.source,
            accession_number=parent.accession_number,
            search_text=f"{without_accents(heading)}\n{body}".strip(),
        )
        s.add(doc)
        parent.status = AMENDED
        s.flush()
        uids = s.execute(
            select(DocumentStudy.study_uid).where(DocumentStudy.document_id == parent.id)
        ).scalars()
        s.add_all(DocumentStudy(document_id=doc.id, study_uid=u) for u in list(uids))
        documents_search.index(s, doc)
    log.info("event=document_amended document=%d addendum=%d", doc_id, doc.id)
    return doc


def enter_in_error(
    db: Database, principal: Principal, doc_id: int, *, reason: str, client: str = ""
) -> Document:
    """Withdraw a document with ``reason``: it becomes ``entered-in-error``, its content is kept and it no
    longer shows to patients. Withdrawing it twice is :class:`DocumentLocked`."""
    get(db, doc_id)
    _required(reason=reason)
    _authorised(db, principal, doc_id, client)
    with db.write() as s:
        doc = _locked_row(s, doc_id)
        if doc.status == ENTERED_IN_ERROR:
            raise DocumentLocked(f"document {doc_id} was entered in error already: {doc.error_reason}")
        doc.status, doc.error_reason = ENTERED_IN_ERROR, reason.strip()
        doc.error_at, doc.error_by = utcnow(), principal.subject
    log.info("event=document_entered_in_error document=%d", doc_id)
    return doc
