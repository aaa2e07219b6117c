"""The teleradiology SLA sweep: warn before a reading request misses its due time, once per request, and follow
the critical results that wait for an acknowledgement (:func:`telerad_critical.follow_up`).

A request is escalated when what is left before its due time falls under :data:`WARN_BEFORE` of its priority
and it has no final report. The claim holder is told (in the inbox, and by e-mail when their account has an
address); an unclaimed request goes to every active radiologist. ``escalated_at`` is set by a conditional update,
so that two sweeps running at once (beat fired on two workers) escalate a request only once.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from celery import shared_task
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from archipel.platform import inbox, jobs, notify, schedule
from archipel.platform.authn import User
from archipel.platform.db import Database, utcnow
from archipel.radiology import telerad_critical
from archipel.radiology.telerad_models import (
    CLAIMED,
    EMERGENCY,
    PRELIMINARY,
    PURPOSE,
    REQUESTED,
    SCHEDULED,
    STAT,
    URGENT,
    ReadingRequest,
)

log = logging.getLogger("archipel.telerad")

#: How long before its due time a request is escalated, by priority.
WARN_BEFORE: dict[str, timedelta] = {
    STAT: timedelta(minutes=10),
    URGENT: timedelta(minutes=15),
    SCHEDULED: timedelta(minutes=15),
    EMERGENCY: timedelta(hours=2),
}
SLA_TASK = "radiology.telerad.sla"
#: Seconds between two sweeps.
SWEEP_SECONDS = 60.0
KIND = "sla"


def _recipients(s: Session, req: ReadingRequest, now: datetime) -> list[User]:
    stmt = select(User).where(User.active.is_(True))
    if req.claim_in_force(now):
        stmt = stmt.where(User.username == req.claim_holder)
    else:
        stmt = stmt.where(User.role == "radiologist")
    return list(s.execute(stmt.order_by(User.username)).scalars())


def _escalate(s: Session, req: ReadingRequest, now: datetime) -> bool:
    claimed = s.execute(
        update(ReadingRequest)
        .where(ReadingRequest.id == req.id, ReadingRequest.escalated_at.is_(None))
        .values(escalated_at=now)
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return False
    minutes = max(0, int((req.due_at - now).total_seconds() // 60))
    title = f"Reading request #{req.id} ({req.priority.upper()}) is due in {minutes} min"
    body = (
        f"{req.priority.upper()} reading request #{req.id} from {req.requesting_site} is due at "
        f"{req.due_at.isoformat(timespec='minutes')} and has no final report yet."
    )
    link = f"/app/telerad-worklist.html?request={req.id}"
    for user in _recipients(s, req, now):
        inbox.notify_user(
            s, user.username, kind=KIND, title=title, body=body, link=link, master=req.master_id
        )
        if user.email:
            notify.enqueue(s, "email", user.email, title, f"{body}\nOpen the worklist: {link}", PURPOSE)
    log.info("event=telerad_escalated request=%d priority=%s minutes_left=%d", req.id, req.priority, minutes)
    return True


def sweep(db: Database, now: datetime | None = None) -> dict[str, int]:
    """Escalate the requests about to miss their due time (each once) and follow the pending critical
    results; returns what was done. Cheap when there is nothing to do."""
    when = now or utcnow()
    horizon = when + max(WARN_BEFORE.values())
    escalated = 0
    with db.write() as s:
        candidates = s.execute(
            select(ReadingRequest).where(
                ReadingRequest.escalated_at.is_(None),
                ReadingRequest.state.in_((REQUESTED, CLAIMED, PRELIMINARY)),
                ReadingRequest.due_at <= horizon,
            )
        ).scalars()
        for req in list(candidates):
            if req.due_at - when <= WARN_BEFORE[req.priority] and _escalate(s, req, when):
                escalated += 1
        closed, resent, critical_escalated = telerad_critical.follow_up(s, when)
    return {
        "escalated": escalated,
        "critical_closed": closed,
        "critical_resent": resent,
        "critical_escalated": critical_escalated,
    }


@shared_task(name=SLA_TASK, **jobs.RETRY_TRANSIENT)
def sla_sweep() -> dict[str, int]:
    """The periodic SLA sweep (idempotent: an escalated request is not escalated again)."""
    from archipel.platform import notify_tasks
    from archipel.platform.runtime import get_runtime

    done = sweep(get_runtime().db)
    if any(done.values()):
        log.info("event=telerad_sla_sweep %s", " ".join(f"{k}={v}" for k, v in done.items()))
        notify_tasks.deliver_soon()
    return done


schedule.every(SWEEP_SECONDS, SLA_TASK, queue="notify")
