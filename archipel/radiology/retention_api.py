"""HTTP routes under ``/api/retention`` for administrators: legal holds, and what the next run would delete.

Every route asks the access policy for ``administer`` on the platform (administrators only), audited. Placing and
lifting a hold is audited a second time as a Patient Record event naming the hold (``legal_holds``). The run
itself is an operator's command or the weekly job, never a request: a deletion of years of records is not one
click away.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel, Field

from archipel.platform import access, audit
from archipel.platform.authn import Principal
from archipel.platform.credentials import PrincipalDep, RuntimeDep
from archipel.platform.http import guard
from archipel.platform.retention_rules import RetentionRuleError
from archipel.platform.runtime import Runtime
from archipel.radiology.legal_holds import HoldError, add_hold, lift_hold, list_holds
from archipel.radiology.retention_tasks import plan_now

router = APIRouter(prefix="/api/retention", tags=["retention"])


class HoldBody(BaseModel):
    """A hold to place: on a patient (``ISSUER/PatientID``) or a study (its UID), and why."""

    scope: Literal["patient", "study"]
    target: str = Field(min_length=1, max_length=160)
    reason: str = Field(min_length=1, max_length=2000)


class LiftBody(BaseModel):
    """Why a hold is lifted."""

    reason: str = Field(min_length=1, max_length=2000)


def _admin(rt: Runtime, principal: Principal, request: Request, what: str, event_type: str) -> None:
    resource = access.Resource(kind="platform", ident=what)
    guard(rt, principal, access.ADMINISTER, resource, event_type=event_type, request=request)


@router.get("/holds")
def get_holds(
    request: Request, rt: RuntimeDep, principal: PrincipalDep, all: bool = False
) -> list[dict[str, object]]:
    """The active holds, newest first (``all=true``: the lifted ones too)."""
    _admin(rt, principal, request, "retention holds", audit.QUERY)
    return [h.as_json() for h in list_holds(rt.db, include_lifted=all)]


@router.post("/holds", status_code=status.HTTP_201_CREATED)
def post_hold(body: HoldBody, request: Request, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, object]:
    """Place a hold; an unknown study or a malformed patient reference is refused (422)."""
    _admin(rt, principal, request, f"retention hold {body.scope}", audit.SECURITY_ALERT)
    try:
        return add_hold(rt.db, body.scope, body.target, body.reason, principal).as_json()
    except HoldError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc


@router.post("/holds/{hold_id}/lift")
def post_lift(
    hold_id: int, body: LiftBody, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, object]:
    """Lift a hold; an unknown hold is 404, one lifted already 409."""
    _admin(rt, principal, request, f"retention hold {hold_id}", audit.SECURITY_ALERT)
    try:
        return lift_hold(rt.db, hold_id, body.reason, principal).as_json()
    except HoldError as exc:
        code = status.HTTP_404_NOT_FOUND if "no hold" in str(exc) else status.HTTP_409_CONFLICT
        raise HTTPException(code, str(exc)) from exc


@router.get("/expired")
def get_expired(request: Request, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """What a run would delete today, and what has expired but is held (a dry run)."""
    _admin(rt, principal, request, "retention plan", audit.QUERY)
    try:
        plan = plan_now(rt)
    except RetentionRuleError as exc:
        raise HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR, str(exc)) from exc

    def rows(items: list[Any]) -> list[dict[str, object]]:
        return [
            {
                "kind": i.kind,
                "object": i.ident,
                "patient": i.patient,
                "rule": i.rule,
                "expired_on": i.expired_on.isoformat(),
            }
            for i in items
        ]

    return {"due": rows(plan.due), "held": rows(plan.held)}
