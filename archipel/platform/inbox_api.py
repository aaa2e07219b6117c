"""HTTP routes of the in-app notifications (``inbox``): a professional lists, reads and acknowledges their own.

Another user's notification answers 404, as one that does not exist: its title may name a patient. Every call
goes through the policy (kind ``inbox``) and is audited, probes of unknown ids included. The bell's counts
(``/inbox/counts``: numbers only, no title) are what a page polls; it fetches the audited list when they change.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request, status

from archipel.platform import access, audit, inbox
from archipel.platform.credentials import PrincipalDep, RuntimeDep
from archipel.platform.http import guard

router = APIRouter(prefix="/api", tags=["inbox"])


@router.get("/inbox/counts")
def inbox_counts(rt: RuntimeDep, principal: PrincipalDep) -> dict[str, int]:
    """The caller's bell: ``unread``, ``awaiting_ack`` and ``latest`` (the newest notification's id)."""
    counts = inbox.unread_count(rt.db, principal)
    return {"unread": counts.unread, "awaiting_ack": counts.awaiting_ack, "latest": counts.latest}


@router.get("/inbox")
def list_inbox(
    request: Request,
    rt: RuntimeDep,
    principal: PrincipalDep,
    unread: bool = False,
    limit: int = Query(50, ge=1, le=500),
) -> dict[str, Any]:
    """The caller's notifications (those awaiting acknowledgement first, then newest first) and the bell's
    counts: ``unread`` and ``awaiting_ack``."""
    guard(
        rt,
        principal,
        access.SEARCH,
        access.Resource(kind=access.INBOX),
        event_type=audit.QUERY,
        request=request,
    )
    counts = inbox.unread_count(rt.db, principal)
    items = inbox.inbox(rt.db, principal, unread_only=unread, limit=limit)
    return {
        "unread": counts.unread,
        "awaiting_ack": counts.awaiting_ack,
        "latest": counts.latest,
        "notifications": [n.as_dict() for n in items],
    }


def _guard_one(rt: RuntimeDep, principal: PrincipalDep, notification_id: int, request: Request) -> None:
    try:
        master = inbox.owned(rt.db, principal, notification_id).master_id
    except inbox.NotificationNotFound:
        master = None
    resource = access.Resource(kind=access.INBOX, ident=str(notification_id), master=master)
    guard(rt, principal, access.UPDATE, resource, event_type=audit.PATIENT_RECORD, request=request)


@router.post("/inbox/{notification_id}/read")
def read_notification(
    notification_id: int, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Mark one of the caller's notifications read."""
    _guard_one(rt, principal, notification_id, request)
    try:
        return inbox.mark_read(rt.db, principal, notification_id).as_dict()
    except inbox.NotificationNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc


@router.post("/inbox/{notification_id}/acknowledge")
def acknowledge_notification(
    notification_id: int, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Acknowledge one of the caller's notifications that asks for it (again: the first acknowledgement
    stands); 409 for one that asks for none."""
    _guard_one(rt, principal, notification_id, request)
    try:
        return inbox.acknowledge(rt.db, principal, notification_id).as_dict()
    except inbox.NotificationNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except inbox.NoAcknowledgementNeeded as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
