"""HTTP routes under ``/api/admin/notify`` for administrators: the outbox's unsent messages, and requeuing the
failed ones (what ``archipel notify list`` and ``archipel notify retry`` do).

Every route asks the access policy for ``administer`` on the platform (administrators only), audited. Messages
are shown without their body and with the recipient masked.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, status

from archipel.platform import access, audit, notify
from archipel.platform.authn import Principal
from archipel.platform.credentials import PrincipalDep, RuntimeDep
from archipel.platform.http import guard
from archipel.platform.runtime import Runtime

router = APIRouter(prefix="/api/admin/notify", tags=["notify"])


def _admin(rt: Runtime, principal: Principal, request: Request, what: str, event_type: str) -> None:
    resource = access.Resource(kind="platform", ident=what)
    guard(rt, principal, access.ADMINISTER, resource, event_type=event_type, request=request)


@router.get("/outbox")
def get_outbox(
    request: Request, rt: RuntimeDep, principal: PrincipalDep, failed: bool = False, limit: int = 200
) -> list[dict[str, Any]]:
    """Messages not sent yet, newest first (``failed=true``: only those whose attempts ran out)."""
    _admin(rt, principal, request, "notify outbox", audit.QUERY)
    return [notify.describe(row) for row in notify.list_messages(rt.db, failed_only=failed, limit=limit)]


@router.post("/outbox/{message_id}/retry")
def retry_message(
    message_id: int, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Give a failed message a new attempt budget; the next sweep sends it. 404 unknown, 409 already sent."""
    _admin(rt, principal, request, f"notify message {message_id} retry", audit.SECURITY_ALERT)
    try:
        notify.requeue(rt.db, [message_id])
    except notify.AlreadySent as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    except notify.MessageNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    return {"requeued": [message_id]}


@router.post("/outbox/retry-failed")
def retry_failed(request: Request, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """Requeue every failed message."""
    _admin(rt, principal, request, "notify failed messages retry", audit.SECURITY_ALERT)
    return {"requeued": notify.requeue(rt.db)}
