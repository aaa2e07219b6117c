"""The decision per woman, the results letters it sends, the outcomes recorded later, and the episode's delays.

A decision is the protocol engine's answer once the reads allow one; taking it queues the letters to the woman
and her GP (and, for a French recall, to the L1 radiologist who organises the work-up) in the notify outbox,
in the same transaction. Letters carry no name: the date of the exam and what happens next.

The result is *sent* (``Episode.result_sent_at``) when the last of the decision's letters has left the outbox,
at that letter's sent time, set in the transaction that marks it sent (:func:`letter_sent`). A decision that
queued no letter (no contact for the woman or her GP) leaves the result unsent: the deadline watch
(``deadlines``) then reports it until a letter goes out.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import literal, select
from sqlalchemy.orm import Session

from archipel.mammo import episodes, protocol
from archipel.mammo.episodes import ScreeningError
from archipel.mammo.models import (
    FR_DEPISTAGE,
    L1,
    L2,
    RECALL,
    TECHNICAL_RECALL,
    Episode,
    Programme,
    Reading,
    ScreeningDecision,
    ScreeningOutcome,
)
from archipel.mammo.schemas import OutcomeBody
from archipel.platform import notify
from archipel.platform.authn import User

log = logging.getLogger("archipel.mammo.decision")

PURPOSE = "screening-result"
_L1_NEXT = {
    RECALL: "\nPlease organise the deferred work-up and record its form in Archipel for this episode.",
    TECHNICAL_RECALL: "\nPlease take the insufficient views again; the retake goes back to L2.",
}
_WHAT_NEXT = {
    "normal": "no sign of cancer was seen. You will be invited again for your next screening round.",
    RECALL: "further tests are needed. Your doctor and the imaging centre will contact you for an appointment.",
    TECHNICAL_RECALL: "some images could not be read and must be taken again. The imaging centre will call you.",
}


def _letters(s: Session, ep: Episode, prog: Programme, decision: str, reasons: list[str]) -> list[int]:
    day = ep.screen_date.isoformat()
    ids: list[int] = []
    if ep.woman_contact:
        body = f"Your screening mammogram of {day} has been read twice: {_WHAT_NEXT[decision]}"
        ids.append(notify.enqueue(s, "email", ep.woman_contact, "Your screening result", body, PURPOSE).id)
    professional = f"Screening episode {ep.id} ({prog.code}, exam of {day}): {decision}.\n" + "\n".join(
        reasons
    )
    if ep.gp_contact:
        ids.append(notify.enqueue(s, "email", ep.gp_contact, "Screening result", professional, PURPOSE).id)
    if prog.protocol == FR_DEPISTAGE and decision != "normal":
        to_l1 = professional + _L1_NEXT.get(decision, "")
        for address in l1_contacts(s, ep):
            ids.append(notify.enqueue(s, "email", address, "Screening recall", to_l1, PURPOSE).id)
    return ids


def l1_contacts(s: Session, ep: Episode) -> list[str]:
    """Where a French recall reaches the L1 radiologist: their account's e-mail address and the imaging
    centre's recall address of the episode (either may be missing; both when they differ)."""
    l1 = next((r for r in episodes.reading_rows(s, ep.id) if r.role == L1), None)
    user = s.execute(select(User).where(User.username == l1.reader)).scalar_one_or_none() if l1 else None
    found = [a for a in ((user.email if user is not None else ""), ep.centre_contact) if a]
    if not found:
        log.warning("event=screening_recall_without_l1_contact episode=%d", ep.id)
    return list(dict.fromkeys(found))


