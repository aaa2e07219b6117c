"""Episodes: registering one, attaching its studies, and moving it along its protocol (the tasks it gets).

Every function here works in the caller's transaction and raises :class:`ScreeningError` (with the HTTP
status that fits) before changing anything when a request cannot be honoured.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from archipel.mammo import protocol, views
from archipel.mammo.models import (
    FLAG_RELEASE,
    FR_DEPISTAGE,
    L1,
    Episode,
    FlagResolution,
    Programme,
    Reading,
    ReadingTask,
    ScreeningDecision,
    ScreeningStudy,
)

OPEN_TASK_STATES = ("open", "claimed", "deferred")


class ScreeningError(ValueError):
    """A request the screening workflow refuses; ``status`` is the HTTP status that says why."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


def not_found(what: str) -> ScreeningError:
    """A :class:`ScreeningError` for something unknown (404)."""
    return ScreeningError(f"no {what}", 404)


def programme(s: Session, code: str) -> Programme:
    """The programme named ``code``; 404 when there is none."""
    found = s.execute(select(Programme).where(Programme.code == code)).scalar_one_or_none()
    if found is None:
        raise not_found(f"screening programme {code!r}")
    return found


def settings_of(p: Programme) -> protocol.Settings:
    """What of ``p`` the protocol engine needs."""
    return protocol.Settings(
        p.protocol, p.arbitration_policy, p.discordance_resolution, p.arbitrator_sees_reads
    )


def episode(s: Session, episode_id: int) -> Episode:
    """The episode ``episode_id``; 404 when there is none."""
    found = s.get(Episode, episode_id)
    if found is None:
        raise not_found(f"screening episode {episode_id}")
    return found


def reading_rows(s: Session, episode_id: int) -> list[Reading]:
    """The episode's submitted reads, oldest first."""
    return list(
        s.execute(select(Reading).where(Reading.episode_id == episode_id).order_by(Reading.id)).scalars()
    )


def as_rule_read(r: Reading) -> protocol.Read:
    """A stored read as the protocol engine sees it."""
    quality = json.loads(r.quality or "{}")
    form = json.loads(r.form or "{}")
    insufficient = tuple(
        (view, str(q.get("reason", ""))) for view, q in sorted(quality.items()) if not q.get("adequate", True)
    )
    return protocol.Read(
        role=r.role,
        reader=r.reader,
        right=r.right_assessment,
        left=r.left_assessment,
        right_result=r.right_result,
        left_result=r.left_result,
        insufficient_views=insufficient,
        consensus_requested=bool(form.get("consensus_requested")),
    )


def rule_reads(s: Session, episode_id: int) -> list[protocol.Read]:
    """The episode's reads for the protocol engine."""
    return [as_rule_read(r) for r in reading_rows(s, episode_id)]


def tasks_of(s: Session, episode_id: int) -> list[ReadingTask]:
    """The episode's reading tasks, oldest first."""
    return list(
        s.execute(
            select(ReadingTask).where(ReadingTask.episode_id == episode_id).order_by(ReadingTask.id)
        ).scalars()
    )


def claims_of(s: Session, episode_id: int) -> list[tuple[str, str]]:
    """``(role, reader)`` of the tasks claimed and not yet done on the episode."""
    return [(t.role, t.claimed_by) for t in tasks_of(s, episode_id) if t.status == "claimed"]


def decision_of(s: Session, episode_id: int) -> ScreeningDecision | None:
    """The episode's decision, if taken."""
    return s.execute(
        select(ScreeningDecision).where(ScreeningDecision.episode_id == episode_id)
    ).scalar_one_or_none()


def find_episode(
    s: Session, programme_id: int, issuer: str, patient_id: str, screen_date: date
) -> Episode | None:
    """The programme's episode of this woman on this day, if registered."""
    return s.execute(
        select(Episode)
        .where(
            Episode.programme_id == programme_id,
            Episode.issuer == issuer,
            Episode.patient_id == patient_id,
            Episode.screen_date == screen_date,
        )
        .order_by(Episode.id.desc())
        .limit(1)
    ).scalar_one_or_none()


def studies_of(s: Session, episode_id: int) -> list[ScreeningStudy]:
    """The studies attached to an episode."""
    return list(
        s.execute(
            select(ScreeningStudy).where(ScreeningStudy.episode_id == episode_id).order_by(ScreeningStudy.id)
        ).scalars()
    )


def required_views(prog: Programme) -> tuple[str, ...]:
    """The views the programme's exams need before they are read (the four standard views by default)."""
    return views.parse_required(prog.screening_views) if prog.screening_views else views.STANDARD_VIEWS


#: A flag cleared by the system when a corrected image completed the exam (``intake``).
FLAG_CORRECTED = "corrected"
#: Who clears it.
SYSTEM_RESOLVER = "system"


def flag_resolutions(s: Session, episode_id: int) -> list[FlagResolution]:
    """The episode's flag resolutions, oldest first: released or sent for a retake by hand, or cleared by a
    corrected image."""
    return list(
        s.execute(
            select(FlagResolution).where(FlagResolution.episode_id == episode_id).order_by(FlagResolution.id)
        ).scalars()
    )


def accepted_problems(s: Session, episode_id: int) -> set[str]:
    """The flag lines that no longer hold the episode: those someone released by hand, and the images a
    corrected image superseded (an image's line names its SOP Instance UID; a view missing again flags again)."""
    accepted: set[str] = set()
    for row in flag_resolutions(s, episode_id):
        lines = json.loads(row.problems)
        if row.action == FLAG_RELEASE:
            accepted.update(lines)
        elif row.action == FLAG_CORRECTED:
            accepted.update(line for line in lines if line.startswith("image "))
    return accepted


