"""The reconciliation list: MG studies that reached the archive with no episode, and episodes (L1 forms) with no
study yet, until intake matches them or someone matches them by hand.

Each row names its site: an episode's own, a study's the archive's producing site (not the patient ID's
issuer). Who sees which rows is the access policy's: a programme's coordinators and administrators see the
whole list of the programme, anyone else the rows of their site (``visible``).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from archipel.mammo.models import Episode, ScreeningStudy
from archipel.platform import confidentiality
from archipel.radiology.models import Study

#: Whether a row of this site, with these confidentiality codes, is shown.
Visible = Callable[[str, frozenset[str]], bool]


def _everything(_site: str, _codes: frozenset[str]) -> bool:
    return True


def reconciliation(
    s: Session, programme_id: int | None = None, visible: Visible = _everything
) -> dict[str, list[dict[str, object]]]:
    """Studies with no episode, and episodes (forms) with no study, oldest first, each with its site.

    ``programme_id`` keeps that programme's episodes, and the studies of the sites taking part in it (the
    sites of its episodes); ``visible`` keeps the rows it accepts.
    """
    study_rows = (
        select(ScreeningStudy, Study.site, Study.confidentiality)
        .join(Study, Study.study_uid == ScreeningStudy.study_uid)
        .where(ScreeningStudy.episode_id.is_(None), ScreeningStudy.prior_of.is_(None))
        .order_by(ScreeningStudy.id)
    )
    with_study = select(ScreeningStudy.episode_id).where(ScreeningStudy.episode_id.is_not(None))
    form_rows = select(Episode).where(Episode.id.not_in(with_study), Episode.status != "decided")
    if programme_id is not None:
        sites = select(Episode.site).where(Episode.programme_id == programme_id).distinct()
        study_rows = study_rows.where(Study.site.in_(sites))
        form_rows = form_rows.where(Episode.programme_id == programme_id)
    studies: list[dict[str, object]] = [
        {
            "study_uid": st.study_uid,
            "patient": f"{st.issuer}/{st.patient_id}",
            "site": site,
            "study_date": st.study_date,
            "received_at": st.received_at.isoformat(),
            "flag": st.flag,
        }
        for st, site, codes in s.execute(study_rows)
        if visible(site, confidentiality.decode(codes))
    ]
    forms: list[dict[str, object]] = [
        {
            "episode_id": ep.id,
            "patient": f"{ep.issuer}/{ep.patient_id}",
            "screen_date": ep.screen_date.isoformat(),
            "site": ep.site,
        }
        for ep in s.execute(form_rows.order_by(Episode.id)).scalars()
        if visible(ep.site, frozenset())
    ]
    return {"studies_without_episode": studies, "episodes_without_study": forms}
