"""The deferred work-up after a recall ("bilan de diagnostic différé"): its form, and the outcome it gives.

A recall sends the woman back to the imaging centre (the French programme: through the L1 radiologist and her
GP). The centre records what it did: diagnostic views, ultrasound, MRI, a biopsy, the assessment of each breast
after the work-up and a conclusion. A final conclusion records the episode's outcome (normal → ``none``,
benign → ``benign``, cancer → its pathology) so that the metrics count it; a ``suspicious`` one (pathology
awaited) is followed by another form once the biopsy's result is known. Nothing is changed when a form is refused.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from archipel.mammo import decision, episodes
from archipel.mammo.episodes import ScreeningError
from archipel.mammo.models import RECALL, DeferredWorkup, Episode, ScreeningOutcome
from archipel.mammo.schemas import DeferredWorkupBody, OutcomeBody

log = logging.getLogger("archipel.mammo.workup")

#: The outcome each final conclusion records (a cancer's is its pathology).
_OUTCOME = {"normal": "none", "benign": "benign"}


def workups_of(s: Session, episode_id: int) -> list[DeferredWorkup]:
    """The episode's work-up forms, oldest first."""
    return list(
        s.execute(
            select(DeferredWorkup).where(DeferredWorkup.episode_id == episode_id).order_by(DeferredWorkup.id)
        ).scalars()
    )


def _summary(body: DeferredWorkupBody) -> str:
    exams = [f"{v.view}{'' if v.modifier == 'none' else ' ' + v.modifier}" for v in body.diagnostic_views]
    if body.ultrasound:
        exams.append("ultrasound")
    if body.mri:
        exams.append("MRI")
    if body.biopsy != "none":
        exams.append(f"{body.biopsy} biopsy {body.biopsy_laterality}")
    text = f"deferred work-up: {', '.join(exams)}; {body.conclusion}"
    return text if len(text) <= 255 else text[:252] + "..."


def record(s: Session, ep: Episode, body: DeferredWorkupBody, by: str, now: datetime) -> DeferredWorkup:
    """Store the work-up form of a recalled episode and, when its conclusion is final, the outcome it gives.

    409 when the episode was not recalled (no decision yet, normal or technical recall), or when a final
    work-up is recorded already; 422 when the work-up is dated before the decision.
    """
    decided = episodes.decision_of(s, ep.id)
    if decided is None or decided.decision != RECALL:
        state = "has no decision yet" if decided is None else f"was decided {decided.decision}"
        raise ScreeningError(f"episode {ep.id} {state}; a deferred work-up follows a recall")
    if body.performed_on < decided.decided_at.date():
        raise ScreeningError(
            f"performed_on {body.performed_on.isoformat()} is before the recall of "
            f"{decided.decided_at.date().isoformat()}",
            422,
        )
    final = [w for w in workups_of(s, ep.id) if w.conclusion != "suspicious"]
    if final:
        raise ScreeningError(
            f"episode {ep.id} has its final work-up already (form {final[0].id}, {final[0].conclusion})"
        )
    row = DeferredWorkup(
        episode_id=ep.id,
        radiologist=body.radiologist,
        site=body.site or ep.site,
        performed_on=body.performed_on,
        diagnostic_views=json.dumps([v.model_dump() for v in body.diagnostic_views]),
        ultrasound=body.ultrasound,
        mri=body.mri,
        biopsy=body.biopsy,
        biopsy_laterality=body.biopsy_laterality or "",
        right_assessment=body.right_assessment,
        left_assessment=body.left_assessment,
        conclusion=body.conclusion,
        pathology=body.pathology or "",
        size_mm=body.size_mm,
        notes=body.notes,
        recorded_by=by,
        recorded_at=now,
    )
    if body.conclusion != "suspicious":
        outcome = OutcomeBody(
            outcome=body.pathology or _OUTCOME[body.conclusion],
            workup=_summary(body),
            biopsy=body.biopsy != "none",
            size_mm=body.size_mm,
            diagnosed_on=body.performed_on if body.conclusion == "cancer" else None,
        )
        row.outcome_id = decision.record_outcome(s, ep, outcome, by, now).id
    s.add(row)
    s.flush()
    log.info(
        "event=screening_workup episode=%d workup=%d conclusion=%s outcome=%s",
        ep.id,
        row.id,
        row.conclusion,
        row.outcome_id or "-",
    )
    return row


def view(s: Session, row: DeferredWorkup) -> dict[str, Any]:
    """A work-up form in full, with the outcome it recorded."""
    outcome = s.get(ScreeningOutcome, row.outcome_id) if row.outcome_id is not None else None
    return {
        "id": row.id,
        "episode_id": row.episode_id,
        "radiologist": row.radiologist,
        "site": row.site,
        "performed_on": row.performed_on.isoformat(),
        "diagnostic_views": json.loads(row.diagnostic_views),
        "ultrasound": row.ultrasound,
        "mri": row.mri,
        "biopsy": row.biopsy,
        "biopsy_laterality": row.biopsy_laterality or None,
        "right_assessment": row.right_assessment,
        "left_assessment": row.left_assessment,
        "conclusion": row.conclusion,
        "pathology": row.pathology or None,
        "size_mm": row.size_mm,
        "notes": row.notes,
        "recorded_by": row.recorded_by,
        "recorded_at": row.recorded_at.isoformat(),
        "outcome": None
        if outcome is None
        else {
            "id": outcome.id,
            "outcome": outcome.outcome,
            "workup": outcome.workup,
            "biopsy": outcome.biopsy,
        },
    }
