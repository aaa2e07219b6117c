"""Teleradiology reading requests: ask for a reading (from the API or a RIS order), link the study when its images
arrive, claim it (an exclusive lock that expires, as a frozen section is claimed), release it, cancel it.

A request names the study, or only an accession number while the order comes before the images; when a study of
that accession and patient is stored, :func:`link_arrived_study` links it. Each priority has a due time
(:data:`DUE_WITHIN`). Claiming gives the radiologist a reading assignment on the master patient, so that the
existing policy lets them read the images and the patient's priors at every site; the requester with an account
gets a referring relationship. Reports are :mod:`archipel.radiology.telerad_reports`, the SLA escalation
:mod:`archipel.radiology.telerad_sla`.

:func:`create_request` and :func:`cancel_request` take the database and the acting principal, ask the policy
(audited), and commit; the other functions run in the caller's transaction. All raise :class:`TeleradError` with
the HTTP status and the reason of an impossible step, before changing anything. The functions that take the
caller's session expect the request read by :func:`get_for_update` in it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from archipel.platform import access, access_facts, audit, care
from archipel.platform.authn import Principal
from archipel.platform.db import Database, utcnow
from archipel.radiology import stored
from archipel.radiology.models import Patient, Study
from archipel.radiology.stored import StoredObject
from archipel.radiology.telerad_models import (  # noqa: F401  (the workflow's vocabulary, re-exported)
    CANCELLED,
    CLAIMED,
    DUE_WITHIN,
    FINAL,
    PRELIMINARY,
    PRIORITIES,
    PURPOSE,
    REQUESTED,
    Physician,
    ReadingRequest,
    TeleradError,
)

log = logging.getLogger("archipel.telerad")

#: How long the requester's and the reader's relationships with the patient last (the follow-up of the reading).
FOLLOW_UP = timedelta(days=30)
#: How long a claim holds unless renewed.
CLAIM_MINUTES = 20


def resource(req: ReadingRequest) -> access.Resource:
    """The policy resource of a request."""
    return access.Resource(
        kind=access.READING_REQUEST,
        site=req.issuer,
        patient=req.patient,
        master=req.master_id,
        ident=f"reading-request:{req.id}",
    )


def get(s: Session, request_id: int) -> ReadingRequest:
    """The request, or :class:`TeleradError` 404."""
    req = s.get(ReadingRequest, request_id)
    if req is None:
        raise TeleradError(404, f"no reading request {request_id}")
    return req


def get_for_update(s: Session, request_id: int) -> ReadingRequest:
    """The request read with a row lock (``SELECT ... FOR UPDATE``) held until the transaction ends, or 404.

    Every step that changes a request reads it this way inside its write transaction, so that two steps at
    once (two claims) run one after the other and the second sees what the first did. PostgreSQL's READ
    COMMITTED would otherwise let both read the same row and both win; on SQLite the write transaction holds
    the database's only write lock already."""
    req = s.get(ReadingRequest, request_id, with_for_update=True, populate_existing=True)
    if req is None:
        raise TeleradError(404, f"no reading request {request_id}")
    return req


def _physician(value: Physician | Mapping[str, str]) -> Physician:
    if isinstance(value, Physician):
        doc = value
    else:
        doc = Physician(
            name=str(value.get("name", "")),
            email=str(value.get("email", "")),
            phone=str(value.get("phone", "")),
            username=str(value.get("username", "")),
        )
    if not doc.name.strip():
        raise TeleradError(422, "the requesting physician's name is required")
    return Physician(
        doc.name.strip()[:200], doc.email.strip()[:255], doc.phone.strip()[:32], doc.username.strip()
    )


