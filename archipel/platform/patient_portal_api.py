"""The patient portal's own routes: who is signed in, and their released record.

A patient principal (signed in with the access code and a one-time code, see ``patient_api``) is named by
``ISSUER/PATIENT_ID``; the portal finds the master patient it belongs to in the MPI and reads the record through
the portal registry (``platform.portal``) with ``released_only=True``: the items each module marks as released
(a final report, a signed frozen-section verdict, a sent screening letter). Consent (``consent_api``) and the
access log (``audit_api``) have their own routes; downloads of images live in ``radiology.patient_download``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, status

from archipel.platform import access, access_facts, audit, portal
from archipel.platform.authn import Principal
from archipel.platform.credentials import PrincipalDep, RuntimeDep
from archipel.platform.http import guard
from archipel.platform.runtime import Runtime

router = APIRouter(prefix="/api/patient", tags=["patient"])

NOT_A_PATIENT = "this route is for patients signed in with their access code; professionals use /api/patients"
NOT_INDEXED = "your record is not yet in the patient index"


def own_master(rt: Runtime, principal: Principal) -> int:
    """The master patient of a signed-in patient; 403 for any other principal, 404 if the MPI does not know
    them yet."""
    if principal.kind != "patient":
        raise HTTPException(status.HTTP_403_FORBIDDEN, NOT_A_PATIENT)
    with rt.db.sessions() as s:
        master = access_facts.master_of_ref(s, principal.subject)
    if master is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_INDEXED)
    return master


def checked_record(
    rt: Runtime, principal: Principal, request: Request, event_type: str = audit.PATIENT_RECORD
) -> tuple[int, access.Facts]:
    """The caller's own master and the policy's facts, after the policy allowed (and audited, as
    ``event_type``: a Patient Record event by default) reading their record."""
    master = own_master(rt, principal)
    resource, facts = access_facts.load(
        rt.db,
        principal,
        access.Resource(kind="patient", patient=principal.subject, master=master, ident="own record"),
        rt.clock(),
    )
    guard(rt, principal, access.READ, resource, event_type=event_type, request=request, facts=facts)
    return master, facts


@router.get("/me")
def who_am_i(rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """The signed-in patient: their reference, whether they hold the code as patient or legal representative,
    and whether the patient index knows them (``master_id`` is then set)."""
    if principal.kind != "patient":
        raise HTTPException(status.HTTP_403_FORBIDDEN, NOT_A_PATIENT)
    with rt.db.sessions() as s:
        master = access_facts.master_of_ref(s, principal.subject)
    return {"patient": principal.subject, "role": principal.role, "master_id": master}


@router.get("/record")
def read_released_record(request: Request, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """The signed-in patient's released results, newest first: studies, reports, frozen-section verdicts and
    screening results, from every module that provides them, each with the links that open it."""
    master, facts = checked_record(rt, principal, request)
    items = portal.record(rt.db, principal, master, facts, released_only=True)
    return {
        "patient": principal.subject,
        "master_id": master,
        "kinds": portal.registered_kinds(),
        "items": [i.as_dict() for i in items],
    }
