"""Frozen sections (extemporaneous examinations): the request, its slides, its claim, its events.

A surgeon (or a technician of their site) asks for a frozen section; its slides attach as they are scanned; an
on-duty pathologist claims it (an exclusive lock that expires), views the slides, signs a verdict
(:mod:`archipel.wsi.frozen_verdict`), and the surgeon marks it seen. Each step is a timestamp on the request
(the turnaround report reads them) and an append-only :class:`FrozenSectionEvent` (the event streams read them,
so that any API process can serve a stream).

Access goes through the policy like any patient data (kind ``frozen-section``). The requester gets a care
relationship at once; the on-duty pathologists get one for the length of their shift (ended when the verdict is
signed), the claim holder one that lasts: so the existing policy lets them read the slides, and nobody else.

Functions here run in the caller's transaction and raise :class:`FrozenSectionError` with the HTTP status and
the reason of an impossible step, before changing anything.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from archipel.platform import care, notify
from archipel.platform.authn import find_user
from archipel.platform.db import utcnow
from archipel.wsi import duty
from archipel.wsi.frozen_models import (  # noqa: F401  (the workflow's vocabulary, re-exported)
    ANSWERED,
    CLAIMED,
    EV_AMENDED,
    EV_CLAIMED,
    EV_RELEASED,
    EV_REQUESTED,
    EV_SEEN,
    EV_SLIDE,
    EV_VERDICT,
    EV_VIEWED,
    FOLLOW_UP,
    PURPOSE,
    REQUESTED,
    SCANNED,
    SEEN,
    TARGET_MINUTES,
    FrozenSectionAmendment,
    FrozenSectionError,
    FrozenSectionEvent,
    FrozenSectionRequest,
    FrozenSectionSlide,
    event,
)
from archipel.wsi.models import Slide

log = logging.getLogger("archipel.frozen")


def get(s: Session, request_id: int) -> FrozenSectionRequest:
    """The request, or :class:`FrozenSectionError` 404."""
    req = s.get(FrozenSectionRequest, request_id)
    if req is None:
        raise FrozenSectionError(404, f"no frozen-section request {request_id}")
    return req


def get_for_update(s: Session, request_id: int) -> FrozenSectionRequest:
    """The request read with a row lock (``SELECT ... FOR UPDATE``) held until the transaction ends, or 404: how
    every step that changes it reads it, so that two claims (or a claim and a verdict) at once run one after the
    other on PostgreSQL and the second sees the first."""
    req = s.get(FrozenSectionRequest, request_id, with_for_update=True, populate_existing=True)
    if req is None:
        raise FrozenSectionError(404, f"no frozen-section request {request_id}")
    return req


def slides_of(s: Session, request_id: int) -> list[Slide]:
    """The request's slides, in the order they were attached."""
    stmt = (
        select(Slide)
        .join(FrozenSectionSlide, FrozenSectionSlide.slide_id == Slide.id)
        .where(FrozenSectionSlide.request_id == request_id)
        .order_by(FrozenSectionSlide.id)
    )
    return list(s.execute(stmt).scalars())


def _context(req: FrozenSectionRequest, why: str) -> str:
    return f"frozen-section:{req.id} {why}"


def _grant_shift(s: Session, req: FrozenSectionRequest, shift: duty.DutyShift, now: datetime) -> None:
    care.record(
        s,
        shift.pathologist,
        req.master_id,
        care.FROZEN_SECTION_REQUEST,
        recorded_by="frozen-section",
        valid_from=max(shift.start, now),
        valid_to=shift.end,
        context=_context(req, f"duty:{shift.id}"),
    )


def email_of(s: Session, username: str) -> str:
    """Where an active account's alerts go (empty when it has no address)."""
    user = find_user(s, username)
    return user.email if user is not None and user.active else ""


