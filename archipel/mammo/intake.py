"""Intake: an MG study stored in the archive (C-STORE or STOW) is matched to its screening episode.

The archive tells its listeners (``radiology.stored``) of every object; this one keeps each MG image's normalised
view, flags a study whose image lacks a view or a laterality, and attaches the study to the episode of the same
woman (issuer and PatientID, so the MPI's link) and day. A study with no episode, and an episode (an L1 form)
with no study, stay on the reconciliation list until one arrives or someone matches them by hand.

Images come one by one, so an exam is read only once complete: with every view its programme requires, it gets
its reading tasks at once; without, it waits (``incomplete``) until the programme's settle time has passed since
its latest image, and is then flagged by the periodic :func:`settle_incomplete`. Every new image, and every IOCM
rejection note withdrawing one, evaluates the exam again.
"""

from __future__ import annotations

import json
import logging
from datetime import date, datetime
from io import BytesIO

from celery import shared_task
from pydicom import dcmread
from sqlalchemy import select
from sqlalchemy.orm import Session

from archipel.mammo import decision, episodes, reading
from archipel.mammo.models import (
    TECHNICAL_RECALL,
    Episode,
    FlagResolution,
    Programme,
    ScreeningDecision,
    ScreeningStudy,
)
from archipel.mammo.views import ImageView, flag_of, image_view
from archipel.platform import audit, jobs, schedule
from archipel.platform.authn import Principal
from archipel.platform.db import Database, utcnow
from archipel.platform.runtime import get_runtime
from archipel.radiology import stored
from archipel.radiology.dicomfile import InvalidInstance
from archipel.radiology.rejection import KOS_SOP_CLASS, read_rejection_note

log = logging.getLogger("archipel.mammo.intake")

#: Episodes whose images are in but not readable yet: a study of the same day may complete or correct them.
HELD_AT_INTAKE = ("incomplete", "flagged")
SETTLE_TASK = "mammo.settle_incomplete_exams"
#: How often the incomplete exams are looked at (their settle time is the programme's, in minutes).
SETTLE_SECONDS = 60
#: The reason a flag cleared by a corrected image is recorded with (and the image's SOP Instance UID).
CORRECTED_IMAGE = "corrected image received"
#: Who the audit trail names for it.
INTAKE_PRINCIPAL = Principal(subject="screening-intake", role="system", kind="system")


def _now(db: Database) -> datetime:
    # The runtime's clock (tests move it) when this store is the runtime's; never build a runtime from here.
    from archipel.platform.runtime import current_runtime

    rt = current_runtime()
    return rt.clock() if rt is not None and rt.db is db else utcnow()


def _day(value: str) -> date | None:
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:8]))
    except ValueError:
        return None


def _match(s: Session, study: ScreeningStudy, now: datetime) -> Episode | None:
    """The episode waiting for this study: same woman, same day, no study yet (newest first); else one of hers
    that day still incomplete or flagged (the missing view, or a corrected image, sent as a study of its own)."""
    day = _day(study.study_date)
    if day is None:
        return None
    candidates = list(
        s.execute(
            select(Episode)
            .where(
                Episode.issuer == study.issuer,
                Episode.patient_id == study.patient_id,
                Episode.screen_date == day,
            )
            .order_by(Episode.id.desc())
        ).scalars()
    )
    found = next((ep for ep in candidates if not episodes.studies_of(s, ep.id)), None)
    found = found or next((ep for ep in candidates if ep.status in HELD_AT_INTAKE), None)
    return found if found is not None else _retake(s, study, now)


def _retake(s: Session, study: ScreeningStudy, now: datetime) -> Episode | None:
    """A retake after a technical recall: the woman's technically recalled episode with no retake yet."""
    recalled = s.execute(
        select(Episode)
        .join(ScreeningDecision, ScreeningDecision.episode_id == Episode.id)
        .where(
            Episode.issuer == study.issuer,
            Episode.patient_id == study.patient_id,
            ScreeningDecision.decision == TECHNICAL_RECALL,
        )
        .order_by(Episode.id.desc())
    ).scalars()
    day = _day(study.study_date)
    for ep in recalled:
        if day is not None and day < ep.screen_date:
            continue  # an earlier study (a prior fetched from another PACS) is no retake
        if s.execute(select(Episode.id).where(Episode.retake_of == ep.id)).first() is None:
            prog = s.get(Programme, ep.programme_id)
            assert prog is not None
            return decision.retake_for(s, ep, prog, now, _day(study.study_date))
    return None


def record_image(db: Database, obj: stored.StoredObject) -> None:
    """Keep an MG image's view, then attach its study to its episode and move the episode on (an IOCM
    rejection note instead takes the images it rejects out of their studies' views)."""
    p = obj.parsed
    if p.sop_class_uid == KOS_SOP_CLASS:
        _record_rejection(db, obj)
        return
    if p.modality != "MG":
        return
    ds = dcmread(BytesIO(obj.data), stop_before_pixels=True, force=True)
    view = image_view(ds)
    now = _now(db)
    with db.write() as s:
        study = s.execute(
            select(ScreeningStudy).where(ScreeningStudy.study_uid == p.study_uid)
        ).scalar_one_or_none()
        if study is None:
            study = ScreeningStudy(
                study_uid=p.study_uid,
                issuer=p.issuer,
                patient_id=p.patient_id,
                study_date=p.study_date,
                views="[]",
                flag="",
                received_at=now,
            )
            s.add(study)
            s.flush()
        views = [v for v in json.loads(study.views) if v["sop"] != view.sop_uid] + [view.as_dict()]
        study.views = json.dumps(views)
        study.flag = flag_of(views)
        study.last_image_at = now
        ep = s.get(Episode, study.episode_id) if study.episode_id is not None else _match(s, study, now)
        if ep is not None:
            _move_on(s, study, ep, now, view)
        log.info(
            "event=screening_image study_id=%d episode=%s flagged=%s status=%s",
            study.id,
            ep.id if ep is not None else "-",
            bool(study.flag),
            ep.status if ep is not None else "-",
        )