def intake_problems(s: Session, ep: Episode, prog: Programme, now: datetime) -> tuple[list[str], list[str]]:
    """What holds the episode at intake: the flag's lines, and the required views it still waits for.

    The flag lists each image without a view or a laterality, and each required view missing once the exam has
    settled: :attr:`Programme.settle_minutes` after its latest image, or at once when its reading had begun (a
    view lost then, say by a rejected image, is no longer one on its way). Lines released by hand are left out,
    and so are the views they accepted as missing. Until the exam has settled, its missing views are awaited:
    the episode waits for them, unread and unflagged.
    """
    studies = studies_of(s, ep.id)
    shown = [v for st in studies for v in json.loads(st.views)]
    accepted = accepted_problems(s, ep.id)
    problems = [p for p in views.image_problems(shown) if p not in accepted]
    missing = [
        view
        for view in views.missing_screening_views(shown, required_views(prog))
        if f"missing view {view}" not in accepted
    ]
    latest = max((st.last_image_at or st.received_at for st in studies), default=None)
    settled = latest is not None and latest + timedelta(minutes=prog.settle_minutes) <= now
    if missing and (settled or tasks_of(s, ep.id)):
        return problems + [f"missing view {view}" for view in missing], []
    return problems, missing


def refresh_flag(s: Session, ep: Episode, prog: Programme, now: datetime) -> list[str]:
    """Set the episode's flag from its images (:func:`intake_problems`); return the views it still waits for."""
    problems, waiting = intake_problems(s, ep, prog, now)
    ep.flag = views.clip("; ".join(problems))
    return waiting


def attach_study(s: Session, study: ScreeningStudy, ep: Episode) -> None:
    """Attach ``study`` to ``ep`` (its flag is set, and its file received once complete, when it moves on,
    :func:`advance`)."""
    if study.episode_id is not None and study.episode_id != ep.id:
        raise ScreeningError(f"study {study.study_uid} belongs to episode {study.episode_id} already")
    if study.issuer != ep.issuer or study.patient_id != ep.patient_id:
        raise ScreeningError(f"study {study.study_uid} is of another patient than episode {ep.id}", 422)
    study.episode_id = ep.id
    s.flush()


def unattached_study_for(s: Session, ep: Episode) -> ScreeningStudy | None:
    """A study on the reconciliation list of the same patient and day as ``ep``."""
    day = ep.screen_date.strftime("%Y%m%d")
    return s.execute(
        select(ScreeningStudy)
        .where(
            ScreeningStudy.episode_id.is_(None),
            ScreeningStudy.issuer == ep.issuer,
            ScreeningStudy.patient_id == ep.patient_id,
            ScreeningStudy.study_date == day,
        )
        .order_by(ScreeningStudy.id)
        .limit(1)
    ).scalar_one_or_none()


def _open_task(s: Session, episode_id: int, role: str) -> ReadingTask | None:
    return next((t for t in tasks_of(s, episode_id) if t.role == role and t.status in OPEN_TASK_STATES), None)


def file_complete(prog: Programme, reads: list[protocol.Read]) -> bool:
    """Whether an episode whose exam is complete (every required view, no flag) has its whole file: in the French
    programme the L1 form too. The file is *received* (``Episode.received_at``, where the delays start) when the
    last of them comes."""
    return prog.protocol != FR_DEPISTAGE or any(r.role == L1 for r in reads)


def advance(s: Session, ep: Episode, prog: Programme, now: datetime) -> protocol.Step:
    """Move ``ep`` to its next step: create the reading task it needs (once), or mark it ready for decision.

    An episode without images waits for them; one whose exam lacks a required view waits for it (``incomplete``)
    until the exam settles, then is flagged (:func:`refresh_flag`); a flagged one is held until its images are
    corrected or the flag is released. Only a complete exam gets reading tasks, and its file is received at
    ``now`` once complete (:func:`file_complete`).
    """
    if decision_of(s, ep.id) is not None:
        ep.status = "decided"
        return protocol.Step("decided")
    reads = rule_reads(s, ep.id)
    settings = settings_of(prog)
    if not studies_of(s, ep.id):
        ep.status = "awaiting-images"
        return protocol.Step("wait", waiting_for="the images")
    waiting = refresh_flag(s, ep, prog, now)
    if ep.flag:
        ep.status = "flagged"
        return protocol.Step(
            "wait", waiting_for="images with a view and a laterality, and every required view"
        )
    if waiting:
        ep.status = "incomplete"
        return protocol.Step("wait", waiting_for=f"the views {', '.join(waiting)}")
    if ep.received_at is None and file_complete(prog, reads):
        ep.received_at = now
    pending = [role for role in protocol.initial_roles(settings) if not any(r.role == role for r in reads)]
    for role in pending:
        if _open_task(s, ep.id, role) is None:
            s.add(
                ReadingTask(episode_id=ep.id, role=role, status="open", created_at=now, passed_by="", note="")
            )
    step = protocol.next_step(settings, reads)
    if step.kind == "task" and _open_task(s, ep.id, step.role) is None:
        s.add(
            ReadingTask(
                episode_id=ep.id, role=step.role, status="open", created_at=now, passed_by="", note=""
            )
        )
    ep.status = {"task": "reading", "wait": "reading", "decide": "ready-for-decision"}.get(
        step.kind, ep.status
    )
    if step.kind == "wait" and step.waiting_for == "the L1 form":
        ep.status = "awaiting-l1-form"
    s.flush()
    return step
