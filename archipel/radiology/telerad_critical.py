"""Critical results of teleradiology: a closed loop between the reader and the requester.

A report flagged critical raises a :class:`CriticalResult` (one per request while one is pending). The requester
is told at once: in the platform's inbox, asking for an acknowledgement, when they have an account; by e-mail or
SMS through the outbox otherwise (and as well, when an address is known). The result stays ``pending`` until it is
acknowledged, with who and when: by the requester (or a professional of the requesting site) through the API or
the inbox, or by the reader recording the requester's read-back by telephone. While pending, the SLA sweep sends
it again every :data:`RESEND_AFTER` and escalates it once after :data:`ESCALATE_AFTER`.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from archipel.platform import inbox, notify
from archipel.platform.authn import Principal, find_user
from archipel.radiology.telerad_models import (
    ACKNOWLEDGED,
    PENDING,
    PURPOSE,
    CriticalResult,
    ReadingReport,
    ReadingRequest,
    TeleradError,
)

log = logging.getLogger("archipel.telerad")

#: A pending critical result is sent again this long after the last sending.
RESEND_AFTER = timedelta(minutes=15)
#: And escalated (once) this long after it was raised.
ESCALATE_AFTER = timedelta(minutes=30)
KIND = "critical-result"


def link_of(req: ReadingRequest) -> str:
    """The page where the requester sees the request and acknowledges its critical result."""
    return f"/app/telerad-worklist.html?request={req.id}"


def _account(s: Session, username: str) -> str:
    user = find_user(s, username) if username else None
    return user.username if user is not None and user.active else ""


def _send(s: Session, req: ReadingRequest, c: CriticalResult, *, again: bool) -> None:
    prefix = "REMINDER: " if again else ""
    title = f"{prefix}Critical result, reading request #{req.id} ({req.requesting_site})"[:255]
    body = (
        f"A critical finding was reported for reading request #{req.id} (accession {req.accession_number or '-'}):"
        f"\n{c.finding}\nPlease acknowledge it: {link_of(req)} (or call the reading radiologist back)."
    )
    if c.recipient_user:
        n = inbox.notify_user(
            s,
            c.recipient_user,
            kind=KIND,
            title=title,
            body=body,
            link=link_of(req),
            requires_ack=True,
            master=req.master_id,
        )
        c.notification_id = n.id
    # Outside the platform, the message names no patient: the link and the accession say where to look.
    if c.recipient_email:
        notify.enqueue(s, "email", c.recipient_email, title, body, PURPOSE)
    if c.recipient_phone:
        notify.enqueue(s, "sms", c.recipient_phone, title, f"{title}. Acknowledge: {link_of(req)}", PURPOSE)


def raise_critical(
    s: Session, req: ReadingRequest, report: ReadingReport, finding: str, by: str, now: datetime
) -> CriticalResult | None:
    """Raise a critical result for ``report`` and tell the requester; ``None`` when one is pending already for
    this request (it is not raised twice). 422 when the requester can be reached neither in the platform nor
    by e-mail or telephone."""
    pending = s.execute(
        select(CriticalResult).where(CriticalResult.request_id == req.id, CriticalResult.state == PENDING)
    ).scalar()
    if pending is not None:
        return None
    user = _account(s, req.physician_user)
    if not (user or req.physician_email or req.physician_phone):
        raise TeleradError(
            422, "the requester has no account, e-mail or telephone: a critical result cannot reach them"
        )
    c = CriticalResult(
        request_id=req.id,
        report_id=report.id,
        finding=(finding.strip() or "critical finding: see the report")[:4000],
        recipient_user=user,
        recipient_email=req.physician_email,
        recipient_phone=req.physician_phone,
        state=PENDING,
        raised_by=by,
        raised_at=now,
        sends=1,
        last_sent_at=now,
    )
    s.add(c)
    s.flush()
    _send(s, req, c, again=False)
    s.flush()
    log.info("event=telerad_critical_raised request=%d critical=%d in_app=%s", req.id, c.id, bool(user))
    return c


def get(s: Session, critical_id: int) -> CriticalResult:
    """The critical result, or 404."""
    c = s.get(CriticalResult, critical_id)
    if c is None:
        raise TeleradError(404, f"no critical result {critical_id}")
    return c


def acknowledge(
    s: Session,
    c: CriticalResult,
    req: ReadingRequest,
    principal: Principal,
    now: datetime,
    *,
    read_back: str = "",
) -> bool:
    """Close the loop; ``False`` when it was closed before (the first acknowledgement stays).

    The requester, or a professional of the requesting site, acknowledges for themselves. The radiologist who
    raised it may record the requester's read-back by telephone (``read_back``: who acknowledged). Anyone else
    gets 403."""
    if c.state == ACKNOWLEDGED:
        return False
    if read_back:
        if principal.subject != c.raised_by:
            raise TeleradError(403, "only the radiologist who raised the critical result records a read-back")
        who = f"{read_back.strip()[:80]} (read back by telephone to {principal.subject})"
    else:
        is_requester = bool(c.recipient_user) and principal.subject == c.recipient_user
        of_site = principal.kind == "user" and principal.site == req.requesting_site and principal.site != ""
        if not (is_requester or of_site):
            raise TeleradError(
                403, "only the requester or a professional of the requesting site acknowledges"
            )
        who = principal.subject
    c.state, c.acknowledged_at, c.acknowledged_by = ACKNOWLEDGED, now, who[:128]
    s.flush()
    log.info("event=telerad_critical_acknowledged critical=%d", c.id)
    return True


def follow_up(s: Session, now: datetime) -> tuple[int, int, int]:
    """The sweep of pending critical results: close those acknowledged in the inbox, send again those not
    acknowledged for :data:`RESEND_AFTER`, escalate once those pending for :data:`ESCALATE_AFTER` (to the
    radiologist who raised it, in the inbox). Returns (closed, re-sent, escalated)."""
    closed = resent = escalated = 0
    rows = s.execute(select(CriticalResult).where(CriticalResult.state == PENDING)).scalars().all()
    for c in rows:
        if c.notification_id is not None:
            n = s.get(inbox.Notification, c.notification_id)
            if n is not None and n.acknowledged_at is not None:
                c.state, c.acknowledged_at = ACKNOWLEDGED, n.acknowledged_at
                c.acknowledged_by = n.acknowledged_by or n.recipient
                closed += 1
                continue
        req = s.get(ReadingRequest, c.request_id)
        if req is None:
            continue
        if now - c.last_sent_at >= RESEND_AFTER:
            _send(s, req, c, again=True)
            c.sends += 1
            c.last_sent_at = now
            resent += 1
        if c.escalated_at is None and now - c.raised_at >= ESCALATE_AFTER:
            c.escalated_at = now
            inbox.notify_user(
                s,
                c.raised_by,
                kind=KIND,
                title=f"Critical result of request #{req.id} still not acknowledged: call the requester",
                body=f"{req.physician_name} ({req.requesting_site}, {req.physician_phone or 'no telephone'}) has "
                f"not acknowledged the critical result raised at {c.raised_at.isoformat(timespec='minutes')}.",
                link=link_of(req),
                requires_ack=True,
                master=req.master_id,
            )
            escalated += 1
    s.flush()
    return closed, resent, escalated
