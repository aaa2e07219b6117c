"""The periodic results-letter deadline watch: warn the programme's coordinators when a woman's result turns at
risk of missing its deadline, and again when it is late, once for each (:class:`DeadlineWarning`).

The coordinators (the programme's ``coordinator`` qualification, active accounts) are told in the professional
inbox, and by e-mail when their account has an address; the message names the episode, not the woman, and links
to the watch (:mod:`archipel.mammo.deadlines_api`). A warning row is inserted in a savepoint under its unique
(episode, state) key, so that two sweeps at once (beat fired on two workers) warn only once.
"""

from __future__ import annotations

import logging
from datetime import datetime

from celery import shared_task
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from archipel.mammo import deadlines
from archipel.mammo.models import COORDINATOR, DeadlineWarning, Programme, ReaderQualification
from archipel.platform import audit, inbox, jobs, notify, schedule
from archipel.platform.authn import Principal, User
from archipel.platform.db import Database, utcnow

log = logging.getLogger("archipel.mammo")

WARN_TASK = "mammo.warn_deadlines"
#: Seconds between two sweeps (the due dates are days: hourly is more than enough).
SWEEP_SECONDS = 3600.0
KIND = "screening-deadline"
#: The system actor the warnings are recorded under.
SYSTEM = Principal(subject="screening-deadline-watch", role="system")


def _coordinators(s: Session, prog: Programme) -> list[User]:
    names = select(ReaderQualification.reader).where(
        ReaderQualification.programme_id == prog.id, ReaderQualification.qualification == COORDINATOR
    )
    stmt = select(User).where(User.username.in_(names), User.active.is_(True)).order_by(User.username)
    return list(s.execute(stmt).scalars())


def _warn(s: Session, prog: Programme, due: deadlines.Due, people: list[User], now: datetime) -> bool:
    ep = due.episode
    try:
        with s.begin_nested():
            s.add(DeadlineWarning(episode_id=ep.id, state=due.state, warned_at=now, recipients=len(people)))
    except IntegrityError:
        return False  # warned already, by this sweep's predecessor or a concurrent one
    if due.state == deadlines.LATE:
        title = f"Screening episode #{ep.id} ({prog.code}): the result is {-due.days_left} day(s) late"
    else:
        title = f"Screening episode #{ep.id} ({prog.code}): the result is due in {due.days_left} day(s)"
    body = (
        f"The result of screening episode #{ep.id} (exam {ep.screen_date.isoformat()}, site {ep.site}) was due "
        f"by {due.due.isoformat()} and is not sent: {deadlines.STAGES.get(ep.status, ep.status)}."
    )
    link = f"/api/mammo/programmes/{prog.code}/deadlines?state={due.state}"
    for user in people:
        inbox.notify_user(s, user.username, kind=KIND, title=title, body=body, link=link, master=ep.master_id)
        if user.email:
            notify.enqueue(s, "email", user.email, title, f"{body}\nThe watch: {link}", "operations")
    return True


def sweep(db: Database, now: datetime | None = None) -> dict[str, int]:
    """Warn, once per episode and state, of every result at risk or late in every programme; returns the
    counts. Cheap when nothing changed: it reads the unsent results only."""
    when = now or utcnow()
    counts = {deadlines.AT_RISK: 0, deadlines.LATE: 0}
    warned: list[tuple[str, deadlines.Due]] = []
    with db.write() as s:
        for prog in list(s.execute(select(Programme).order_by(Programme.id)).scalars()):
            people = _coordinators(s, prog)
            for due in deadlines.watch(s, prog, when.date()):
                if due.state != deadlines.FINE and _warn(s, prog, due, people, when):
                    counts[due.state] += 1
                    warned.append((prog.code, due))
    for code, due in warned:
        ep = due.episode
        audit.record(
            db,
            SYSTEM,
            audit.PATIENT_RECORD,
            "notify:screening-programme",
            patient=f"{ep.issuer}/{ep.patient_id}",
            master=ep.master_id,
            obj=f"results-letter deadline of screening episode {ep.id} ({code}): {due.state}",
            source="mammo.deadline-watch",
            purpose=audit.OPERATIONS,
            detail="warned the programme's coordinators",
        )
    return counts


@shared_task(name=WARN_TASK, **jobs.RETRY_TRANSIENT)
def warn_deadlines() -> dict[str, int]:
    """The periodic deadline watch (idempotent: an episode is warned of once per state)."""
    from archipel.platform import notify_tasks
    from archipel.platform.runtime import get_runtime

    done = sweep(get_runtime().db)
    if any(done.values()):
        log.info("event=screening_deadline_warnings at_risk=%d late=%d", done["at_risk"], done["late"])
        notify_tasks.deliver_soon()
    return done


schedule.every(SWEEP_SECONDS, WARN_TASK, queue="notify")