def create(
    s: Session,
    *,
    issuer: str,
    patient_id: str,
    master_id: int,
    accession: str,
    specimen: str,
    specimen_site: str,
    clinical_question: str,
    or_phone: str,
    requested_by: str,
    requesting_site: str,
    now: datetime,
) -> FrozenSectionRequest:
    """Record a request, the requester's care relationship, the on-duty pathologists' (until their shift ends),
    and notify each on-duty pathologist who has an e-mail address."""
    req = FrozenSectionRequest(
        issuer=issuer,
        patient_id=patient_id,
        master_id=master_id,
        accession=accession,
        specimen=specimen,
        specimen_site=specimen_site,
        clinical_question=clinical_question,
        or_phone=or_phone,
        requested_by=requested_by,
        requesting_site=requesting_site,
        requested_at=now,
        claim_holder="",
        first_viewer="",
    )
    s.add(req)
    s.flush()
    care.record(
        s,
        requested_by,
        master_id,
        care.FROZEN_SECTION_REQUEST,
        recorded_by=requested_by,
        valid_from=now,
        valid_to=now + FOLLOW_UP,
        context=_context(req, "requester"),
    )
    told: set[str] = set()
    for shift in duty.not_over(s, now):
        _grant_shift(s, req, shift, now)
        if shift.start <= now and shift.pathologist not in told:
            told.add(shift.pathologist)
            address = email_of(s, shift.pathologist)
            if address:
                notify.enqueue(
                    s,
                    "email",
                    address,
                    f"URGENT frozen section #{req.id} from {requesting_site}",
                    f"A frozen section waits for you: specimen {specimen} ({specimen_site}).\n"
                    f"Open the urgent worklist: /api/frozen-sections/worklist (request {req.id}).\n"
                    f"Operating room: {or_phone}. The operation waits: target {TARGET_MINUTES} minutes.",
                    PURPOSE,
                )
    event(s, req, EV_REQUESTED, now, requesting_site=requesting_site, specimen_site=specimen_site)
    log.info("event=frozen_requested request=%d site=%s on_duty=%d", req.id, requesting_site, len(told))
    return req


def grant_new_shift(s: Session, shift: duty.DutyShift, now: datetime) -> int:
    """Give a new shift's pathologist access to every open request; returns how many."""
    open_requests = s.execute(select(FrozenSectionRequest).where(FrozenSectionRequest.verdict_at.is_(None)))
    n = 0
    for req in open_requests.scalars():
        _grant_shift(s, req, shift, now)
        n += 1
    return n


def end_grants(
    s: Session, *, request_id: int | None = None, shift_id: int | None = None, now: datetime
) -> int:
    """End the on-duty care relationships of one request (its verdict is signed) or of one shift (cancelled)."""
    stmt = select(care.CareRelationship).where(care.CareRelationship.kind == care.FROZEN_SECTION_REQUEST)
    if request_id is not None:
        stmt = stmt.where(care.CareRelationship.context.like(f"frozen-section:{request_id} duty:%"))
    if shift_id is not None:
        stmt = stmt.where(care.CareRelationship.context.like(f"frozen-section:% duty:{shift_id}"))
    ended = 0
    for row in s.execute(stmt).scalars():
        if row.valid_to is None or row.valid_to > now:
            care.end(s, row.id, ended_by="frozen-section", at=now)
            ended += 1
    return ended


def attach(s: Session, req: FrozenSectionRequest, slide: Slide, *, how: str, by: str, now: datetime) -> bool:
    """Attach ``slide``; ``False`` when it already was. 422 for another patient's slide, 409 when the verdict is
    signed or the slide answers another request."""
    if (slide.issuer, slide.patient_id) != (req.issuer, req.patient_id):
        raise FrozenSectionError(
            422, f"slide {slide.id} is of another patient than frozen-section request {req.id}"
        )
    link = s.execute(select(FrozenSectionSlide).where(FrozenSectionSlide.slide_id == slide.id)).scalar()
    if link is not None:
        if link.request_id == req.id:
            return False
        raise FrozenSectionError(
            409, f"slide {slide.id} is attached to frozen-section request {link.request_id}"
        )
    if not req.is_open:
        raise FrozenSectionError(
            409, f"frozen-section request {req.id} is answered; a slide can no longer join it"
        )
    s.add(FrozenSectionSlide(request_id=req.id, slide_id=slide.id, attached_at=now, attached_by=by, how=how))
    if req.first_slide_at is None:
        req.first_slide_at = now
    s.flush()
    event(s, req, EV_SLIDE, now, slide_id=slide.id, how=how)
    log.info("event=frozen_slide_attached request=%d slide=%s how=%s", req.id, slide.id, how)
    return True


