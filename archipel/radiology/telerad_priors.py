"""Priors of a reading request: the patient's other studies at every site, found through the master patient index
and limited, inside the SQL, to what the reader may see (a claim gives a reading assignment, so a claim holder
sees the patient's studies wherever they were produced).

Each listing is recorded on the request (:class:`PriorStudy`), once per study, so that the worklist can tell the
reader which priors exist before they open the viewer.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from archipel.platform.access import ReadScope
from archipel.platform.identity.models import LocalIdentity
from archipel.radiology import visibility
from archipel.radiology.models import Patient, Study
from archipel.radiology.telerad_models import PriorStudy, ReadingRequest

LISTED, PREFETCH_REQUESTED = "listed", "prefetch-requested"


def find_priors(s: Session, req: ReadingRequest, scope: ReadScope) -> list[tuple[Study, str, str]]:
    """The master patient's studies other than the request's own, newest first, that ``scope`` lets be seen;
    each with the issuer and PatientID it is filed under at its site."""
    stmt = (
        select(Study, Patient.issuer, Patient.patient_id)
        .join(Patient, Patient.id == Study.patient_pk)
        .join(
            LocalIdentity,
            and_(LocalIdentity.issuer == Patient.issuer, LocalIdentity.local_id == Patient.patient_id),
        )
        .where(LocalIdentity.master_id == req.master_id, visibility.condition(scope))
        .order_by(Study.study_date.desc(), Study.study_time.desc(), Study.id.desc())
    )
    if req.study_uid:
        stmt = stmt.where(Study.study_uid != req.study_uid)
    return [(st, issuer, pid) for st, issuer, pid in s.execute(stmt).all()]


def record_priors(s: Session, req: ReadingRequest, scope: ReadScope, now: datetime) -> list[dict[str, Any]]:
    """List the priors and record the new ones on the request; returns them as the API shows them."""
    found = find_priors(s, req, scope)
    known = {
        p.study_uid: p for p in s.execute(select(PriorStudy).where(PriorStudy.request_id == req.id)).scalars()
    }
    out: list[dict[str, Any]] = []
    for st, issuer, pid in found:
        row = known.get(st.study_uid)
        if row is None:
            row = PriorStudy(
                request_id=req.id,
                study_uid=st.study_uid,
                site=st.site,
                study_date=st.study_date,
                modalities=st.modalities,
                description=st.description,
                status=LISTED,
                listed_at=now,
            )
            s.add(row)
        out.append(
            {
                "study_uid": st.study_uid,
                "study_date": st.study_date,
                "description": st.description,
                "modalities": [m for m in st.modalities.split("\\") if m],
                "site": st.site,
                "patient": f"{issuer}/{pid}",
                "status": row.status,
                "viewer_url": f"/app/study.html?study={st.study_uid}",
            }
        )
    s.flush()
    return out


def mark_prefetch(s: Session, request_id: int, job_id: str) -> None:
    """Record that the patient's remote studies were asked for (job ``job_id``) on the priors listed so far."""
    for row in s.execute(select(PriorStudy).where(PriorStudy.request_id == request_id)).scalars():
        row.status = PREFETCH_REQUESTED
    s.flush()