def study_of_accession(s: Session, issuer: str, patient_id: str, accession: str) -> str:
    """The Study Instance UID of the patient's study with this accession number, or ``""``."""
    if not accession:
        return ""
    stmt = (
        select(Study.study_uid)
        .join(Patient, Patient.id == Study.patient_pk)
        .where(
            Patient.issuer == issuer, Patient.patient_id == patient_id, Study.accession_number == accession
        )
        .order_by(Study.id)
        .limit(1)
    )
    return s.execute(stmt).scalar() or ""


def existing_order(s: Session, requesting_site: str, placer_order: str) -> ReadingRequest | None:
    """The request made for this site's placer order number, if any (a RIS sends an order again)."""
    if not placer_order:
        return None
    stmt = select(ReadingRequest).where(
        ReadingRequest.requesting_site == requesting_site, ReadingRequest.placer_order == placer_order
    )
    return s.execute(stmt.order_by(ReadingRequest.id).limit(1)).scalar()


def create_request(
    db: Database,
    principal: Principal,
    *,
    issuer: str,
    patient_id: str,
    accession_number: str,
    study_uid: str | None = None,
    requesting_site: str,
    physician: Physician | Mapping[str, str],
    clinical_info: str,
    justification: str,
    priority: str,
    subspecialty: str = "",
    placer_order: str = "",
    now: datetime | None = None,
    source: str = "",
) -> ReadingRequest:
    """Ask for a reading of a study (or of the study expected under ``accession_number``) and commit it.

    Idempotent on (``requesting_site``, ``placer_order``) when ``placer_order`` is given: the same order again
    returns the request made the first time, unchanged. The due time is the request time plus the priority's
    delay. Raises :class:`TeleradError` 422 for an unknown priority, a missing study reference, a patient unknown
    to the MPI or a study of another patient, 403 when the policy refuses (the decision is audited either way).
    """
    when = now or utcnow()
    priority = priority.strip().lower()
    if priority not in DUE_WITHIN:
        raise TeleradError(422, f"unknown priority {priority!r}; choose one of: {', '.join(PRIORITIES)}")
    if not issuer or not patient_id:
        raise TeleradError(422, "the patient (issuer and PatientID) is required")
    if not (study_uid or accession_number):
        raise TeleradError(422, "a Study Instance UID or an accession number is required")
    if not requesting_site:
        raise TeleradError(422, "the requesting site is required")
    doctor = _physician(physician)
    res = access.Resource(kind=access.READING_REQUEST, site=issuer, patient=f"{issuer}/{patient_id}")
    res, facts = access_facts.load(db, principal, res, when)
    try:
        access.check(
            db, principal, access.CREATE, res, event_type=audit.PATIENT_RECORD, source=source, facts=facts
        )
    except access.AccessDenied as exc:
        raise TeleradError(403, exc.reason) from exc
    if res.master is None:
        raise TeleradError(
            422, f"patient {issuer}/{patient_id} is unknown to the master patient index; register them first"
        )
    with db.write() as s:
        again = existing_order(s, requesting_site, placer_order)
        if again is not None:
            return again
        uid = study_uid or study_of_accession(s, issuer, patient_id, accession_number)
        if study_uid:
            _check_study_of_patient(s, study_uid, issuer, patient_id)
        req = ReadingRequest(
            study_uid=uid,
            accession_number=accession_number[:16],
            issuer=issuer,
            patient_id=patient_id,
            master_id=res.master,
            requesting_site=requesting_site,
            placer_order=placer_order[:64],
            physician_name=doctor.name,
            physician_email=doctor.email,
            physician_phone=doctor.phone,
            physician_user=doctor.username,
            clinical_info=clinical_info,
            justification=justification,
            subspecialty=subspecialty.strip().lower()[:32],
            priority=priority,
            state=REQUESTED,
            created_by=principal.subject,
            requested_at=when,
            due_at=when + DUE_WITHIN[priority],
            study_linked_at=when if uid else None,
        )
        s.add(req)
        s.flush()
        if doctor.username:
            care.record(
                s,
                doctor.username,
                res.master,
                care.REFERRING,
                recorded_by=principal.subject,
                valid_from=when,
                valid_to=when + FOLLOW_UP,
                context=f"reading-request:{req.id} requester",
            )
        log.info(
            "event=telerad_requested request=%d site=%s priority=%s linked=%s",
            req.id,
            requesting_site,
            priority,
            bool(uid),
        )
        return req


