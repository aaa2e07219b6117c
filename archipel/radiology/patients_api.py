"""A patient's record by master patient: the master with its local identities, and its studies at every site.

A master patient (MPI) gathers the local identities of one person across sites; its studies are those of every
patient ``(issuer, PatientID)`` linked to it, joined at query time, so that a link, a merge or an unmerge shows
at once (after an unmerge, each master lists exactly its own studies again). A master merged into another
answers for the one it was merged into. Which studies a caller sees is decided inside the SQL by the access
policy's read scope (sites, care relationships, consent, confidentiality).
"""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from sqlalchemy import and_, select

from archipel.platform import access, access_facts, audit
from archipel.platform.authn import Principal
from archipel.platform.http import PrincipalDep, RuntimeDep, guard
from archipel.platform.identity import records
from archipel.platform.identity.intake import IdentityNotFound
from archipel.platform.identity.models import LocalIdentity
from archipel.platform.runtime import Runtime
from archipel.radiology import visibility
from archipel.radiology.models import Patient, Study

router = APIRouter(prefix="/api/patients", tags=["patients"])

_RECORD_FIELDS = ("issuer", "local_id", "birth_name", "used_name", "given_names", "birth_date", "sex", "ins")


def _current(rt: Runtime, master_id: int) -> records.MasterRecord:
    """Master ``master_id``, or the master it was merged into; 404 if there is none."""
    try:
        record = records.master_record(rt.db, master_id, officer=False)
        seen = {master_id}
        while not record.active and record.merged_into is not None and record.merged_into not in seen:
            seen.add(record.merged_into)
            record = records.master_record(rt.db, record.merged_into, officer=False)
    except IdentityNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    return record


def _check(
    rt: Runtime, principal: Principal, master_id: int, event_type: str, request: Request
) -> access.Facts:
    """Run the policy on the master's record; return the facts for the read scope.

    A master spans sites: to a professional of a site that holds one of its identities, the record is at
    that site (the "producing site" rule applies); elsewhere a care relationship (or break-the-glass) is needed.
    """
    resource, facts = access_facts.load(rt.db, principal, access.Resource(kind="patient", master=master_id))
    site = principal.site if principal.kind == "user" and principal.site not in ("", "*") else ""
    if site and site in facts.patient_sites:
        resource = replace(resource, site=site)
    guard(rt, principal, access.READ, resource, event_type=event_type, request=request, facts=facts)
    return facts


@router.get("/{master_id}")
def get_patient(master_id: int, request: Request, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """The master patient and its local identities (names, birth date, sex; the INS only when qualified)."""
    _check(rt, principal, master_id, audit.PATIENT_RECORD, request)
    record = _current(rt, master_id)
    return {
        "master_id": record.master_id,
        "requested_master_id": master_id,
        "identities": [
            {**{k: v for k, v in asdict(i).items() if k in _RECORD_FIELDS}, "link_status": i.status}
            for i in record.identities
        ],
    }


@router.get("/{master_id}/studies")
def get_patient_studies(
    master_id: int, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """The studies of every local identity linked to the master, at every site, newest first (only those
    the caller may see)."""
    facts = _check(rt, principal, master_id, audit.QUERY, request)
    record = _current(rt, master_id)
    scope = access.read_scope(principal, facts)
    stmt = (
        select(Study, Patient.issuer, Patient.patient_id)
        .join(Patient, Patient.id == Study.patient_pk)
        .join(
            LocalIdentity,
            and_(LocalIdentity.issuer == Patient.issuer, LocalIdentity.local_id == Patient.patient_id),
        )
        .where(LocalIdentity.master_id == record.master_id, visibility.condition(scope))
        .order_by(Study.study_date.desc(), Study.study_time.desc(), Study.id.desc())
    )
    with rt.db.sessions() as s:
        rows = s.execute(stmt).all()
    studies = [
        {
            "study_uid": st.study_uid,
            "study_date": st.study_date,
            "study_time": st.study_time,
            "accession_number": st.accession_number,
            "description": st.description,
            "modalities": [m for m in st.modalities.split("\\") if m],
            "site": st.site,
            "issuer": issuer,
            "patient_id": patient_id,
        }
        for st, issuer, patient_id in rows
    ]
    return {"master_id": record.master_id, "requested_master_id": master_id, "studies": studies}
