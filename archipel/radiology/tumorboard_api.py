"""HTTP API of tumor boards (RCP): sessions, registered patients and the status of their prefetch.

Every route asks the access policy about the session (its organising site's clinical professionals); a
registration, or a new prefetch run, also asks for a read of the patient's record.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel, Field

from archipel.platform import access, audit
from archipel.platform.authn import Principal
from archipel.platform.http import PrincipalDep, RuntimeDep, client_address, guard
from archipel.platform.runtime import Runtime
from archipel.radiology import prefetch, tumorboard
from archipel.radiology import tumorboard_models as m

router = APIRouter(prefix="/api/tumor-boards", tags=["tumor boards"])


class SessionIn(BaseModel):
    """A new tumor board session."""

    title: str = Field(min_length=1, max_length=200)
    scheduled_at: datetime
    place: str = Field(default="", max_length=200)
    destination: str = Field(
        default=m.VIEWER, max_length=16, description="'viewer' or a DICOM node's AE title"
    )


class PatientIn(BaseModel):
    """A patient to register, and which of their studies matter."""

    master_id: int
    reason: str = Field(default="", max_length=2000)
    modalities: list[str] = Field(default_factory=list, max_length=16)
    date_from: str = Field(default="", pattern=r"^(\d{8})?$")
    date_to: str = Field(default="", pattern=r"^(\d{8})?$")


def _site(principal: Principal) -> str:
    return "" if principal.site in ("", "*") else principal.site


def _session(rt: Runtime, session_id: int) -> m.TumorBoardSession:
    try:
        return tumorboard.get_session(rt.db, session_id)
    except tumorboard.TumorBoardError as exc:
        raise HTTPException(exc.status, exc.reason) from exc


def _guard(rt: Runtime, principal: Principal, action: str, site: str, request: Request, event: str) -> None:
    guard(rt, principal, action, tumorboard.resource(site), event_type=event, request=request)


@router.get("")
def list_sessions(request: Request, rt: RuntimeDep, principal: PrincipalDep) -> list[dict[str, Any]]:
    """The sessions of the caller's site, soonest first."""
    _guard(rt, principal, access.SEARCH, _site(principal), request, audit.QUERY)
    return tumorboard.list_sessions(rt.db, _site(principal))


@router.post("", status_code=status.HTTP_201_CREATED)
def create_session(
    body: SessionIn, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Create a session of the caller's site: its date, place and destination (our viewer or a DICOM node)."""
    _guard(rt, principal, access.CREATE, _site(principal), request, audit.PATIENT_RECORD)
    try:
        new = tumorboard.NewSession(body.title, body.scheduled_at, body.place, body.destination or m.VIEWER)
        session_id = tumorboard.create_session(rt.db, principal, new)
    except tumorboard.TumorBoardError as exc:
        raise HTTPException(exc.status, exc.reason) from exc
    return tumorboard.session_detail(rt.db, session_id)


@router.get("/{session_id}")
def get_session(session_id: int, request: Request, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """The session with its patients and the status of each one's prefetch (per node)."""
    session = _session(rt, session_id)
    _guard(rt, principal, access.READ, session.site, request, audit.QUERY)
    return tumorboard.session_detail(rt.db, session_id)


@router.post("/{session_id}/patients", status_code=status.HTTP_201_CREATED)
def register_patient(
    session_id: int, body: PatientIn, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Register a master patient to the session; their prefetch starts at once. 409 if registered already."""
    session = _session(rt, session_id)
    _guard(rt, principal, access.UPDATE, session.site, request, audit.PATIENT_RECORD)
    try:
        return tumorboard.register_patient(
            rt.db,
            principal,
            session_id,
            body.master_id,
            reason=body.reason,
            modalities=body.modalities,
            date_from=body.date_from,
            date_to=body.date_to,
        )
    except tumorboard.TumorBoardError as exc:
        raise HTTPException(exc.status, exc.reason) from exc
    except prefetch.PrefetchError as exc:
        code = status.HTTP_404_NOT_FOUND if str(exc).startswith("no master") else status.HTTP_400_BAD_REQUEST
        raise HTTPException(code, str(exc)) from exc
    except access.AccessDenied as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, exc.reason) from exc


@router.post("/{session_id}/patients/{patient_id}/prefetch", status_code=status.HTTP_202_ACCEPTED)
def prefetch_again(
    session_id: int, patient_id: int, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Run the patient's prefetch again now (unless one is queued or running); the patient entry."""
    session = _session(rt, session_id)
    _guard(rt, principal, access.UPDATE, session.site, request, audit.PATIENT_RECORD)
    try:
        entry = tumorboard.patient_entry(rt.db, patient_id)
        if entry["session_id"] != session_id:
            raise tumorboard.TumorBoardError(
                f"patient {patient_id} is not registered to session {session_id}", 404
            )
        prefetch.authorize(rt.db, principal, int(entry["master_id"]), source=client_address(request))
        tumorboard.rerun(rt.db, principal, patient_id)
    except tumorboard.TumorBoardError as exc:
        raise HTTPException(exc.status, exc.reason) from exc
    except access.AccessDenied as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, exc.reason) from exc
    return tumorboard.patient_entry(rt.db, patient_id)