def _check_study_of_patient(s: Session, study_uid: str, issuer: str, patient_id: str) -> None:
    row = s.execute(
        select(Patient.issuer, Patient.patient_id)
        .join(Study, Study.patient_pk == Patient.id)
        .where(Study.study_uid == study_uid)
    ).first()
    if row is not None and (row[0], row[1]) != (issuer, patient_id):
        raise TeleradError(422, f"study {study_uid} is of another patient than {issuer}/{patient_id}")


def cancel_request(
    db: Database,
    principal: Principal,
    request_id: int | None = None,
    *,
    requesting_site: str = "",
    placer_order: str = "",
    reason: str = "",
    now: datetime | None = None,
    source: str = "",
) -> ReadingRequest:
    """Cancel a request, named by id or by (``requesting_site``, ``placer_order``) as a RIS cancels its order.

    Cancelling a cancelled request returns it unchanged; a request with a final report cannot be cancelled
    (409). The claim ends, and the reader's assignment with it.
    """
    when = now or utcnow()
    with db.sessions() as s:
        req = s.get(ReadingRequest, request_id) if request_id is not None else None
        if req is None and placer_order:
            req = existing_order(s, requesting_site, placer_order)
    if req is None:
        named = request_id if request_id is not None else f"{requesting_site}/{placer_order}"
        raise TeleradError(404, f"no reading request {named}")
    res, facts = access_facts.load(db, principal, resource(req), when)
    try:
        access.check(
            db, principal, access.UPDATE, res, event_type=audit.PATIENT_RECORD, source=source, facts=facts
        )
    except access.AccessDenied as exc:
        raise TeleradError(403, exc.reason) from exc
    with db.write() as s:
        req = get_for_update(s, req.id)
        if req.state == CANCELLED:
            return req
        if req.state == FINAL:
            raise TeleradError(
                409, f"reading request {req.id} has a signed final report; add an addendum instead"
            )
        req.state, req.cancelled_at, req.cancelled_by = CANCELLED, when, principal.subject
        req.cancel_reason = reason[:2000]
        req.claim_holder, req.claim_expires_at = "", None
        _end_assignments(s, req.id, when)
        log.info("event=telerad_cancelled request=%d", req.id)
        return req


def _end_assignments(s: Session, request_id: int, now: datetime) -> None:
    stmt = select(care.CareRelationship).where(
        care.CareRelationship.kind == care.READING_ASSIGNMENT,
        care.CareRelationship.context == f"reading-request:{request_id} reader",
    )
    for row in s.execute(stmt).scalars():
        if row.valid_to is None or row.valid_to > now:
            care.end(s, row.id, ended_by="teleradiology", at=now)


def claim(
    s: Session, req: ReadingRequest, radiologist: str, *, now: datetime, minutes: int = CLAIM_MINUTES
) -> bool:
    """Take (or renew) the exclusive claim for ``minutes``; ``True`` when it is a new claim. 409 when the request
    is final or cancelled, or another radiologist holds an unexpired claim (the reason says who and until when);
    an expired claim is taken over."""
    if not req.is_open:
        raise TeleradError(409, f"reading request {req.id} is {req.state}; there is nothing to claim")
    if req.claim_in_force(now) and req.claim_holder != radiologist:
        assert req.claim_expires_at is not None
        raise TeleradError(
            409, f"claimed by {req.claim_holder} until {req.claim_expires_at.isoformat(timespec='seconds')}"
        )
    renewed = req.claim_in_force(now) and req.claim_holder == radiologist
    if not renewed:
        care.record(
            s,
            radiologist,
            req.master_id,
            care.READING_ASSIGNMENT,
            recorded_by=radiologist,
            valid_from=now,
            valid_to=now + FOLLOW_UP,
            context=f"reading-request:{req.id} reader",
        )
        req.claimed_at = now
    req.claim_holder, req.claim_expires_at = radiologist, now + timedelta(minutes=minutes)
    if req.state == REQUESTED:
        req.state = CLAIMED
    s.flush()
    log.info("event=telerad_claimed request=%d renewed=%s", req.id, renewed)
    return not renewed


