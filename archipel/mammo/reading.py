"""Readers at work: qualifications, worklists, preparing the next case (its images fetched ahead, not claimed),
claiming a case (a lock, and the care relationship that lets the reader see the woman's images for as long as
the claim holds), skipping or deferring it, and submitting a read (the L1 form included).

Each function runs in the caller's transaction and raises :class:`~archipel.mammo.episodes.ScreeningError`
before changing anything when the request breaks a rule.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from archipel.mammo import balance, episodes, protocol
from archipel.mammo.episodes import ScreeningError
from archipel.mammo.models import (
    COORDINATOR,
    L1,
    PRIORS_FAILED,
    PRIORS_HELD,
    Episode,
    Programme,
    ReaderQualification,
    Reading,
    ReadingTask,
)
from archipel.mammo.schemas import Finding, L1FormBody, ReadBody
from archipel.platform import care
from archipel.platform.care import CareRelationship
from archipel.platform.identity.models import LocalIdentity

log = logging.getLogger("archipel.mammo.reading")

#: A claim not finished within this time may be taken by another reader; the reading assignment it gives
#: lapses with it (a reader renews both by claiming again).
CLAIM_TTL = timedelta(hours=4)
#: How many cases one reader may hold claimed at once, so that a batch is shared among the readers.
MAX_CLAIMS = 20
#: How long the reading assignment lets a reader see the woman's images once they have read her case
#: (follow-up questions included).
ASSIGNMENT_DAYS = 90
#: How long preparing a case (the next one of the worklist, fetched ahead without claiming it) lets the
#: reader see its images.
PREVIEW = timedelta(minutes=15)


def qualifications(s: Session, programme_id: int, reader: str) -> set[str]:
    """The reader's qualifications in the programme."""
    return set(
        s.execute(
            select(ReaderQualification.qualification).where(
                ReaderQualification.programme_id == programme_id, ReaderQualification.reader == reader
            )
        ).scalars()
    )


def coordinates(s: Session, code: str, subject: str) -> bool:
    """Whether ``subject`` holds the ``coordinator`` qualification of programme ``code`` (False when there
    is no such programme)."""
    found = s.execute(
        select(ReaderQualification.id)
        .join(Programme, Programme.id == ReaderQualification.programme_id)
        .where(
            Programme.code == code,
            ReaderQualification.reader == subject,
            ReaderQualification.qualification == COORDINATOR,
        )
    ).first()
    return found is not None


def qualify(s: Session, prog: Programme, reader: str, qualification: str, by: str, now: datetime) -> bool:
    """Qualify ``reader``; returns False when they held the qualification already."""
    if qualification in qualifications(s, prog.id, reader):
        return False
    s.add(
        ReaderQualification(
            programme_id=prog.id, reader=reader, qualification=qualification, granted_by=by, granted_at=now
        )
    )
    s.flush()
    return True


def _passed(task: ReadingTask) -> set[str]:
    return {r for r in task.passed_by.split(",") if r}


def _available(task: ReadingTask, reader: str, now: datetime) -> bool:
    if task.status == "claimed":
        return task.claimed_by == reader or (
            task.claimed_at is not None and task.claimed_at + CLAIM_TTL <= now
        )
    if task.status == "deferred":
        return task.deferred_until is None or task.deferred_until <= now
    return task.status == "open"


def _held(ep: Episode) -> str:
    if ep.priors == PRIORS_FAILED:
        return "the case is held back: fetching its priors failed (ask again, or release it with priors none)"
    if ep.priors in PRIORS_HELD:
        return "the case is held back while its priors are awaited"
    if ep.flag:
        return f"the case is flagged at intake: {ep.flag}"
    return ""


def _eligibility(s: Session) -> balance.Eligible:
    """``eligible(task, episode, programme, reader)`` with the queries it needs cached for one worklist."""
    quals: dict[tuple[int, str], set[str]] = {}
    reads: dict[int, list[protocol.Read]] = {}
    claims: dict[int, list[tuple[str, str]]] = {}

    def eligible(task: ReadingTask, ep: Episode, prog: Programme, reader: str) -> bool:
        if reader in _passed(task):
            return False
        if (prog.id, reader) not in quals:
            quals[prog.id, reader] = qualifications(s, prog.id, reader)
        if protocol.QUALIFICATION_FOR[task.role] not in quals[prog.id, reader]:
            return False
        if ep.id not in reads:
            reads[ep.id], claims[ep.id] = episodes.rule_reads(s, ep.id), episodes.claims_of(s, ep.id)
        others = [c for c in claims[ep.id] if c != (task.role, reader)]
        return not protocol.eligibility_refusal(prog.protocol, task.role, reader, reads[ep.id], others)

    return eligible