def decide(s: Session, ep: Episode, prog: Programme, by: str, now: datetime) -> ScreeningDecision:
    """Take the woman's decision from her reads and queue the letters; 409 when the reads do not allow one yet
    or the decision is taken already."""
    if episodes.decision_of(s, ep.id) is not None:
        raise ScreeningError(f"episode {ep.id} is decided already")
    step = protocol.next_step(episodes.settings_of(prog), episodes.rule_reads(s, ep.id))
    if step.kind != "decide":
        missing = step.waiting_for or f"the {step.role} read"
        raise ScreeningError(f"no decision for episode {ep.id} yet: waiting for {missing}")
    letters = _letters(s, ep, prog, step.decision, list(step.reasons))
    row = ScreeningDecision(
        episode_id=ep.id,
        decision=step.decision,
        reasons=json.dumps(list(step.reasons)),
        decided_by=by,
        decided_at=now,
        letters=",".join(str(i) for i in letters),
    )
    s.add(row)
    ep.status = "decided"
    s.flush()
    late = now.date() > due(ep, prog)
    log.info(
        "event=screening_decided episode=%d decision=%s letters=%d late=%s",
        ep.id,
        step.decision,
        len(letters),
        late,
    )
    if not letters:
        log.warning("event=screening_decided_without_letter episode=%d", ep.id)
    return row


def due(ep: Episode, prog: Programme) -> date:
    """The last day the programme allows for the results letter: the exam's date plus its deadline."""
    return ep.screen_date + timedelta(days=prog.result_deadline_days)


def within_deadline(ep: Episode, prog: Programme, now: datetime) -> bool | None:
    """Whether the result was sent by its due day; ``None`` while unsent and not yet due."""
    if ep.result_sent_at is not None:
        return ep.result_sent_at.date() <= due(ep, prog)
    return False if now.date() > due(ep, prog) else None


def result_state(ep: Episode, decided: ScreeningDecision | None) -> str:
    """Where the result stands: ``undecided``, ``no-letter`` (decided, nobody to write to), ``queued`` (a letter
    is still in the outbox) or ``sent``."""
    if decided is None:
        return "undecided"
    if ep.result_sent_at is not None:
        return "sent"
    return "queued" if letter_ids(decided) else "no-letter"


def letter_ids(decided: ScreeningDecision) -> list[int]:
    """The outbox ids of the decision's letters."""
    return [int(i) for i in decided.letters.split(",") if i]


def letters_sent_at(s: Session, decided: ScreeningDecision) -> datetime | None:
    """When the last of the decision's letters was sent; ``None`` while one is unsent, or if none was queued."""
    ids = letter_ids(decided)
    if not ids:
        return None
    sent = list(
        s.execute(select(notify.OutboxMessage.sent_at).where(notify.OutboxMessage.id.in_(ids))).scalars()
    )
    if len(sent) != len(ids) or any(t is None for t in sent):
        return None
    return max(t for t in sent if t is not None)


def record_sent(s: Session, ep: Episode, decided: ScreeningDecision) -> bool:
    """Set the episode's ``result_sent_at`` once all its letters are sent; whether it is sent now."""
    if ep.result_sent_at is None:
        ep.result_sent_at = letters_sent_at(s, decided)
        if ep.result_sent_at is not None:
            log.info("event=screening_result_sent episode=%d", ep.id)
    return ep.result_sent_at is not None


def _unsent(s: Session, letter: int | None = None) -> list[tuple[ScreeningDecision, Episode]]:
    stmt = (
        select(ScreeningDecision, Episode)
        .join(Episode, Episode.id == ScreeningDecision.episode_id)
        .where(Episode.result_sent_at.is_(None), ScreeningDecision.letters != "")
    )
    if letter is not None:
        stmt = stmt.where((literal(",") + ScreeningDecision.letters + literal(",")).like(f"%,{letter},%"))
    return [(d, ep) for d, ep in s.execute(stmt).all()]


def letter_sent(s: Session, message: notify.OutboxMessage) -> None:
    """The outbox hook: a results letter went out; its episode's result is sent if it was the last one."""
    for decided, ep in _unsent(s, message.id):
        record_sent(s, ep, decided)