def release(s: Session, req: ReadingRequest, radiologist: str, now: datetime) -> None:
    """Give the claim back (409 unless ``radiologist`` holds it now); the request waits in the worklist again."""
    if not req.claim_in_force(now) or req.claim_holder != radiologist:
        raise TeleradError(409, f"you hold no claim on reading request {req.id}")
    req.claim_holder, req.claim_expires_at = "", None
    if req.state == CLAIMED:
        req.state = REQUESTED
    s.flush()
    log.info("event=telerad_released request=%d", req.id)


def check_holder(req: ReadingRequest, radiologist: str, now: datetime) -> None:
    """Refuse a report by anyone but the holder of a claim in force: 409 without a claim, 403 for another's."""
    if not req.claim_in_force(now):
        raise TeleradError(409, "claim the request before reporting on it (no claim in force)")
    if req.claim_holder != radiologist:
        raise TeleradError(403, f"{req.claim_holder} holds the claim; only they may report")


def link_arrived_study(
    s: Session, issuer: str, patient_id: str, accession: str, study_uid: str, now: datetime
) -> int:
    """Link a study just stored to the open requests of its patient that wait for it by accession number; returns
    how many were linked (a request already linked is left alone)."""
    if not accession or not study_uid:
        return 0
    stmt = select(ReadingRequest).where(
        ReadingRequest.issuer == issuer,
        ReadingRequest.patient_id == patient_id,
        ReadingRequest.accession_number == accession,
        ReadingRequest.study_uid == "",
        ReadingRequest.state.not_in((FINAL, CANCELLED)),
    )
    n = 0
    for req in s.execute(stmt).scalars():
        req.study_uid, req.study_linked_at = study_uid, now
        n += 1
        log.info("event=telerad_study_linked request=%d", req.id)
    return n


_REQUESTS = ReadingRequest.__table__
# Built once: the listener runs for every stored instance (a Core statement from the compiled cache costs a
# tenth of an ORM session's query).
_WAITING_REQUEST = (
    select(_REQUESTS.c.id)
    .where(
        _REQUESTS.c.accession_number == bindparam("accession"),
        _REQUESTS.c.study_uid == "",
        _REQUESTS.c.issuer == bindparam("issuer"),
    )
    .limit(1)
)


#: A study's instances look for waiting requests once a second, not each (see stored.RecentStudies).
_LOOKED_AT = stored.RecentStudies()


def on_study_stored(db: Database, stored: StoredObject) -> None:
    """The archive's stored-object listener: link a study that arrives to the requests waiting for its accession.

    A study looks once a second while it arrives (one indexed read), not for each instance; linking happens
    at most once per request."""
    parsed = stored.parsed
    if not parsed.accession_number or not _LOOKED_AT.due(parsed.study_uid):
        return
    with db.engine.connect() as c:
        waiting = c.execute(
            _WAITING_REQUEST, {"accession": parsed.accession_number, "issuer": parsed.issuer}
        ).first()
    if waiting is None:
        return
    with db.write() as s:
        link_arrived_study(
            s, parsed.issuer, parsed.patient_id, parsed.accession_number, parsed.study_uid, utcnow()
        )


def install() -> None:
    """Link arriving studies to the requests that wait for their accession number (any process that stores)."""
    stored.on_stored("telerad-expected-study", on_study_stored)
