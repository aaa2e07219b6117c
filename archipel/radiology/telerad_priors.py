"""Priors of a reading request: the patient's other studies at every site, found through the master patient index
and limited, inside the SQL, to what the reader may see (a claim gives a reading assignment, so a claim holder
sees the patient's studies wherever they were produced).

Each listing is recorded on the request (:class:`PriorStudy`), once per study, so that the worklist can tell the
reader which priors exist before they open the viewer. A new claim also asks the region's other PACS for the
patient's studies (:func:`request_remote_priors`: a prefetch job of :mod:`archipel.radiology.prefetch`, recorded
on the request). The studies that job finds at a remote node are priors of the request too, with a status that
follows the job: ``prefetch-requested`` while that node is being worked, ``available`` once the study is here
(it opens in the viewer), ``failed`` when that node's fetch failed (with its reason). A prior that was here
already when first listed stays ``listed``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from archipel.platform.access import ReadScope
from archipel.platform.authn import Principal
from archipel.platform.identity.models import LocalIdentity
from archipel.platform.runtime import Runtime
from archipel.radiology import prefetch, telerad, visibility
from archipel.radiology import tumorboard_models as m
from archipel.radiology.models import DicomNode, Patient, Study
from archipel.radiology.telerad_models import PriorStudy, ReadingRequest

log = logging.getLogger("archipel.telerad")

LISTED, PREFETCH_REQUESTED, AVAILABLE, FAILED = "listed", "prefetch-requested", "available", "failed"
#: States of a prefetch node run that is not done yet.
_WORKING = frozenset({m.QUEUED, m.QUERYING, m.FOUND, m.RETRIEVING})


@dataclass(frozen=True)
class RemotePrior:
    """A study that the request's prefetch found at a remote node, and where that node's run stands."""

    site: str
    patient: str
    node_state: str
    reason: str
    #: Who asked for the prefetch: the only one shown the priors not here yet (nothing else may be known of them).
    requested_by: str


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


def remote_priors(s: Session, req: ReadingRequest) -> dict[str, RemotePrior]:
    """The studies found at each remote node by the request's last prefetch job, by Study Instance UID."""
    if not req.prefetch_job_id:
        return {}
    rows = s.execute(
        select(m.PrefetchNodeStatus, DicomNode.site, m.PrefetchRequest.requested_by)
        .join(m.PrefetchRequest, m.PrefetchRequest.id == m.PrefetchNodeStatus.request_id)
        .join(DicomNode, DicomNode.id == m.PrefetchNodeStatus.node_pk)
        .where(m.PrefetchRequest.job_id == req.prefetch_job_id)
        .order_by(DicomNode.id)
    ).all()
    out: dict[str, RemotePrior] = {}
    for node, site, by in rows:
        for study_uid in json.loads(node.study_uids or "[]"):
            out.setdefault(
                study_uid, RemotePrior(site, f"{site}/{node.patient_id}", node.state, node.reason, by)
            )
    return out


def prior_status(remote: RemotePrior | None, here: bool, before: str | None) -> str:
    """A prior's status from what the prefetch says of it, whether it is in this archive, and its status so far."""
    if remote is None or before == LISTED:
        return before or LISTED
    if remote.node_state == m.FAILED:
        return FAILED
    if here and remote.node_state not in _WORKING:
        return AVAILABLE
    return PREFETCH_REQUESTED


def record_priors(
    s: Session, req: ReadingRequest, scope: ReadScope, now: datetime, viewer: str = ""
) -> list[dict[str, Any]]:
    """List the priors, record the new ones on the request and bring the others' status up to date; returns them
    as the API shows them: the studies here that ``scope`` lets be seen, newest first, then (for ``viewer``,
    when they asked for the prefetch) the ones the prefetch found elsewhere that are not here yet."""
    found = find_priors(s, req, scope)
    remote = remote_priors(s, req)
    known = {
        p.study_uid: p for p in s.execute(select(PriorStudy).where(PriorStudy.request_id == req.id)).scalars()
    }
    out: list[dict[str, Any]] = []
    for st, issuer, pid in found:
        row = known.get(st.study_uid)
        status = prior_status(remote.get(st.study_uid), True, row.status if row is not None else None)
        if row is None:
            row = PriorStudy(request_id=req.id, study_uid=st.study_uid, listed_at=now)
            s.add(row)
        row.site, row.study_date, row.modalities, row.description = (
            st.site,
            st.study_date,
            st.modalities,
            st.description,
        )
        row.status = status
        out.append(
            {
                "study_uid": st.study_uid,
                "study_date": st.study_date,
                "description": st.description,
                "modalities": [x for x in st.modalities.split("\\") if x],
                "site": st.site,
                "patient": f"{issuer}/{pid}",
                "status": status,
                "reason": "",
                "viewer_url": f"/app/study.html?study={st.study_uid}",
            }
        )
    shown = {p["study_uid"] for p in out}
    for study_uid, prior in remote.items():
        row = known.get(study_uid)
        if study_uid in shown or study_uid == req.study_uid or prior.requested_by != viewer:
            continue
        if row is not None and row.status == LISTED:
            continue  # here when listed, not visible to this caller now
        status = prior_status(prior, False, row.status if row is not None else None)
        if row is None:
            row = PriorStudy(
                request_id=req.id,
                study_uid=study_uid,
                site=prior.site,
                study_date="",
                modalities="",
                description="",
                listed_at=now,
            )
            s.add(row)
        row.status = status
        out.append(
            {
                "study_uid": study_uid,
                "study_date": row.study_date,
                "description": row.description,
                "modalities": [x for x in row.modalities.split("\\") if x],
                "site": prior.site,
                "patient": prior.patient,
                "status": status,
                "reason": prior.reason if status == FAILED else "",
                "viewer_url": "",
            }
        )
    s.flush()
    return out


def mark_prefetch(s: Session, request_id: int, job_id: str) -> None:
    """Record the prefetch job ``job_id`` on the request: the studies it finds become priors of the request."""
    telerad.get_for_update(s, request_id).prefetch_job_id = job_id
    s.flush()


def request_remote_priors(rt: Runtime, principal: Principal, req: ReadingRequest) -> str:
    """Ask the region's other PACS for the patient's studies (:func:`prefetch.request_patient_prefetch`, run as
    ``principal``, audited) and record the job on the request; returns the prefetch job's id. Raises
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