def open_request_for(s: Session, issuer: str, patient_id: str, accession: str) -> FrozenSectionRequest | None:
    """The oldest open request of this patient and accession (a slide of it joins that request)."""
    if not accession:
        return None
    stmt = select(FrozenSectionRequest).where(
        FrozenSectionRequest.issuer == issuer,
        FrozenSectionRequest.patient_id == patient_id,
        FrozenSectionRequest.accession == accession,
        FrozenSectionRequest.verdict_at.is_(None),
    )
    return s.execute(stmt.order_by(FrozenSectionRequest.id).limit(1)).scalar()


def attach_registered(s: Session, slide: Slide, frozen_request: int | None, now: datetime) -> None:
    """At registration: attach a slide to the request its metadata names, else to the open request of its
    patient and accession. A request that cannot take it (answered since the upload began) is logged, and the
    slide stays registered on its own."""
    req = (
        s.get(FrozenSectionRequest, frozen_request, with_for_update=True, populate_existing=True)
        if frozen_request is not None
        else None
    )
    how = "metadata"
    if req is None:
        req, how = open_request_for(s, slide.issuer, slide.patient_id, slide.accession), "accession"
    if req is None:
        return
    try:
        attach(s, req, slide, how=how, by=slide.created_by, now=now)
    except FrozenSectionError as exc:
        log.warning(
            "event=frozen_slide_not_attached request=%d slide=%s reason=%s", req.id, slide.id, exc.reason
        )


def check_attachable(s: Session, frozen_request: int, issuer: str, patient_id: str) -> None:
    """Refuse, before any byte is stored, an upload naming a request that does not exist, is answered, or is of
    another patient."""
    req = s.get(FrozenSectionRequest, frozen_request)
    if req is None:
        raise FrozenSectionError(422, f"frozen_request {frozen_request} does not exist")
    if (req.issuer, req.patient_id) != (issuer, patient_id):
        raise FrozenSectionError(
            422, f"frozen_request {frozen_request} is of another patient than this slide"
        )
    if not req.is_open:
        raise FrozenSectionError(409, f"frozen-section request {frozen_request} is answered already")


def claim(s: Session, req: FrozenSectionRequest, pathologist: str, *, minutes: int, now: datetime) -> bool:
    """Take (or renew) the exclusive claim for ``minutes``; ``True`` when it is a new claim. 409 when the
    verdict is signed or another pathologist holds it (the reason says who, and until when)."""
    if not req.is_open:
        raise FrozenSectionError(
            409, f"frozen-section request {req.id} is answered; there is nothing to claim"
        )
    if req.claim_in_force(now) and req.claim_holder != pathologist:
        assert req.claim_expires_at is not None
        raise FrozenSectionError(
            409, f"claimed by {req.claim_holder} until {req.claim_expires_at.isoformat(timespec='seconds')}"
        )
    renewed = req.claim_in_force(now) and req.claim_holder == pathologist
    if not renewed:
        care.record(
            s,
            pathologist,
            req.master_id,
            care.FROZEN_SECTION_REQUEST,
            recorded_by=pathologist,
            valid_from=now,
            valid_to=now + FOLLOW_UP,
            context=_context(req, "claim"),
        )
    req.claim_holder, req.claim_expires_at = pathologist, now + timedelta(minutes=minutes)
    s.flush()
    event(
        s,
        req,
        EV_CLAIMED,
        now,
        holder=pathologist,
        expires_at=req.claim_expires_at.isoformat(),
        renewed=renewed,
    )
    return not renewed


