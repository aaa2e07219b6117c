"""What the frozen-section API shows: one request (with its slides, claim, steps and verdict) and the urgent
worklist of the pathologists on duty."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from archipel.platform import access
from archipel.wsi import frozen
from archipel.wsi.frozen import TARGET_MINUTES, FrozenSectionRequest, FrozenSectionSlide

#: Answered requests stay on the worklist this long after their verdict (for the team on duty to see them).
ANSWERED_SHOWN = timedelta(hours=24)


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when is not None else None


def _minutes(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds() / 60, 2)


def request_view(s: Session, req: FrozenSectionRequest, now: datetime) -> dict[str, Any]:
    """A request as the API shows it."""
    links = {
        link.slide_id: link
        for link in s.execute(
            select(FrozenSectionSlide).where(FrozenSectionSlide.request_id == req.id)
        ).scalars()
    }
    slides = [
        {
            "slide_id": slide.id,
            "status": slide.status,
            "attached_at": _iso(links[slide.id].attached_at),
            "how": links[slide.id].how,
            "tiles": f"/tiles/{slide.id}.dzi",
        }
        for slide in frozen.slides_of(s, req.id)
    ]
    end = req.verdict_at or now
    elapsed = _minutes(req.requested_at, end) or 0.0
    verdict = None
    if req.verdict_at is not None:
        verdict = {
            "diagnosis": req.diagnosis,
            "margins": req.margins,
            "text": req.verdict_text,
            "pathologist": req.verdict_by,
            "signed_at": _iso(req.verdict_at),
            "study_uid": req.study_uid,
            "series_uid": req.sr_series_uid,
            "sop_instance_uid": req.sr_sop_uid,
            "signature": req.signature,
            "key_id": req.signing_key_id,
            "verify_url": f"/api/frozen-sections/{req.id}/verdict/verify",
        }
    return {
        "request_id": req.id,
        "state": req.state(now),
        "issuer": req.issuer,
        "patient_id": req.patient_id,
        "accession": req.accession,
        "specimen": req.specimen,
        "specimen_site": req.specimen_site,
        "clinical_question": req.clinical_question,
        "or_phone": req.or_phone,
        "requested_by": req.requested_by,
        "requesting_site": req.requesting_site,
        "slides": slides,
        "claim": (
            {"holder": req.claim_holder, "expires_at": _iso(req.claim_expires_at)}
            if req.claim_in_force(now)
            else None
        ),
        "steps": {
            "requested_at": _iso(req.requested_at),
            "first_slide_at": _iso(req.first_slide_at),
            "first_view_at": _iso(req.first_view_at),
            "verdict_at": _iso(req.verdict_at),
            "seen_at": _iso(req.seen_at),
        },
        "elapsed_minutes": elapsed,
        "target_minutes": TARGET_MINUTES,
        "overdue": elapsed > TARGET_MINUTES,
        "verdict": verdict,
        "amendments": [am.as_dict() for am in frozen.amendments_of(s, req.id)],
        "events_url": f"/api/frozen-sections/{req.id}/events",
    }


def worklist(s: Session, scope: access.ReadScope, facts: access.Facts, now: datetime) -> dict[str, Any]:
    """Open requests oldest first, then those answered in the last day newest first; only what ``scope`` lets
    the reader see."""
    rows = s.execute(
        select(FrozenSectionRequest).where(
            or_(
                FrozenSectionRequest.verdict_at.is_(None),
                FrozenSectionRequest.verdict_at > now - ANSWERED_SHOWN,
            )
        )
    ).scalars()
    visible = [
        r
        for r in rows
        if scope.grant_for(r.issuer, r.master_id, frozenset(), r.master_id in facts.refused) is not None
    ]
    open_ = sorted((r for r in visible if r.is_open), key=lambda r: (r.requested_at, r.id))
    answered = sorted((r for r in visible if not r.is_open), key=lambda r: r.verdict_at or now, reverse=True)
    return {
        "now": now.isoformat(),
        "target_minutes": TARGET_MINUTES,
        "requests": [request_view(s, r, now) for r in (*open_, *answered)],
    }
