"""The on-duty roster over HTTP: a pathologist puts themself on duty (an administrator may put a named
pathologist), everyone sees the roster, a shift is cancelled by its pathologist or an administrator.

A shift changes who may see frozen sections' slides (its pathologist gets a care relationship with the patient of
each open request, see :mod:`archipel.wsi.frozen`), so recording and cancelling one are audited.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel, ConfigDict, Field

from archipel.platform import audit
from archipel.platform.authn import Principal
from archipel.platform.http import PrincipalDep, RuntimeDep, client_address
from archipel.platform.runtime import Runtime
from archipel.wsi import duty, frozen

router = APIRouter(prefix="/api/duty", tags=["frozen sections"])


class ShiftBody(BaseModel):
    """A shift: its start and end (ISO 8601 with a time zone), and for an administrator the pathologist."""

    model_config = ConfigDict(extra="forbid")
    start: datetime
    end: datetime
    pathologist: str = Field(default="", max_length=128)


def _audit(
    rt: Runtime, principal: Principal, request: Request, action: str, outcome: str, detail: str
) -> None:
    audit.record(
        rt.db,
        principal,
        audit.SECURITY_ALERT,
        action,
        outcome=outcome,
        source=client_address(request),
        purpose=audit.OPERATIONS,
        detail=detail,
    )


def _refused(
    rt: Runtime, principal: Principal, request: Request, action: str, exc: duty.DutyError
) -> HTTPException:
    _audit(rt, principal, request, action, audit.DENIED if exc.status == 403 else audit.FAILURE, exc.reason)
    return HTTPException(exc.status, exc.reason)


@router.post("", status_code=status.HTTP_201_CREATED)
def add_shift(body: ShiftBody, request: Request, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """Put the calling pathologist (or, for an administrator, ``pathologist``) on duty from ``start`` to
    ``end``; they get every open and new frozen-section request of that time."""
    who = body.pathologist or principal.subject
    if principal.role != "admin" and (principal.role != "pathologist" or who != principal.subject):
        exc = duty.DutyError("a pathologist puts only themself on duty; an administrator may name one", 403)
        raise _refused(rt, principal, request, "duty-start", exc)
    now = rt.clock()
    try:
        with rt.db.write() as s:
            shift = duty.add_shift(s, who, body.start, body.end, by=principal.subject, now=now)
            granted = frozen.grant_new_shift(s, shift, now)
            shown = shift.as_dict()
    except duty.DutyError as exc:
        raise _refused(rt, principal, request, "duty-start", exc) from exc
    _audit(
        rt,
        principal,
        request,
        "duty-start",
        audit.SUCCESS,
        f"shift={shown['id']} pathologist={who} open={granted}",
    )
    return shown


@router.get("")
def list_shifts(
    rt: RuntimeDep, principal: PrincipalDep, pathologist: str | None = None
) -> list[dict[str, Any]]:
    """The shifts in force or to come (of one pathologist if named), soonest first."""
    if principal.kind != "user":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "the roster is for professionals")
    with rt.db.sessions() as s:
        return [shift.as_dict() for shift in duty.shifts(s, rt.clock(), pathologist)]


@router.delete("/{shift_id}")
def cancel_shift(shift_id: int, request: Request, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """Cancel a shift: its pathologist stops receiving requests, and their on-duty access ends."""
    now = rt.clock()
    try:
        with rt.db.write() as s:
            shift = duty.cancel_shift(
                s, shift_id, by=principal.subject, may_cancel_others=principal.role == "admin", now=now
            )
            ended = frozen.end_grants(s, shift_id=shift_id, now=now)
            shown = shift.as_dict()
    except duty.DutyError as exc:
        raise _refused(rt, principal, request, "duty-cancel", exc) from exc
    _audit(rt, principal, request, "duty-cancel", audit.SUCCESS, f"shift={shift_id} ended_access={ended}")
    return shown