def release(s: Session, req: FrozenSectionRequest, pathologist: str, now: datetime) -> None:
    """Give the claim back; 409 unless ``pathologist`` holds it now."""
    if not req.claim_in_force(now) or req.claim_holder != pathologist:
        raise FrozenSectionError(409, f"you hold no claim on frozen-section request {req.id}")
    req.claim_holder, req.claim_expires_at = "", None
    s.flush()
    event(s, req, EV_RELEASED, now, by=pathologist)


def check_may_sign(req: FrozenSectionRequest, pathologist: str, has_slides: bool, now: datetime) -> None:
    """Refuse a verdict that cannot be signed: 409 once signed, without a claim in force or without slides,
    403 when another pathologist holds the claim."""
    if not req.is_open:
        raise FrozenSectionError(
            409, f"the verdict of frozen-section request {req.id} is signed and cannot change"
        )
    if not req.claim_in_force(now):
        raise FrozenSectionError(409, "claim the request before signing its verdict (no claim in force)")
    if req.claim_holder != pathologist:
        raise FrozenSectionError(403, f"{req.claim_holder} holds the claim; only they may sign the verdict")
    if not has_slides:
        raise FrozenSectionError(409, "no slide is attached to this request yet")


def check_may_amend(req: FrozenSectionRequest, pathologist: str) -> None:
    """Refuse an amendment before the verdict (409) or by anyone but the verdict's pathologist (403)."""
    if req.verdict_at is None:
        raise FrozenSectionError(409, "there is no signed verdict to amend; sign the verdict instead")
    if req.verdict_by != pathologist:
        raise FrozenSectionError(403, f"only {req.verdict_by}, who signed the verdict, may amend it")


def amendments_of(s: Session, request_id: int) -> list[FrozenSectionAmendment]:
    """The request's amendments, oldest first."""
    stmt = select(FrozenSectionAmendment).where(FrozenSectionAmendment.request_id == request_id)
    return list(s.execute(stmt.order_by(FrozenSectionAmendment.id)).scalars())


def mark_seen(s: Session, req: FrozenSectionRequest, surgeon: str, now: datetime) -> bool:
    """Record that the requesting surgeon read the verdict; ``False`` when it was recorded before."""
    if surgeon != req.requested_by:
        raise FrozenSectionError(403, "only the requesting surgeon records that the verdict was seen")
    if req.verdict_at is None:
        raise FrozenSectionError(409, "there is no verdict to see yet")
    if req.seen_at is not None:
        return False
    req.seen_at = now
    s.flush()
    event(s, req, EV_SEEN, now, by=surgeon)
    return True


def awaits_first_view(s: Session, slide_id: str) -> bool:
    """Whether ``slide_id`` belongs to a request that no pathologist has viewed yet (a cheap read)."""
    stmt = (
        select(FrozenSectionRequest.id)
        .join(FrozenSectionSlide, FrozenSectionSlide.request_id == FrozenSectionRequest.id)
        .where(FrozenSectionSlide.slide_id == slide_id, FrozenSectionRequest.first_view_at.is_(None))
    )
    return s.execute(stmt.limit(1)).first() is not None


def record_view(s: Session, slide_id: str, viewer: str, now: datetime | None = None) -> bool:
    """The first view of one of a request's slides by a pathologist; ``True`` when it was the first."""
    link = s.execute(select(FrozenSectionSlide).where(FrozenSectionSlide.slide_id == slide_id)).scalar()
    if link is None:
        return False
    req = s.get(FrozenSectionRequest, link.request_id, with_for_update=True, populate_existing=True)
    if req is None or req.first_view_at is not None:
        return False
    when = now or utcnow()
    req.first_view_at, req.first_viewer = when, viewer
    s.flush()
    event(s, req, EV_VIEWED, when, slide_id=slide_id, by=viewer)
    return True
