"""Reports of a reading request, written through the document registry (:mod:`archipel.radiology.documents`).

- :func:`save_preliminary` issues (or revises) the preliminary report: a ``preliminary`` document of the
  registry, linked to the study; the request becomes ``preliminary``;
- :func:`sign_final` signs it (revising its text first when a new one is given): the document becomes ``final``
  and immutable, the request ``final``, the claim ends. Signing again is 409;
- :func:`add_addendum` adds a signed addendum to the final report (the registry marks the report ``amended``).

Only the holder of a claim in force reports (addenda: the radiologist who signed). A report flagged critical
raises a critical result to the requester (:mod:`archipel.radiology.telerad_critical`). Each function checks the
workflow first, then writes the document (the registry runs the policy and audits); the step is recorded in the
document's own transaction, after the request is read again with a row lock and checked again, so that a step
that lost a race (the claim taken over meanwhile, a signature at the same time) is refused and its document
change undone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from archipel.platform.authn import Principal
from archipel.platform.runtime import Runtime
from archipel.radiology import documents, telerad, telerad_critical
from archipel.radiology.documents import InTransaction
from archipel.radiology.telerad_models import (
    CLAIMED,
    FINAL,
    PRELIMINARY,
    REPORT_ADDENDUM,
    REPORT_FINAL,
    REPORT_PRELIMINARY,
    REQUESTED,
    ReadingReport,
    ReadingRequest,
    TeleradError,
)

log = logging.getLogger("archipel.telerad")

#: LOINC 18748-4: Diagnostic imaging study (report).
REPORT_TYPE, REPORT_TYPE_DISPLAY = "18748-4", "Diagnostic imaging study"
TEXT = "text/plain"


@dataclass(frozen=True)
class ReportInput:
    """What the reader writes: the report's text, and whether (and what) it has a critical finding."""

    text: str
    critical: bool = False
    critical_finding: str = ""


def _draft(s: Session, request_id: int) -> ReadingReport | None:
    stmt = select(ReadingReport).where(
        ReadingReport.request_id == request_id,
        ReadingReport.kind.in_((REPORT_PRELIMINARY, REPORT_FINAL)),
        ReadingReport.signed_at.is_(None),
    )
    return s.execute(stmt.order_by(ReadingReport.id.desc()).limit(1)).scalar()


def _load(rt: Runtime, request_id: int) -> tuple[ReadingRequest, ReadingReport | None]:
    with rt.db.sessions() as s:
        req = telerad.get(s, request_id)
        return req, _draft(s, request_id)


def _content(req: ReadingRequest, text: str, kind: str) -> bytes:
    head = f"Teleradiology report ({kind}) - request #{req.id}, accession {req.accession_number or '-'}\n"
    return (head + f"Clinical information: {req.clinical_info}\n\n{text.strip()}\n").encode()


def _draft_unchanged(s: Session, request_id: int, draft_id: int | None) -> None:
    """409 when another save or a signature changed the draft since it was read (the caller holds the lock)."""
    draft = _draft(s, request_id)
    if (draft.id if draft is not None else None) != draft_id:
        raise TeleradError(409, f"the report of reading request {request_id} changed meanwhile; reload it")


def _register(
    rt: Runtime,
    principal: Principal,
    req: ReadingRequest,
    draft: ReadingReport | None,
    text: str,
    client: str,
    in_transaction: InTransaction,
    status: str = documents.PRELIMINARY,
) -> str:
    """The draft's document id after writing ``text`` into it (registered the first time, ``status`` then;
    revised after), with ``in_transaction`` run in the transaction that writes it."""
    content = _content(req, text, "preliminary")
    title = f"Teleradiology report, request #{req.id}"
    try:
        if draft is not None and draft.document_id:
            documents.revise(
                rt.db,
                rt.blobs,
                principal,
                int(draft.document_id),
                content=content,
                content_type=TEXT,
                client=client,
                in_transaction=in_transaction,
            )
            return draft.document_id
        doc = documents.register(
            rt.db,
            rt.blobs,
            principal,
            issuer=req.issuer,
            patient_id=req.patient_id,
            type_code=REPORT_TYPE,
            type_display=REPORT_TYPE_DISPLAY,
            title=title,
            content=content,
            content_type=TEXT,
            author=principal.subject,
            organisation=principal.site,
            site=req.issuer,
            study_uids=[req.study_uid] if req.study_uid else [],
            status=status,
            source="teleradiology",
            client=client,
            in_transaction=in_transaction,
        )
    except documents.DocumentLocked as exc:
        raise TeleradError(409, str(exc)) from exc
    except documents.DocumentInvalid as exc:
        raise TeleradError(422, str(exc)) from exc
    return str(doc.id)


def _check_writable(req: ReadingRequest, principal: Principal, now: datetime, body: ReportInput) -> None:
    if req.state == FINAL:
        raise TeleradError(
            409, f"the final report of reading request {req.id} is signed; add an addendum instead"
        )
    if not req.is_open:
        raise TeleradError(409, f"reading request {req.id} is {req.state}")
    telerad.check_holder(req, principal.subject, now)
    if not req.study_uid:
        raise TeleradError(409, "the study has not arrived yet: there are no images to report on")
    if body.critical and not body.critical_finding.strip():
        raise TeleradError(422, "a critical result needs its finding (critical_finding)")


