"""The teleradiology worklist and a request as the API and the web page show them: ordered by due time, each with
its SLA (due time, seconds left, overdue) and the link that opens its study in the radiology viewer.

Who sees which requests is decided in the SQL: radiologists of the reading pool see every request; any other
professional sees the requests of their own site and those they asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from archipel.platform import access
from archipel.platform.authn import Principal
from archipel.radiology.telerad_models import (
    CANCELLED,
    CLAIMED,
    FINAL,
    PRELIMINARY,
    REQUESTED,
    STATES,
    CriticalResult,
    ReadingReport,
    ReadingRequest,
    TeleradError,
)

#: Where the radiology viewer opens a study (the portal's Cornerstone3D page).
VIEWER_PAGE = "/app/study.html?study="


@dataclass(frozen=True)
class WorklistFilter:
    """What the worklist keeps: priority, subspecialty, requesting site, states (default: the open ones), and
    ``mine`` for the caller's own claims."""

    priority: str = ""
    subspecialty: str = ""
    site: str = ""
    states: tuple[str, ...] = (REQUESTED, CLAIMED, PRELIMINARY)
    mine: bool = False
    limit: int = 200


def parse_states(raw: str) -> tuple[str, ...]:
    """``state=a,b`` as a tuple of states (``open``: the waiting ones, ``all``: every state); 422 otherwise."""
    if not raw or raw == "open":
        return (REQUESTED, CLAIMED, PRELIMINARY)
    if raw == "all":
        return STATES
    states = tuple(p.strip() for p in raw.split(",") if p.strip())
    unknown = [p for p in states if p not in STATES]
    if unknown:
        raise TeleradError(422, f"unknown state {unknown[0]!r}; choose among: open, all, {', '.join(STATES)}")
    return states


def visible_to(principal: Principal) -> ColumnElement[bool] | None:
    """The SQL condition of the requests ``principal`` sees (``None``: all of them, for the reading pool)."""
    if principal.kind == "user" and principal.role in access.TELERAD_READERS:
        return None
    own = ReadingRequest.physician_user == principal.subject
    site = principal.site if principal.site not in ("", "*") else ""
    if site:
        return or_(own, ReadingRequest.requesting_site == site, ReadingRequest.issuer == site)
    return own


def worklist(s: Session, principal: Principal, flt: WorklistFilter, now: datetime) -> list[dict[str, Any]]:
    """The requests ``principal`` sees that pass ``flt``, the soonest due first."""
    stmt = select(ReadingRequest)
    condition = visible_to(principal)
    if condition is not None:
        stmt = stmt.where(condition)
    if flt.priority:
        stmt = stmt.where(ReadingRequest.priority == flt.priority)
    if flt.subspecialty:
        stmt = stmt.where(ReadingRequest.subspecialty == flt.subspecialty.lower())
    if flt.site:
        stmt = stmt.where(ReadingRequest.requesting_site == flt.site)
    if flt.mine:
        stmt = stmt.where(ReadingRequest.claim_holder == principal.subject)
    stmt = stmt.where(ReadingRequest.state.in_(flt.states))
    rows = s.execute(stmt.order_by(ReadingRequest.due_at, ReadingRequest.id).limit(flt.limit)).scalars()
    return [summary(r, now) for r in rows]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def summary(req: ReadingRequest, now: datetime) -> dict[str, Any]:
    """One worklist line: who asks, for what, how urgent, and where the request stands."""
    remaining = (req.due_at - now).total_seconds()
    in_force = req.claim_in_force(now)
    return {
        "request_id": req.id,
        "patient": req.patient,
        "master_id": req.master_id,
        "study_uid": req.study_uid,
        "accession_number": req.accession_number,
        "awaiting_images": not req.study_uid,
        "viewer_url": VIEWER_PAGE + quote(req.study_uid) if req.study_uid else "",
        "requesting_site": req.requesting_site,
        "physician": {
            "name": req.physician_name,
            "email": req.physician_email,
            "phone": req.physician_phone,
            "username": req.physician_user,
        },
        "clinical_info": req.clinical_info,
        "justification": req.justification,
        "subspecialty": req.subspecialty,
        "priority": req.priority,
        "placer_order": req.placer_order,
        "state": req.shown_state(now),
        "requested_at": _iso(req.requested_at),
        "due_at": _iso(req.due_at),
        "remaining_seconds": int(remaining) if req.state not in (FINAL, CANCELLED) else None,
        "overdue": req.state not in (FINAL, CANCELLED) and remaining < 0,
        "escalated_at": _iso(req.escalated_at),
        "claim": {
            "holder": req.claim_holder if in_force else "",
            "expires_at": _iso(req.claim_expires_at) if in_force else None,
        },
        "claimed_at": _iso(req.claimed_at),
        "preliminary_at": _iso(req.preliminary_at),
        "final_at": _iso(req.final_at),
        "final_by": req.final_by,
        "cancelled_at": _iso(req.cancelled_at),
        "cancel_reason": req.cancel_reason,
    }


def detail(s: Session, req: ReadingRequest, now: datetime) -> dict[str, Any]:
    """The request with its reports and critical results."""
    reports = s.execute(
        select(ReadingReport).where(ReadingReport.request_id == req.id).order_by(ReadingReport.id)
    ).scalars()
    criticals = s.execute(
        select(CriticalResult).where(CriticalResult.request_id == req.id).order_by(CriticalResult.id)
    ).scalars()
    return {
        **summary(req, now),
        "reports": [report_view(r) for r in reports],
        "critical_results": [critical_view(c) for c in criticals],
    }


def report_view(r: ReadingReport) -> dict[str, Any]:
    """A report as the API shows it."""
    return {
        "report_id": r.id,
        "kind": r.kind,
        "text": r.text,
        "critical": r.critical,
        "critical_finding": r.critical_text,
        "author": r.author,
        "created_at": _iso(r.created_at),
        "signed_at": _iso(r.signed_at),
        "document_id": r.document_id,
    }


def critical_view(c: CriticalResult) -> dict[str, Any]:
    """A critical result and where its loop stands."""
    return {
        "critical_id": c.id,
        "report_id": c.report_id,
        "finding": c.finding,
        "recipient": c.recipient_user or c.recipient_email or c.recipient_phone,
        "state": c.state,
        "raised_by": c.raised_by,
        "raised_at": _iso(c.raised_at),
        "sends": c.sends,
        "last_sent_at": _iso(c.last_sent_at),
        "escalated_at": _iso(c.escalated_at),
        "acknowledged_at": _iso(c.acknowledged_at),
        "acknowledged_by": c.acknowledged_by,
    }
