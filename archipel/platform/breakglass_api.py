"""HTTP routes for break-the-glass: open an emergency access (recent login and a reason required), list and end
one's own. Opening is checked by ``access`` (kind ``break-glass``), audited with purpose ``break-glass``, and
alerts the patient's treating and referring doctors at once.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel, Field

from archipel.platform import access, audit, breakglass, notify
from archipel.platform.authn import Principal
from archipel.platform.consent_api import master_or_404
from archipel.platform.credentials import (
    PrincipalDep,
    RuntimeDep,
    client_address,
    require_recent_auth,
)
from archipel.platform.http import guard_patient_record
from archipel.platform.runtime import Runtime

log = logging.getLogger("archipel.access")

router = APIRouter(prefix="/api/break-glass", tags=["break-glass"])


class BreakGlassBody(BaseModel):
    """Which patient (master id) and why."""

    master_id: int
    reason: str = Field(min_length=1, max_length=2000)


def recent_login(request: Request, rt: Runtime, principal: Principal) -> Principal:
    """The principal, if it logged in within ``settings.break_glass_reauth_seconds``; else 401 with the RFC 9470
    challenge (see ``credentials.require_recent_auth``)."""
    return require_recent_auth(rt.settings.break_glass_reauth_seconds)(request, rt, principal)


def _row(r: breakglass.BreakGlassAccess) -> dict[str, Any]:
    return {
        "id": r.id,
        "master_id": r.master_id,
        "reason": r.reason,
        "started_at": r.started_at.isoformat(),
        "expires_at": r.expires_at.isoformat(),
        "alerted": [a for a in r.alerted.split(",") if a],
    }


@router.post("", status_code=status.HTTP_201_CREATED)
def open_break_glass(
    body: BreakGlassBody, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Open a time-limited emergency access to one patient; the treating and referring doctors are alerted.

    The role is checked (and audited) first: a role that may never break the glass gets 403, not a request to
    log in again. Then the login must be recent (401 otherwise), and the patient known (404).
    """
    resource = access.Resource(
        kind=access.BREAK_GLASS, master=body.master_id, ident=f"patient {body.master_id}"
    )
    guard_patient_record(rt, principal, access.CREATE, resource, request)
    recent_login(request, rt, principal)
    master_or_404(rt, body.master_id)
    now = rt.clock()
    try:
        with rt.db.write() as s:
            opened = breakglass.open_access(
                s,
                principal,
                body.master_id,
                body.reason,
                now=now,
                minutes=rt.settings.break_glass_minutes,
                source=client_address(request),
            )
    except breakglass.BreakGlassError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
    audit.record(
        rt.db,
        principal,
        audit.PATIENT_RECORD,
        "break-glass-open",
        obj=f"emergency access {opened.id} to patient {body.master_id} until {opened.expires_at.isoformat()}",
        source=client_address(request),
        purpose=breakglass.PURPOSE,
        detail=f"reason: {body.reason.strip()}; alerted: {len(opened.alerted)}",
    )
    log.info(
        "event=break_glass_opened id=%d actor=%s master=%d alerted=%d",
        opened.id,
        principal.subject,
        body.master_id,
        len(opened.alerted),
    )
    _deliver(rt)
    return {
        "id": opened.id,
        "master_id": opened.master_id,
        "started_at": opened.started_at.isoformat(),
        "expires_at": opened.expires_at.isoformat(),
        "alerted": opened.alerted,
    }


def _deliver(rt: Runtime) -> None:
    try:
        notify.deliver_now(rt.db, rt.settings)
    except Exception:  # the alert stays in the outbox for the next delivery round
        log.exception("event=break_glass_alert_delivery_failed")


@router.get("")
def my_accesses(rt: RuntimeDep, principal: PrincipalDep) -> list[dict[str, Any]]:
    """The caller's emergency accesses in force."""
    with rt.db.sessions() as s:
        return [_row(r) for r in breakglass.accesses_of(s, principal.subject, rt.clock())]


@router.post("/{access_id}/end")
def end_break_glass(
    access_id: int, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """End one's own emergency access before it expires."""
    try:
        with rt.db.write() as s:
            breakglass.end_access(s, principal, access_id, rt.clock())
    except breakglass.BreakGlassError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    audit.record(
        rt.db,
        principal,
        audit.PATIENT_RECORD,
        "break-glass-end",
        obj=f"emergency access {access_id}",
        source=client_address(request),
        purpose=breakglass.PURPOSE,
    )
    return {"id": access_id, "ended": True}
