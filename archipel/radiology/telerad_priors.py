"""Priors of a reading request: the patient's other studies at every site, found through the master patient index
and limited, inside the SQL, to what the reader may see (a claim gives a reading assignment, so a claim holder
sees the patient's studies wherever they were produced).

Each listing is recorded on the request (:class:`PriorStudy`), once per study, so that the worklist can tell the
reader which priors exist before they open the viewer.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from archipel.platform.access import ReadScope
from archipel.platform.authn import Principal
from archipel.platform.identity.models import LocalIdentity
from archipel.platform.runtime import Runtime
from archipel.radiology import prefetch, visibility
from archipel.radiology.models import Patient, Study
from archipel.radiology.telerad_models import PriorStudy, ReadingRequest

log = logging.getLogger("archipel.telerad")

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


def request_remote_priors(rt: Runtime, principal: Principal, req: ReadingRequest) -> str:
    """Ask the region's other PACS for the patient's studies (:func:`prefetch.request_patient_prefetch`, run as
    ``principal``, audited) and mark the priors listed so far; returns the prefetch job's id. Raises
    ``access.AccessDenied`` or ``prefetch.PrefetchError``."""
    job_id = prefetch.request_patient_prefetch(
        rt.db, principal, req.master_id, reason=f"teleradiology request {req.id}"
    )
    with rt.db.write() as s:
        mark_prefetch(s, req.id, job_id)
    log.info("event=telerad_prefetch_requested request=%d job=%s", req.id, job_id)
    return job_id


def prefetch_after_claim(rt: Runtime, principal: Principal, request_id: int) -> None:
    """After a new claim: ask for the remote priors; a failure is logged (the reader can ask again)."""
    try:
        with rt.db.sessions() as s:
            req = s.get(ReadingRequest, request_id)
        if req is not None:
            request_remote_priors(rt, principal, req)
    except Exception:
        log.exception("event=telerad_prefetch_failed request=%d", request_id)
