"""Intake: an MG study stored in the archive (C-STORE or STOW) is matched to its screening episode.

The archive tells its listeners (``radiology.stored``) of every object; this one keeps each MG image's normalised
view, flags a study whose image lacks a view or a laterality, and attaches the study to the episode of the same
woman (issuer and PatientID, so the MPI's link) and day. A study with no episode, and an episode (an L1 form)
with no study, stay on the reconciliation list until one arrives or someone matches them by hand.
"""

from __future__ import annotations

import json
import logging
from datetime import date, datetime
from io import BytesIO

from pydicom import dcmread
from sqlalchemy import select
from sqlalchemy.orm import Session

from archipel.mammo import decision, episodes
from archipel.mammo.models import TECHNICAL_RECALL, Episode, Programme, ScreeningDecision, ScreeningStudy
from archipel.mammo.views import flag_of, image_view
from archipel.platform.db import Database, utcnow
from archipel.radiology import stored

log = logging.getLogger("archipel.mammo.intake")


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
    """The episode waiting for this study: same woman, same day, no study yet (newest first)."""
    day = _day(study.study_date)
    if day is None:
        return None
    candidates = s.execute(
        select(Episode)
        .where(
            Episode.issuer == study.issuer, Episode.patient_id == study.patient_id, Episode.screen_date == day
        )
        .order_by(Episode.id.desc())
    ).scalars()
    found = next((ep for ep in candidates if not episodes.studies_of(s, ep.id)), None)
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
    """Keep an MG image's view, then attach its study to its episode and move the episode on."""
    p = obj.parsed
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
        ep = s.get(Episode, study.episode_id) if study.episode_id is not None else _match(s, study, now)
        if ep is not None:
            episodes.attach_study(s, study, ep)
            prog = s.get(Programme, ep.programme_id)
            assert prog is not None
            episodes.advance(s, ep, prog, now)
        log.info(
            "event=screening_image study_id=%d episode=%s flagged=%s",
            study.id,
            ep.id if ep is not None else "-",
            bool(study.flag),
        )


def install() -> None:
    """Listen to the archive's stores (idempotent)."""
    stored.on_stored("screening-intake", record_image)


def reconciliation(s: Session) -> dict[str, list[dict[str, object]]]:
    """Studies with no episode, and episodes (forms) with no study, oldest first."""
    studies = s.execute(
        select(ScreeningStudy)
        .where(ScreeningStudy.episode_id.is_(None), ScreeningStudy.prior_of.is_(None))
        .order_by(ScreeningStudy.id)
    ).scalars()
    with_study = select(ScreeningStudy.episode_id).where(ScreeningStudy.episode_id.is_not(None))
    forms = s.execute(
        select(Episode).where(Episode.id.not_in(with_study), Episode.status != "decided").order_by(Episode.id)
    ).scalars()
    return {
        "studies_without_episode": [
            {
                "study_uid": st.study_uid,
                "patient": f"{st.issuer}/{st.patient_id}",
                "study_date": st.study_date,
                "received_at": st.received_at.isoformat(),
                "flag": st.flag,
            }
            for st in studies
        ],
        "episodes_without_study": [
            {
                "episode_id": ep.id,
                "patient": f"{ep.issuer}/{ep.patient_id}",
                "screen_date": ep.screen_date.isoformat(),
                "site": ep.site,
            }
            for ep in forms
        ],
    }
