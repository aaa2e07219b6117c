"""HTTP routes under ``/api/hl7`` for administrators: the registered senders and the dead-letter list.

Every route asks the access policy for ``administer`` on the platform (administrators only), audited. Showing a
dead letter and replaying it touch patient data (the raw message names the patient): they are audited as
Patient Record events; listing shows only sender, type, control id and reason.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel, Field

from archipel.platform import access, audit
from archipel.platform.authn import Principal
from archipel.platform.credentials import PrincipalDep, RuntimeDep, client_address
from archipel.platform.http import guard
from archipel.platform.runtime import Runtime
from archipel.radiology.hl7 import deadletter
from archipel.radiology.hl7.sources import SourceError, add_source, list_sources

router = APIRouter(prefix="/api/hl7", tags=["hl7"])


class SourceBody(BaseModel):
    """A sender to accept: its facility (MSH-4), optionally one application (MSH-3), and its site."""

    facility: str = Field(min_length=1, max_length=64)
    site: str = Field(min_length=1, max_length=64)
    application: str = Field(default="", max_length=64)


def _admin(
    rt: Runtime, principal: Principal, request: Request, what: str, event_type: str = audit.SECURITY_ALERT
) -> None:
    resource = access.Resource(kind="platform", ident=what)
    guard(rt, principal, access.ADMINISTER, resource, event_type=event_type, request=request)


@router.get("/sources")
def get_sources(request: Request, rt: RuntimeDep, principal: PrincipalDep) -> list[dict[str, str]]:
    """The registered senders and their sites."""
    _admin(rt, principal, request, "hl7 sources", audit.QUERY)
    return [s.__dict__ for s in list_sources(rt.db)]


@router.post("/sources", status_code=status.HTTP_201_CREATED)
def post_source(
    body: SourceBody, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, str]:
    """Accept messages from a RIS as coming from a site (changes the site of a known sender)."""
    _admin(rt, principal, request, f"hl7 source {body.facility}/{body.application}")
    try:
        return add_source(rt.db, body.facility, body.site, body.application).__dict__
    except (SourceError, ValueError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc


@router.get("/dead-letters")
def get_dead_letters(
    request: Request, rt: RuntimeDep, principal: PrincipalDep, state: str = "open", limit: int = 200
) -> list[dict[str, Any]]:
    """Dead letters, newest first: ``state`` open (default), resolved or all."""
    if state not in ("open", "resolved", "all"):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"state {state!r} is not open, resolved or all"
        )
    _admin(rt, principal, request, "hl7 dead letters", audit.QUERY)
    letters = deadletter.list_dead_letters(rt.db, None if state == "all" else state, limit)
    return [d.as_dict() for d in letters]


def _letter(rt: Runtime, dead_id: int) -> tuple[deadletter.DeadLetter, bytes]:
    try:
        return deadletter.get_dead_letter(rt.db, dead_id)
    except deadletter.DeadLetterNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc


@router.get("/dead-letters/{dead_id}")
def get_dead_letter(
    dead_id: int, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """One dead letter with its message as received (text, segments on their own lines)."""
    _admin(rt, principal, request, f"hl7 dead letter {dead_id}", audit.PATIENT_RECORD)
    letter, raw = _letter(rt, dead_id)
    corrected = deadletter.get_correction(rt.db, dead_id)
    return {
        **letter.as_dict(),
        "message": deadletter.readable(raw),
        "size": len(raw),
        "corrected_message": deadletter.readable(corrected) if corrected is not None else None,
    }


class CorrectionBody(BaseModel):
    """The corrected message: segments on their own lines, as ``message`` shows them."""

    message: str = Field(min_length=1, max_length=32 * 1024 * 1024)


@router.put("/dead-letters/{dead_id}/message")
def put_dead_letter_message(
    dead_id: int, body: CorrectionBody, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Correct a dead letter's message before replaying it (audited; the message as received is kept): 422
    for a text that is not a readable HL7 message, 409 for a resolved letter."""
    _admin(rt, principal, request, f"hl7 dead letter {dead_id} correction", audit.PATIENT_RECORD)
    _letter(rt, dead_id)
    try:
        letter = deadletter.correct(rt.db, dead_id, body.message, principal, source=client_address(request))
    except deadletter.CorrectionInvalid as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    except deadletter.AlreadyResolved as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    return letter.as_dict()


@router.post("/dead-letters/{dead_id}/replay")
def replay_dead_letter(
    dead_id: int, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Apply a dead letter again after a fix (its correction, if it has one): ``AA`` resolves it; a new refusal
    keeps it open with its reason (answered 200 with ``accepted: false``); replaying a resolved one, or a
    truncated one not corrected, is 409."""
    _admin(rt, principal, request, f"hl7 dead letter {dead_id} replay", audit.PATIENT_RECORD)
    _letter(rt, dead_id)
    try:
        result = deadletter.replay(rt, dead_id, principal.subject)
    except deadletter.AlreadyResolved as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    except deadletter.NeedsCorrection as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    return {
        "id": dead_id,
        "accepted": result.code == "AA",
        "ack_code": result.code,
        "reason": result.reason,
        "duplicate": result.duplicate,
    }
