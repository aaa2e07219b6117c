"""HTTP routes for care relationships: list a patient's, record one, end one.

Who may record or end one (``access``, kind ``care``): an admin (e.g. organising a tumor board), or a
professional of a site that holds an identity of the patient in the MPI; a professional may also end their
own. Patients see their care team. Every read and change is audited as a Patient Record event.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel, Field, model_validator

from archipel.platform import access, audit, care
from archipel.platform.authn import Principal
from archipel.platform.consent_api import master_or_404
from archipel.platform.credentials import PrincipalDep, RuntimeDep
from archipel.platform.http import guard_patient_record
from archipel.platform.runtime import Runtime

router = APIRouter(prefix="/api", tags=["care"])

Kind = Literal[
    "care-team", "treating", "referring", "reading-assignment", "frozen-section-request", "tumor-board"
]


class CareBody(BaseModel):
    """A care relationship to record: the professional (user name), its kind and period."""

    professional: str = Field(min_length=1, max_length=128)
    kind: Kind
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    named_by_patient: bool = False
    context: str = Field(default="", max_length=200)

    @model_validator(mode="after")
    def _aware(self) -> CareBody:
        for name in ("valid_from", "valid_to"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"{name} needs a time zone (e.g. 2026-01-31T08:00:00Z)")
        return self


def _row(r: care.CareRelationship) -> dict[str, Any]:
    return {
        "id": r.id,
        "professional": r.professional,
        "master_id": r.master_id,
        "kind": r.kind,
        "valid_from": r.valid_from.isoformat(),
        "valid_to": r.valid_to.isoformat() if r.valid_to else None,
        "named_by_patient": r.named_by_patient,
        "context": r.context,
        "recorded_by": r.recorded_by,
        "ended_by": r.ended_by,
    }


def _checked(
    rt: Runtime, principal: Principal, action: str, master_id: int, request: Request, obj: str
) -> None:
    resource = access.Resource(kind=access.CARE, master=master_id, ident=obj)
    guard_patient_record(rt, principal, action, resource, request)


@router.get("/patients/{master_id}/care-relationships")
def list_relationships(
    master_id: int, request: Request, rt: RuntimeDep, principal: PrincipalDep, active: bool = False
) -> list[dict[str, Any]]:
    """A patient's care relationships (only those in force with ``active=true``), oldest first."""
    _checked(rt, principal, access.READ, master_id, request, f"care relationships of {master_id}")
    master_or_404(rt, master_id)
    with rt.db.sessions() as s:
        return [_row(r) for r in care.of_patient(s, [master_id], rt.clock() if active else None)]


@router.post("/patients/{master_id}/care-relationships", status_code=status.HTTP_201_CREATED)
def record_relationship(
    master_id: int, body: CareBody, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Record that a professional takes care of the patient, in what capacity and for what period."""
    obj = f"care relationship {body.kind} of {body.professional} with {master_id}"
    _checked(rt, principal, access.UPDATE, master_id, request, obj)
    master_or_404(rt, master_id)
    try:
        with rt.db.write() as s:
            row = care.record(
                s,
                body.professional,
                master_id,
                body.kind,
                recorded_by=principal.subject,
                valid_from=body.valid_from or rt.clock(),
                valid_to=body.valid_to,
                named_by_patient=body.named_by_patient,
                context=body.context,
            )
            return _row(row)
    except care.CareError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc


@router.post("/care-relationships/{relationship_id}/end")
def end_relationship(
    relationship_id: int, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """End a care relationship now: by whoever may record one for the patient, or by the professional."""
    with rt.db.sessions() as s:
        found = s.get(care.CareRelationship, relationship_id)
        master_id, professional = (found.master_id, found.professional) if found else (None, "")
    if master_id is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no care relationship {relationship_id}")
    obj = f"end care relationship {relationship_id}"
    if professional != principal.subject or principal.kind != "user":
        _checked(rt, principal, access.UPDATE, master_id, request, obj)
    else:
        audit.record(
            rt.db, principal, audit.PATIENT_RECORD, "update:care", obj=obj, detail="own relationship"
        )
    try:
        with rt.db.write() as s:
            return _row(care.end(s, relationship_id, ended_by=principal.subject, at=rt.clock()))
    except care.CareError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