def _record(
    s: Session,
    req: ReadingRequest,
    draft_id: int | None,
    doc_id: str,
    body: ReportInput,
    kind: str,
    by: str,
    now: datetime,
) -> ReadingReport:
    report = s.get(ReadingReport, draft_id) if draft_id is not None else None
    if report is None:
        report = ReadingReport(request_id=req.id, kind=kind, author=by, created_at=now, text="")
        s.add(report)
    report.kind, report.text, report.document_id = kind, body.text.strip(), doc_id
    report.critical = report.critical or body.critical
    if body.critical:
        report.critical_text = body.critical_finding.strip()
    s.flush()
    if body.critical:
        telerad_critical.raise_critical(s, req, report, body.critical_finding, by, now)
    return report


def save_preliminary(
    rt: Runtime, principal: Principal, request_id: int, body: ReportInput, *, client: str = ""
) -> ReadingReport:
    """Issue or revise the preliminary report (claim holder only); the request becomes ``preliminary``."""
    now = rt.clock()
    req, draft = _load(rt, request_id)
    _check_writable(req, principal, now, body)
    if not body.text.strip():
        raise TeleradError(422, "the report's text is empty")
    draft_id = draft.id if draft else None
    done: list[ReadingReport] = []

    def record(s: Session, doc: documents.Document) -> None:
        req = telerad.get_for_update(s, request_id)
        _check_writable(req, principal, now, body)
        _draft_unchanged(s, request_id, draft_id)
        done.append(_record(s, req, draft_id, str(doc.id), body, REPORT_PRELIMINARY, principal.subject, now))
        if req.state in (REQUESTED, CLAIMED):
            req.state = PRELIMINARY
        req.preliminary_at = req.preliminary_at or now

    doc_id = _register(rt, principal, req, draft, body.text, client, record)
    log.info("event=telerad_preliminary request=%d document=%s", request_id, doc_id)
    return done[0]


def sign_final(
    rt: Runtime, principal: Principal, request_id: int, body: ReportInput, *, client: str = ""
) -> ReadingReport:
    """Sign the final report (claim holder only), with ``body.text`` when given, else the preliminary's text.
    409 when it is signed already (the registry keeps a signed report unchanged), or without a claim."""
    now = rt.clock()
    req, draft = _load(rt, request_id)
    _check_writable(req, principal, now, body)
    text = body.text.strip() or (draft.text if draft is not None else "")
    if not text:
        raise TeleradError(422, "there is no report to sign: write its text")
    draft_id = draft.id if draft else None
    done: list[ReadingReport] = []

    def recheck(s: Session) -> ReadingRequest:
        req = telerad.get_for_update(s, request_id)
        if req.state == FINAL:  # a concurrent signature won the race
            raise TeleradError(409, f"the final report of reading request {req.id} is signed already")
        _check_writable(req, principal, now, body)
        _draft_unchanged(s, request_id, draft_id)
        return req

    def record(s: Session, doc: documents.Document) -> None:
        req = recheck(s)
        signed = ReportInput(text, body.critical, body.critical_finding)
        report = _record(s, req, draft_id, str(doc.id), signed, REPORT_FINAL, principal.subject, now)
        report.signed_at = now
        req.state, req.final_at, req.final_by = FINAL, now, principal.subject
        req.claim_holder, req.claim_expires_at = "", None
        done.append(report)

    if draft is None or not draft.document_id:
        doc_id = _register(rt, principal, req, None, text, client, record, status=documents.FINAL)
    else:
        doc_id = draft.document_id
        if body.text.strip() and body.text.strip() != draft.text:

            def checked(s: Session, _doc: documents.Document) -> None:
                recheck(s)

            _register(rt, principal, req, draft, text, client, checked)
        try:
            documents.sign(rt.db, principal, int(doc_id), client=client, in_transaction=record)
        except documents.DocumentLocked as exc:
            raise TeleradError(409, str(exc)) from exc
    log.info("event=telerad_final request=%d document=%s", request_id, doc_id)
    return done[0]


def add_addendum(
    rt: Runtime, principal: Principal, request_id: int, text: str, reason: str, *, client: str = ""
) -> ReadingReport:
    """Add a signed addendum to the final report (by the radiologist who signed it); 409 before the final."""
    now = rt.clock()
    with rt.db.sessions() as s:
        req = telerad.get(s, request_id)
        final = s.execute(
            select(ReadingReport).where(
                ReadingReport.request_id == request_id, ReadingReport.kind == REPORT_FINAL
            )
        ).scalar()
    if req.state != FINAL or final is None:
        raise TeleradError(409, "there is no signed final report to add to; write the report instead")
    if principal.subject != req.final_by:
        raise TeleradError(403, f"only {req.final_by}, who signed the report, adds an addendum")
    if not text.strip() or not reason.strip():
        raise TeleradError(422, "an addendum needs its text and its reason")
    try:
        doc = documents.add_addendum(
            rt.db,
            rt.blobs,
            principal,
            int(final.document_id),
            content=_content(req, text, "addendum"),
            content_type=TEXT,
            reason=reason,
            author=principal.subject,
            client=client,
        )
    except documents.DocumentLocked as exc:
        raise TeleradError(409, str(exc)) from exc
    with rt.db.write() as s:
        telerad.get_for_update(s, request_id)  # addenda at once are recorded one after the other
        report = ReadingReport(
            request_id=request_id,
            kind=REPORT_ADDENDUM,
            text=text.strip(),
            author=principal.subject,
            created_at=now,
            signed_at=now,
            document_id=str(doc.id),
        )
        s.add(report)
        s.flush()
    log.info("event=telerad_addendum request=%d document=%s", request_id, doc.id)
    return report