def worklist(
    s: Session, reader: str, now: datetime, role: str = "", programme: str = "", batch: str = ""
) -> list[dict[str, Any]]:
    """The cases ``reader`` may read now: their own claims first, then the cases dealt to them (``share``
    ``"yours"``, see :mod:`~archipel.mammo.balance`), then the others' (``"shared"``), each by priority, batch,
    date and age. ``role``, ``programme`` and ``batch`` (a clinic's batch) narrow the list when given.

    Cases held back (priors awaited, flagged at intake), claimed by another reader, skipped by this reader, or
    that the protocol forbids them (L1 and L2 of one exam, both blind reads) are left out.
    """
    stmt = (
        select(ReadingTask, Episode, Programme)
        .join(Episode, Episode.id == ReadingTask.episode_id)
        .join(Programme, Programme.id == Episode.programme_id)
        .where(ReadingTask.status.in_(("open", "claimed", "deferred")), Episode.priors.not_in(PRIORS_HELD))
        .where(Episode.flag == "")
    )
    if role:
        stmt = stmt.where(ReadingTask.role == role)
    if programme:
        stmt = stmt.where(Programme.code == programme)
    if batch:
        stmt = stmt.where(Episode.batch == batch)
    eligible = _eligibility(s)

    def order(row: tuple[ReadingTask, Episode, Programme]) -> tuple[Any, ...]:
        task, ep, _prog = row
        return (-ep.priority, ep.batch, ep.screen_date, task.id)

    rows: list[tuple[ReadingTask, Episode, Programme]] = [(t, e, p) for t, e, p in s.execute(stmt)]
    rows.sort(key=order)
    # Open to anyone: not claimed in force, not deferred any more.
    free = [(t, e, p) for t, e, p in rows if _available(t, "", now)]
    dealt = balance.deal(s, free, reader, eligible, CLAIM_TTL, now)
    out: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    for task, ep, prog in rows:
        if not _available(task, reader, now) or not eligible(task, ep, prog, reader):
            continue
        mine = task.status == "claimed" and task.claimed_by == reader
        yours = mine or dealt.get(task.id) == reader
        key = (not mine, not yours, *order((task, ep, prog)))
        out.append(
            (
                key,
                {
                    "task_id": task.id,
                    "role": task.role,
                    "claimed": mine,
                    "share": "yours" if yours else "shared",
                    "episode_id": ep.id,
                    "programme": prog.code,
                    "site": ep.site,
                    "round": ep.round,
                    "screen_date": ep.screen_date.isoformat(),
                    "priority": ep.priority,
                    "batch": ep.batch,
                },
            )
        )
    return [row for _, row in sorted(out, key=lambda kv: kv[0])]


def task_context(s: Session, task_id: int, lock: bool = False) -> tuple[ReadingTask, Episode, Programme]:
    """The task, its episode and programme; 404 when the task is unknown. ``lock`` holds the task's row until
    the transaction ends (PostgreSQL; SQLite has one writer at a time anyway), so that two claims or two
    submissions of one task cannot both succeed."""
    task = s.get(ReadingTask, task_id, with_for_update=lock)
    if task is None:
        raise episodes.not_found(f"reading task {task_id}")
    ep = episodes.episode(s, task.episode_id)
    prog = s.get(Programme, ep.programme_id)
    assert prog is not None
    return task, ep, prog


def claim_refusal(s: Session, task: ReadingTask, ep: Episode, prog: Programme, reader: str) -> str:
    """Why ``reader`` may not read this task (not qualified, or the protocol forbids it), or empty."""
    needed = protocol.QUALIFICATION_FOR[task.role]
    if needed not in qualifications(s, prog.id, reader):
        return f"{reader} is not qualified as {needed} reader in programme {prog.code}"
    others = [c for c in episodes.claims_of(s, ep.id) if c != (task.role, reader)]
    return protocol.eligibility_refusal(
        prog.protocol, task.role, reader, episodes.rule_reads(s, ep.id), others
    )


