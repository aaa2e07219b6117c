"""A way out for an exam held at intake (flagged, or still incomplete): released by hand, or sent for a retake.

*Release* accepts the flag's lines as they stand (an image without laterality, a view that will never come: a
woman with one breast): the exam goes to the readers, and only a new problem flags it again. *Retake* is a
technical recall decided at intake: the letters tell the woman and her GP that images must be taken again, and
the woman's next MG study is her retake (``intake._retake``; in the French programme a new episode with the L1
form carried over). Either is recorded as a :class:`~archipel.mammo.models.FlagResolution` with its reason.

Both run in the caller's transaction and raise :class:`~archipel.mammo.episodes.ScreeningError` before changing
anything when the episode is not held at intake.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime

from sqlalchemy.orm import Session

from archipel.mammo import decision, episodes
from archipel.mammo.episodes import OPEN_TASK_STATES, ScreeningError
from archipel.mammo.models import (
    FLAG_RELEASE,
    FLAG_RETAKE,
    TECHNICAL_RECALL,
    Episode,
    FlagResolution,
    Programme,
    ScreeningDecision,
)
from archipel.platform import notify

log = logging.getLogger("archipel.mammo.flags")

ACTIONS = (FLAG_RELEASE, FLAG_RETAKE)


def held_lines(s: Session, ep: Episode, prog: Programme, now: datetime) -> list[str]:
    """Everything that holds the episode at intake now: its flag's lines and the views it waits for."""
    problems, waiting = episodes.intake_problems(s, ep, prog, now)
    return problems + [f"missing view {view}" for view in waiting]


def resolve(
    s: Session, ep: Episode, prog: Programme, action: str, reason: str, by: str, now: datetime
) -> FlagResolution:
    """Release the episode's flag, or send its exam for a retake; 409 when nothing holds it at intake."""
    if action not in ACTIONS:
        raise ScreeningError(f"unknown action {action!r}; choose one of: {', '.join(ACTIONS)}", 422)
    if episodes.decision_of(s, ep.id) is not None:
        raise ScreeningError(f"episode {ep.id} is decided already")
    if not episodes.studies_of(s, ep.id):
        raise ScreeningError(f"episode {ep.id} has no images yet; nothing to release or retake")
    lines = held_lines(s, ep, prog, now)
    if not lines:
        raise ScreeningError(
            f"episode {ep.id} is not held at intake (status {ep.status}); nothing to {action}"
        )
    row = FlagResolution(
        episode_id=ep.id,
        action=action,
        problems=json.dumps(lines),
        reason=reason,
        resolved_by=by,
        resolved_at=now,
    )
    s.add(row)
    s.flush()
    if action == FLAG_RELEASE:
        episodes.advance(s, ep, prog, now)
    else:
        _retake(s, ep, prog, lines, reason, by, now)
    log.info("event=screening_flag_resolved episode=%d action=%s lines=%d", ep.id, action, len(lines))
    return row


_TO_WOMAN = (
    "Your screening mammogram of {day} could not be read as it is: some images must be taken again. "
    "The imaging centre will call you for an appointment."
)


def _retake(
    s: Session, ep: Episode, prog: Programme, lines: list[str], reason: str, by: str, now: datetime
) -> None:
    reasons = [f"not readable at intake: {line}" for line in lines] + [f"retake asked: {reason}"]
    day = ep.screen_date.isoformat()
    letters = []
    if ep.woman_contact:
        body = _TO_WOMAN.format(day=day)
        letters.append(
            notify.enqueue(
                s, "email", ep.woman_contact, "Your screening mammogram", body, decision.PURPOSE
            ).id
        )
    if ep.gp_contact:
        body = f"Screening episode {ep.id} ({prog.code}, exam of {day}): {TECHNICAL_RECALL}.\n" + "\n".join(
            reasons
        )
        letters.append(
            notify.enqueue(s, "email", ep.gp_contact, "Screening result", body, decision.PURPOSE).id
        )
    s.add(
        ScreeningDecision(
            episode_id=ep.id,
            decision=TECHNICAL_RECALL,
            reasons=json.dumps(reasons),
            decided_by=by,
            decided_at=now,
            letters=",".join(str(i) for i in letters),
        )
    )
    for task in episodes.tasks_of(s, ep.id):
        if task.status in OPEN_TASK_STATES:
            task.status, task.claimed_by, task.note = "withdrawn", "", "exam sent for a retake at intake"
    ep.status = "decided"
    s.flush()
