"""HTTP routes for consent: professionals and admins record a patient's decision taken on paper or by voice;
patients give, withdraw and give again their own through the portal. Every read and change is checked by
``access`` (kind ``consent``) and audited as a Patient Record event, before the patient is even looked up (so
that probing unknown ids is audited too).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel, Field

from archipel.platform import access, access_facts, consent
from archipel.platform.authn import Principal
from archipel.platform.credentials import PrincipalDep, RuntimeDep
from archipel.platform.http import guard_patient_record
from archipel.platform.identity.models import MasterPatient
from archipel.platform.runtime import Runtime

router = APIRouter(prefix="/api", tags=["consent"])


class ConsentBody(BaseModel):
    """A sharing decision recorded by a professional: granted or refused, and how it was given."""

    sharing: Literal["granted", "refused"]
    method: Literal["paper", "verbal", "electronic-form"]
    note: str = Field(default="", max_length=2000)


class PatientConsentBody(BaseModel):
    """A patient's own decision, given through the portal."""

    sharing: Literal["granted", "refused"]
    note: str = Field(default="", max_length=2000)


def master_or_404(rt: Runtime, master_id: int) -> None:
    """404 for a master patient the MPI does not know; 409 for one merged into another (name the target)."""
    with rt.db.sessions() as s:
        master = s.get(MasterPatient, master_id)
    if master is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no master patient {master_id}")
    if not master.active:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"master patient {master_id} was merged into {master.merged_into}"
        )


def _decision(d: consent.Decision) -> dict[str, Any]:
    return {
        "id": d.id,
        "sharing": d.sharing,
        "method": d.method,
        "recorded_by": d.recorded_by,
        "recorded_by_role": d.recorded_by_role,
        "at": d.at.isoformat(),
        "note": d.note,
    }


def _state(rt: Runtime, master_id: int) -> dict[str, Any]:
    with rt.db.sessions() as s:
        group = sorted(consent.merged_groups(s, {master_id}))
        return {
            "master_id": master_id,
            "sharing": consent.current(s, master_id),
            "history": [_decision(d) for d in consent.history(s, group)],
        }


def _checked(
    rt: Runtime, principal: Principal, action: str, master_id: int, request: Request, obj: str
) -> None:
    resource = access.Resource(kind=access.CONSENT, master=master_id, ident=obj)
    guard_patient_record(rt, principal, action, resource, request)


def _record(
    rt: Runtime, principal: Principal, master_id: int, sharing: str, method: str, note: str, at: datetime
) -> dict[str, Any]:
    try:
        with rt.db.write() as s:
            d = consent.record(
                s,
                master_id,
                sharing,
                method,
                recorded_by=principal.subject,
                recorded_by_role=principal.role,
                note=note,
                at=at,
            )
    except consent.ConsentError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
    return {"decision": _decision(d), **_state(rt, master_id)}


@router.get("/patients/{master_id}/consent")
def read_consent(master_id: int, request: Request, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """The sharing decision in force for a master patient and its full history."""
    _checked(rt, principal, access.READ, master_id, request, f"consent of {master_id}")
    master_or_404(rt, master_id)
    return _state(rt, master_id)


@router.post("/patients/{master_id}/consent", status_code=status.HTTP_201_CREATED)
def record_consent(
    master_id: int, body: ConsentBody, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Record a decision given on paper, by voice or on an electronic form (a new entry; nothing is overwritten)."""
    obj = f"consent of {master_id}: sharing={body.sharing} method={body.method}"
    _checked(rt, principal, access.UPDATE, master_id, request, obj)
    master_or_404(rt, master_id)
    return _record(rt, principal, master_id, body.sharing, body.method, body.note, rt.clock())


def _own_master(rt: Runtime, principal: Principal) -> int:
    if principal.kind != "patient":
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "this route is for patients; professionals use /api/patients"
        )
    with rt.db.sessions() as s:
        master = access_facts.master_of_ref(s, principal.subject)
    if master is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "your record is not yet in the patient index")
    return master


@router.get("/patient/consent", tags=["patient"])
def read_own_consent(request: Request, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """The patient's own sharing decision and its history."""
    master_id = _own_master(rt, principal)
    _checked(rt, principal, access.READ, master_id, request, "own consent")
    return _state(rt, master_id)


@router.post("/patient/consent", status_code=status.HTTP_201_CREATED, tags=["patient"])
def record_own_consent(
    body: PatientConsentBody, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Give, withdraw or give again one's consent to sharing, through the portal."""
    master_id = _own_master(rt, principal)
    _checked(rt, principal, access.UPDATE, master_id, request, f"own consent: sharing={body.sharing}")
    return _record(rt, principal, master_id, body.sharing, "portal", body.note, rt.clock())