def _assign(s: Session, ep: Episode, reader: str, context: str, now: datetime, until: datetime) -> None:
    """Let ``reader`` see the woman's record until ``until``: the reading assignment of ``context`` in force
    is extended (never shortened), or a new one is recorded."""
    assert ep.master_id is not None
    row = s.execute(
        select(CareRelationship)
        .where(
            CareRelationship.professional == reader,
            CareRelationship.master_id == ep.master_id,
            CareRelationship.kind == care.READING_ASSIGNMENT,
            CareRelationship.context == context,
            CareRelationship.valid_from <= now,
            CareRelationship.valid_to > now,
        )
        .order_by(CareRelationship.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    if row is not None:
        assert row.valid_to is not None
        row.valid_to = max(row.valid_to, until)
        return
    care.record(
        s,
        reader,
        ep.master_id,
        care.READING_ASSIGNMENT,
        recorded_by=reader,
        valid_from=now,
        valid_to=until,
        context=context,
    )


def _end_assignments(s: Session, task: ReadingTask, reader: str, now: datetime) -> int:
    """End the reading assignments the task's claim and preparation gave ``reader``; returns how many."""
    rows = s.execute(
        select(CareRelationship).where(
            CareRelationship.professional == reader,
            CareRelationship.kind == care.READING_ASSIGNMENT,
            CareRelationship.context.in_((_claim_context(task), _preview_context(task))),
            CareRelationship.valid_to > now,
        )
    ).scalars()
    ended = 0
    for row in rows:
        care.end(s, row.id, ended_by=reader, at=now)
        ended += 1
    return ended


def _claim_context(task: ReadingTask) -> str:
    return f"screening-task:{task.id}"


def _preview_context(task: ReadingTask) -> str:
    return f"screening-preview:{task.id}"


def _claimable(
    s: Session, task: ReadingTask, ep: Episode, prog: Programme, reader: str, now: datetime
) -> None:
    """Raise why ``reader`` may not claim the task now (done, someone else's, held back, not for them), and
    make sure the woman is linked in the MPI (the reading assignment names her master record)."""
    if task.status == "done":
        raise ScreeningError(f"reading task {task.id} is done")
    if not _available(task, reader, now):
        raise ScreeningError(f"reading task {task.id} is claimed by another reader or deferred")
    held = _held(ep)
    if held:
        raise ScreeningError(held)
    refusal = claim_refusal(s, task, ep, prog, reader)
    if refusal:
        raise ScreeningError(refusal, 403)
    if ep.master_id is None:
        ep.master_id = master_of_episode(s, ep)
    if ep.master_id is None:
        raise ScreeningError(f"the woman of episode {ep.id} is not linked in the MPI yet (identity review)")


def prepare(s: Session, task_id: int, reader: str, now: datetime) -> datetime:
    """Let ``reader`` fetch a case ahead (the next one of their worklist) without claiming it: only a case
    they could claim now, only what a claim would show them, and for :data:`PREVIEW`. Returns when that
    ends. The task stays open to every reader; opening the case claims it."""
    task, ep, prog = task_context(s, task_id)
    _claimable(s, task, ep, prog, reader, now)
    until = now + PREVIEW
    _assign(s, ep, reader, _preview_context(task), now, until)
    s.flush()
    log.info("event=screening_task_prepared task=%d role=%s", task.id, task.role)
    return until


def claim(s: Session, task_id: int, reader: str, now: datetime) -> ReadingTask:
    """Lock the task to ``reader`` and give them the reading assignment to the woman's record for as long as
    the claim holds (:data:`CLAIM_TTL`); claiming again renews a lapsed claim of theirs."""
    task, ep, prog = task_context(s, task_id, lock=True)
    if task.status == "claimed" and task.claimed_by == reader:
        assert task.claimed_at is not None
        if task.claimed_at + CLAIM_TTL <= now:
            task.claimed_at = now
        if ep.master_id is not None:
            _assign(s, ep, reader, _claim_context(task), now, task.claimed_at + CLAIM_TTL)
        s.flush()
        return task
    _claimable(s, task, ep, prog, reader, now)
    mine = s.execute(
        select(ReadingTask.id).where(ReadingTask.status == "claimed", ReadingTask.claimed_by == reader)
    ).all()
    if len(mine) >= MAX_CLAIMS:
        raise ScreeningError(f"{reader} holds {len(mine)} cases already; submit or release one first")
    task.status, task.claimed_by, task.claimed_at = "claimed", reader, now
    _assign(s, ep, reader, _claim_context(task), now, now + CLAIM_TTL)
    s.flush()
    log.info("event=screening_task_claimed task=%d role=%s", task.id, task.role)
    return task


def master_of_episode(s: Session, ep: Episode) -> int | None:
    """The master patient of the episode's woman in the MPI, if linked."""
    return s.execute(
        select(LocalIdentity.master_id).where(
            LocalIdentity.issuer == ep.issuer, LocalIdentity.local_id == ep.patient_id
        )
    ).scalar_one_or_none()


def release(
    s: Session, task_id: int, reader: str, reason: str, now: datetime, defer_hours: int = 0
) -> ReadingTask:
    """Skip the case (it goes back to the others, never again to ``reader``) or defer it by ``defer_hours``;
    the reading assignments its claim and preparation gave ``reader`` end now."""
    task, _, _ = task_context(s, task_id, lock=True)
    if task.status == "done":
        raise ScreeningError(f"reading task {task_id} is done")
    if task.status == "claimed" and task.claimed_by != reader and not _available(task, reader, now):
        raise ScreeningError(f"reading task {task_id} is claimed by another reader")
    _end_assignments(s, task, reader, now)
    task.note = reason
    task.claimed_by, task.claimed_at = "", None
    if defer_hours:
        task.status, task.deferred_until = "deferred", now + timedelta(hours=defer_hours)
    else:
        task.status = "open"
        task.passed_by = ",".join(sorted(_passed(task) | {reader}))
    s.flush()
    return task


def _finding_json(finding: Finding) -> dict[str, Any]:
    """A finding as stored: a mark's frame only when it has one (a mark on a 2D image is as it always was)."""
    out = finding.model_dump()
    for mark in out["views"]:
        if mark.get("frame") is None:
            mark.pop("frame", None)
    return out


def check_frames(s: Session, ep: Episode, body: ReadBody, images_in: bool = True) -> None:
    """Refuse (422) a finding's mark whose frame is not one of its image's: the image (``sop_uid``) must be one of
    the episode's, and the frame at most its number of frames. An L1 form may come before the images
    (``images_in`` false): a mark on an image not in yet is then taken as it is."""
    marks = [m for f in body.findings for m in f.views if m.frame is not None]
    if not marks:
        return
    frames = {
        v["sop"]: int(v.get("frames") or 1)
        for st in episodes.studies_of(s, ep.id)
        for v in json.loads(st.views)
    }
    for mark in marks:
        if not mark.sop_uid:
            raise ScreeningError(
                f"the mark on {mark.view} gives frame {mark.frame} but not its image's sop_uid", 422
            )
        count = frames.get(mark.sop_uid)
        if count is None:
            if images_in:
                raise ScreeningError(
                    f"the mark on {mark.view} is on image {mark.sop_uid}, not one of episode {ep.id}'s", 422
                )
            continue
        if mark.frame is not None and mark.frame > count:
            raise ScreeningError(
                f"the mark on {mark.view} is on frame {mark.frame} of image {mark.sop_uid}, which has "
                f"{count} frame{'s' if count > 1 else ''}",
                422,
            )


def _reading(
    ep: Episode, role: str, reader: str, body: ReadBody, now: datetime, extra: dict[str, Any]
) -> Reading:
    form = {"further_tests": body.further_tests, "consensus_requested": body.consensus_requested, **extra}
    return Reading(
        episode_id=ep.id,
        role=role,
        reader=reader,
        blind=role in protocol.BLIND_ROLES,
        right_assessment=body.right.assessment,
        left_assessment=body.left.assessment,
        right_result=body.right.result or "",
        left_result=body.left.result or "",
        density=body.density,
        findings=json.dumps([_finding_json(f) for f in body.findings]),
        quality=json.dumps({view: q.model_dump() for view, q in body.quality.items()}),
        form=json.dumps(form),
        submitted_at=now,
    )


def submit(s: Session, task_id: int, reader: str, body: ReadBody, now: datetime) -> Reading:
    """Record ``reader``'s read for the task they claimed, then move the episode on."""
    task, ep, prog = task_context(s, task_id, lock=True)
    if task.status == "done":
        raise ScreeningError(f"the {task.role} read of episode {ep.id} is submitted already; a read is final")
    if task.status != "claimed" or task.claimed_by != reader:
        raise ScreeningError(f"claim reading task {task_id} before submitting its read")
    if body.consensus_requested and task.role != protocol.L2:
        raise ScreeningError("only an L2 read may ask for an L2 consensus", 422)
    check_frames(s, ep, body)
    row = _reading(ep, task.role, reader, body, now, {})
    row.task_id, row.opened_at = task.id, task.claimed_at
    s.add(row)
    task.status, task.done_at = "done", now
    if ep.master_id is not None:
        _assign(s, ep, reader, _claim_context(task), now, now + timedelta(days=ASSIGNMENT_DAYS))
    s.flush()
    episodes.advance(s, ep, prog, now)
    log.info("event=screening_read_submitted task=%d role=%s episode=%d", task.id, task.role, ep.id)
    return row


def submit_l1(
    s: Session, prog: Programme, body: L1FormBody, reader: str, now: datetime
) -> tuple[Episode, Reading]:
    """Record the imaging centre's L1 form: match (or register) the episode, attach its study, store the L1 read."""
    if prog.protocol != "fr-depistage":
        raise ScreeningError(f"programme {prog.code} reads blind ({prog.protocol}); it has no L1 form", 422)
    if "l1" not in qualifications(s, prog.id, reader):
        raise ScreeningError(f"{reader} is not qualified as l1 reader in programme {prog.code}", 403)
    ep = episodes.find_episode(s, prog.id, body.issuer, body.patient_id, body.screen_date)
    if ep is not None and any(r.role == L1 for r in episodes.reading_rows(s, ep.id)):
        raise ScreeningError(f"episode {ep.id} has its L1 form already; a form is submitted once")
    if ep is None:
        ep = register(s, prog, body, now)
    else:
        link_named_study(s, ep, body.study_uid)
        ep.centre_contact = body.centre_contact or ep.centre_contact
    extra = {
        "history": body.history,
        "clinical_exam": body.clinical_exam,
        "immediate_workup": body.immediate_workup,
        "ultrasound": body.ultrasound,
        "workup_result": body.workup_result,
    }
    check_frames(s, ep, body.read, images_in=False)
    row = _reading(ep, L1, reader, body.read, now, extra)
    s.add(row)
    s.flush()
    episodes.advance(s, ep, prog, now)
    return ep, row


def link_named_study(s: Session, ep: Episode, study_uid: str) -> None:
    """Attach the study the form names (it must be in the archive), or one waiting for the same woman and day."""
    from archipel.mammo.models import ScreeningStudy

    if study_uid:
        study = s.execute(
            select(ScreeningStudy).where(ScreeningStudy.study_uid == study_uid)
        ).scalar_one_or_none()
        if study is None:
            raise ScreeningError(f"no mammography study {study_uid} in the archive", 404)
        if study.episode_id != ep.id:
            episodes.attach_study(s, study, ep)
        return
    waiting = episodes.unattached_study_for(s, ep)
    if waiting is not None:
        episodes.attach_study(s, waiting, ep)


def register(s: Session, prog: Programme, body: Any, now: datetime) -> Episode:
    """Register an episode (and attach its study); the named study must be in the archive."""
    existing = episodes.find_episode(s, prog.id, body.issuer, body.patient_id, body.screen_date)
    if existing is not None and not isinstance(body, L1FormBody):
        raise ScreeningError(f"episode {existing.id} is registered already for this woman and day")
    ep = Episode(
        programme_id=prog.id,
        issuer=body.issuer,
        patient_id=body.patient_id,
        site=body.site,
        round=body.round,
        screen_date=body.screen_date,
        status="awaiting-images",
        flag="",
        priority=body.priority,
        batch=body.batch,
        priors="none",
        woman_contact=body.woman_contact,
        gp_contact=body.gp_contact,
        centre_contact=body.centre_contact,
        created_at=now,
    )
    ep.master_id = master_of_episode(s, ep)
    s.add(ep)
    s.flush()
    link_named_study(s, ep, body.study_uid)
    episodes.advance(s, ep, prog, now)
    return ep
