"""The results-letter deadline watch, and the episodes ready for a decision.

Every woman screened must have her result (and her GP's letter) within the programme's deadline of the exam
(``Programme.result_deadline_days``, 15 days in France). :func:`watch` lists the episodes whose result is not sent
yet with the date it is due, the days left (negative once late) and the stage each one waits at, so that a
coordinator sees before the deadline which files need chasing: a missing view, an L1 form not in, a read not
claimed, a decision not taken, letters still in the outbox. :func:`ready_for_decision` lists the episodes whose
reads are complete and that wait only for the decision, oldest exam first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from archipel.mammo.models import Episode, Programme, ReadingTask, ScreeningDecision

#: Days before the deadline from which an unsent result is "at risk", unless the caller says otherwise.
DEFAULT_WARNING_DAYS = 3
FINE, AT_RISK, LATE = "fine", "at_risk", "late"
STATES = (FINE, AT_RISK, LATE)

#: What each episode status waits for, in the coordinator's words.
STAGES = {
    "awaiting-images": "waiting for the images",
    "incomplete": "waiting for a missing view",
    "flagged": "flagged at intake: release it or ask for a retake",
    "awaiting-l1-form": "waiting for the L1 form",
    "reading": "being read",
    "ready-for-decision": "ready for the decision",
    "decided": "decided: letters not sent yet",
}


@dataclass(frozen=True)
class Due:
    """One unsent result: the episode, the date it is due, the days left on ``today`` and the state."""

    episode: Episode
    due: date
    days_left: int
    state: str
    waiting_for: list[str]

    def row(self) -> dict[str, Any]:
        """The JSON answer's line."""
        ep = self.episode
        return {
            "episode_id": ep.id,
            "external_id": ep.external_id,
            "issuer": ep.issuer,
            "patient_id": ep.patient_id,
            "site": ep.site,
            "screen_date": ep.screen_date.isoformat(),
            "status": ep.status,
            "stage": STAGES.get(ep.status, ep.status),
            "waiting_for": self.waiting_for,
            "due": self.due.isoformat(),
            "days_left": self.days_left,
            "state": self.state,
        }


def due_date(prog: Programme, ep: Episode) -> date:
    """The day by which ``ep``'s result must be sent: its exam plus the programme's deadline."""
    return ep.screen_date + timedelta(days=prog.result_deadline_days)


def state_of(days_left: int, warning_days: int) -> str:
    """``late`` past the due date, ``at_risk`` within ``warning_days`` of it (the due day included), else fine."""
    if days_left < 0:
        return LATE
    return AT_RISK if days_left <= warning_days else FINE


def deadline_of(
    prog: Programme, ep: Episode, today: date, warning_days: int, waiting_for: list[str] | None = None
) -> Due:
    """Where ``ep`` stands against its deadline on ``today``."""
    due = due_date(prog, ep)
    left = (due - today).days
    return Due(ep, due, left, state_of(left, warning_days), waiting_for or [])


def watch(
    s: Session, prog: Programme, today: date, warning_days: int = DEFAULT_WARNING_DAYS, state: str = ""
) -> list[Due]:
    """The programme's episodes whose result is not sent, most urgent first; only ``state`` ones when given.

    A retake has its own deadline, counted from its own exam. The open reads each one waits for are named
    (``waiting_for``: the roles of its open, claimed or deferred reading tasks)."""
    if state and state not in STATES:
        raise ValueError(f"state is one of {', '.join(STATES)}")
    episodes = list(
        s.execute(
            select(Episode)
            .where(Episode.programme_id == prog.id, Episode.result_sent_at.is_(None))
            .order_by(Episode.screen_date, Episode.id)
        ).scalars()
    )
    waiting: dict[int, list[str]] = {}
    ids = [ep.id for ep in episodes]
    for at in range(0, len(ids), 500):
        for eid, role, status in s.execute(
            select(ReadingTask.episode_id, ReadingTask.role, ReadingTask.status).where(
                ReadingTask.episode_id.in_(ids[at : at + 500]),
                ReadingTask.status.in_(("open", "claimed", "deferred")),
            )
        ):
            waiting.setdefault(eid, []).append(f"{role} read ({status})")
    out = []
    for ep in episodes:
        item = deadline_of(prog, ep, today, warning_days, sorted(waiting.get(ep.id, [])))
        if not state or item.state == state:
            out.append(item)
    out.sort(key=lambda d: (d.days_left, d.episode.id))
    return out


def ready_for_decision(s: Session, prog: Programme) -> list[Episode]:
    """The episodes whose reads are complete and that have no decision yet, oldest exam first."""
    stmt = (
        select(Episode)
        .outerjoin(ScreeningDecision, ScreeningDecision.episode_id == Episode.id)
        .where(
            Episode.programme_id == prog.id,
            Episode.status == "ready-for-decision",
            ScreeningDecision.id.is_(None),
        )
        .order_by(Episode.screen_date, Episode.id)
    )
    return list(s.execute(stmt).scalars())