def _move_on(
    s: Session, study: ScreeningStudy, ep: Episode, now: datetime, image: ImageView | None = None
) -> None:
    if study.episode_id != ep.id:
        episodes.attach_study(s, study, ep)
    if ep.master_id is None:
        ep.master_id = reading.master_of_episode(s, ep)
    prog = s.get(Programme, ep.programme_id)
    assert prog is not None
    if image is not None:
        _corrected(s, ep, prog, image, now)
    episodes.advance(s, ep, prog, now)


def _corrected(s: Session, ep: Episode, prog: Programme, image: ImageView, now: datetime) -> None:
    """A flagged exam that a new, well-labelled screening image (``image``, already in its study's views) makes
    whole again: every required view given by an image with a view and a laterality. Its flag is cleared by
    the system, the images the correction supersedes accepted, the resolution kept and audited."""
    if ep.status != "flagged" or image.problem or not image.screening:
        return
    problems, waiting = episodes.intake_problems(s, ep, prog, now)
    if waiting or any(line.startswith("missing view ") for line in problems):
        return  # a required view still lacks an image
    before = [line for line in ep.flag.split("; ") if line]
    reason = f"{CORRECTED_IMAGE}: {image.sop_uid}"
    s.add(
        FlagResolution(
            episode_id=ep.id,
            action=episodes.FLAG_CORRECTED,
            problems=json.dumps(list(dict.fromkeys(before + problems))),
            reason=reason,
            resolved_by=episodes.SYSTEM_RESOLVER,
            resolved_at=now,
        )
    )
    s.flush()
    audit.append(
        s,
        INTAKE_PRINCIPAL,
        audit.PATIENT_RECORD,
        "update:screening-intake",
        patient=f"{ep.issuer}/{ep.patient_id}",
        master=ep.master_id,
        obj=f"intake flag of screening episode {ep.id}",
        purpose=audit.OPERATIONS,
        detail=reason,
    )
    log.info("event=screening_flag_corrected episode=%d lines=%d", ep.id, len(before))


def _record_rejection(db: Database, obj: stored.StoredObject) -> None:
    """Take the images an IOCM rejection note rejects out of their screening studies, and re-evaluate their
    episodes: a wrong image withdrawn this way no longer flags the exam (a view it gave may now be missing)."""
    try:
        note = read_rejection_note(obj.data)
    except InvalidInstance:
        return
    if note is None:
        return
    rejected = {ref.sop_uid for ref in note.references}
    now = _now(db)
    with db.write() as s:
        studies = s.execute(
            select(ScreeningStudy).where(ScreeningStudy.study_uid.in_({r.study_uid for r in note.references}))
        ).scalars()
        for study in studies:
            views = json.loads(study.views)
            kept = [v for v in views if v["sop"] not in rejected]
            if len(kept) == len(views):
                continue
            study.views, study.flag = json.dumps(kept), flag_of(kept)
            study.last_image_at = now
            ep = s.get(Episode, study.episode_id) if study.episode_id is not None else None
            if ep is not None:
                _move_on(s, study, ep, now)
            log.info(
                "event=screening_images_rejected study_id=%d rejected=%d episode=%s",
                study.id,
                len(views) - len(kept),
                ep.id if ep is not None else "-",
            )


def settle_incomplete(db: Database, now: datetime) -> int:
    """Flag the incomplete exams whose settle time has passed since their latest image (their missing views did
    not come); return how many were flagged. Cheap when none waits, and safe to run twice."""
    with db.sessions() as s:
        waiting = list(s.execute(select(Episode.id).where(Episode.status == "incomplete")).scalars())
    flagged = 0
    for episode_id in waiting:
        with db.write() as s:
            ep = s.get(Episode, episode_id)
            if ep is None or ep.status != "incomplete":
                continue
            prog = s.get(Programme, ep.programme_id)
            assert prog is not None
            episodes.advance(s, ep, prog, now)
            if ep.status == "flagged":
                flagged += 1
                log.info("event=screening_exam_incomplete episode=%d flag=%r", ep.id, ep.flag)
    return flagged


@shared_task(name=SETTLE_TASK, **jobs.RETRY_TRANSIENT)
def settle_task() -> int:
    """Periodic: flag the exams still missing a required view once their settle time has passed."""
    rt = get_runtime()
    return settle_incomplete(rt.db, rt.clock())


schedule.every(SETTLE_SECONDS, SETTLE_TASK, queue="prefetch", setting="screening_settle_seconds")


def install() -> None:
    """Listen to the archive's stores (idempotent)."""
    stored.on_stored("screening-intake", record_image)
