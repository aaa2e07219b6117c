"""HTTP routes for staff to hand out, list and revoke patients' portal access codes (``patient_codes``).

``POST /api/access-codes`` answers the new code once; ``GET /api/access-codes?patient=...`` lists a patient's
codes without them; ``POST /api/access-codes/{id}/revoke`` ends the code and its portal sessions at once.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel, Field, model_validator

from archipel.platform import access, patient_codes
from archipel.platform.credentials import PrincipalDep, RuntimeDep, client_address
from archipel.platform.patient_access import LEGAL_REPRESENTATIVE, PATIENT
from archipel.platform.patient_codes import CodeError, PatientName

router = APIRouter(prefix="/api/access-codes", tags=["patient"])


class IssueBody(BaseModel):
    """The patient (``patient``: a master id or ``ISSUER/PATIENT_ID``, or ``issuer`` and ``patient_id``), where
    one-time codes go (exactly one of ``email`` and ``phone``), how long the code lasts, and who holds it."""

    patient: int | str | None = None
    issuer: str = Field(default="", max_length=64)
    patient_id: str = Field(default="", max_length=64)
    email: str = Field(default="", max_length=255)
    phone: str = Field(default="", max_length=32)
    days: int | None = Field(default=None, ge=1, le=366)
    holder: Literal["patient", "legal-representative"] = "patient"

    @model_validator(mode="after")
    def _one_patient_one_contact(self) -> IssueBody:
        if (self.patient is not None) == bool(self.issuer or self.patient_id):
            raise ValueError("name the patient once: patient, or issuer and patient_id")
        if self.patient is None and not (self.issuer.strip() and self.patient_id.strip()):
            raise ValueError("issuer and patient_id go together")
        if bool(self.email.strip()) == bool(self.phone.strip()):
            raise ValueError("give exactly one of email or phone, where one-time codes go")
        return self

    def name(self) -> PatientName:
        """The patient named."""
        text = str(self.patient) if self.patient is not None else f"{self.issuer}/{self.patient_id}"
        return PatientName.parse(text)


class RevokeBody(BaseModel):
    """Why the code is revoked (kept with the code and in the audit trail)."""

    reason: str = Field(min_length=1, max_length=500, pattern=r"\S")


def _http(exc: CodeError) -> HTTPException:
    return HTTPException(exc.status, exc.reason)


def _patient(text: str) -> PatientName:
    try:
        return PatientName.parse(text)
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc


@router.post("", status_code=status.HTTP_201_CREATED)
def issue_code(body: IssueBody, request: Request, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """Issue an access code for the patient and answer it once (only its hash is kept), with its expiry."""
    try:
        name = body.name()
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    now = rt.clock()
    try:
        issued = patient_codes.issue(
            rt.db,
            principal,
            name,
            "email" if body.email.strip() else "sms",
            body.email.strip() or body.phone.strip(),
            valid_for=timedelta(days=body.days if body.days is not None else rt.settings.patient_code_days),
            now=now,
            holder=LEGAL_REPRESENTATIVE if body.holder == LEGAL_REPRESENTATIVE else PATIENT,
            source=client_address(request),
        )
    except access.AccessDenied as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, exc.reason) from exc
    except CodeError as exc:
        raise _http(exc) from exc
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    return {"code": issued.code, **issued.info.as_dict(now)}


@router.get("")
def list_codes(patient: str, request: Request, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """The patient's access codes, newest first: issued at and by, expiry, last sign-in, revocation; never the
    code itself."""
    name = _patient(patient)
    now = rt.clock()
    try:
        codes = patient_codes.list_codes(rt.db, principal, name, now=now, source=client_address(request))
    except access.AccessDenied as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, exc.reason) from exc
    except CodeError as exc:
        raise _http(exc) from exc
    return {"patient": str(name), "codes": [c.as_dict(now) for c in codes]}


@router.post("/{code_id}/revoke")
def revoke_code(
    code_id: int, body: RevokeBody, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Revoke the code at once: it opens no new session, and the portal sessions opened with it end (their
    next request is 401). 404 for an unknown code, 409 for one already revoked."""
    now = rt.clock()
    try:
        info, ended = patient_codes.revoke(
            rt.db, principal, code_id, body.reason, now=now, source=client_address(request)
        )
    except access.AccessDenied as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, exc.reason) from exc
    except CodeError as exc:
        raise _http(exc) from exc
    return {**info.as_dict(now), "sessions_ended": ended}