def sync_sent(s: Session) -> int:
    """Catch up the results whose letters are all sent (after a failed hook); return how many were."""
    return sum(record_sent(s, ep, decided) for decided, ep in _unsent(s))


notify.after_sent(PURPOSE, letter_sent)


def retake_for(
    s: Session, ep: Episode, prog: Programme, now: datetime, day: date | None = None
) -> Episode | None:
    """After a technical recall, the retake's episode: the same woman and, in the French programme, the L1 form
    carried over, so that the new images (taken on ``day``) go straight to L2; in the blinded programme the
    retake is read again by two blind readers."""
    decided = episodes.decision_of(s, ep.id)
    if decided is None or decided.decision != TECHNICAL_RECALL:
        return None
    retake = Episode(
        programme_id=prog.id,
        retake_of=ep.id,
        issuer=ep.issuer,
        patient_id=ep.patient_id,
        master_id=ep.master_id,
        site=ep.site,
        round=ep.round,
        screen_date=day or now.date(),
        status="awaiting-images",
        flag="",
        priority=ep.priority,
        batch=ep.batch,
        priors="none",
        woman_contact=ep.woman_contact,
        gp_contact=ep.gp_contact,
        centre_contact=ep.centre_contact,
        created_at=now,
    )
    s.add(retake)
    s.flush()
    l1 = next((r for r in episodes.reading_rows(s, ep.id) if r.role == L1), None)
    if l1 is not None:  # none when the exam was sent for a retake at intake, before its L1 form
        copy = {
            c.key: getattr(l1, c.key) for c in Reading.__table__.columns if c.key not in ("id", "episode_id")
        }
        s.add(Reading(**{**copy, "episode_id": retake.id}))
        s.flush()
    return retake


def record_outcome(s: Session, ep: Episode, body: OutcomeBody, by: str, now: datetime) -> ScreeningOutcome:
    """Record what became of the woman; an interval cancer is one found after a normal decision, and nothing is
    diagnosed before the screening (``diagnosed_on``)."""
    decided = episodes.decision_of(s, ep.id)
    if body.outcome == "interval_cancer" and (decided is None or decided.decision != "normal"):
        got = f"it was {decided.decision}" if decided is not None else "it has no decision yet"
        raise ScreeningError(f"an interval cancer is reported after a normal screening decision; {got}", 422)
    if body.diagnosed_on is not None and body.diagnosed_on < ep.screen_date:
        raise ScreeningError(
            f"diagnosed_on {body.diagnosed_on.isoformat()} is before the screening of "
            f"{ep.screen_date.isoformat()}",
            422,
        )
    if body.outcome != "interval_cancer" and decided is None:
        raise ScreeningError(f"episode {ep.id} has no decision yet; record its outcome after it", 409)
    row = ScreeningOutcome(
        episode_id=ep.id,
        outcome=body.outcome,
        workup=body.workup,
        biopsy=body.biopsy,
        size_mm=body.size_mm,
        diagnosed_on=body.diagnosed_on,
        recorded_by=by,
        recorded_at=now,
    )
    s.add(row)
    s.flush()
    return row


def _days(a: datetime | None, b: datetime | None) -> float | None:
    return None if a is None or b is None else round((b - a).total_seconds() / 86400, 2)


def delays(s: Session, ep: Episode) -> dict[str, Any]:
    """The French programme's delays for one episode, in days: exam to file received, exam to L2 read,
    received to result sent (``None`` until both ends are known)."""
    exam = datetime.combine(ep.screen_date, datetime.min.time(), tzinfo=UTC)
    second = next((r for r in episodes.reading_rows(s, ep.id) if r.role in (L2, "second")), None)
    return {
        "exam_to_received_days": _days(exam, ep.received_at),
        "exam_to_l2_days": _days(exam, second.submitted_at if second else None),
        "received_to_result_days": _days(ep.received_at, ep.result_sent_at),
    }
