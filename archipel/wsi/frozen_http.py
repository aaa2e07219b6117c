"""What the frozen-section routes share: the policy resource of a request, the guard (facts at the runtime's
clock, audited), loading a request, and turning the workflow's refusals into HTTP answers."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import HTTPException, Request, status

from archipel.platform import access, access_facts, audit, notify
from archipel.platform.authn import Principal
from archipel.platform.http import client_address, guard
from archipel.platform.runtime import Runtime
from archipel.wsi import frozen
from archipel.wsi.frozen import FrozenSectionError, FrozenSectionRequest
from archipel.wsi.frozen_view import request_view

log = logging.getLogger("archipel.frozen")


def resource(req: FrozenSectionRequest) -> access.Resource:
    """The policy resource of a request."""
    return access.Resource(
        kind=access.FROZEN_SECTION,
        site=req.issuer,
        patient=req.patient,
        master=req.master_id,
        ident=f"frozen-section:{req.id}",
    )


def guard_request(
    rt: Runtime, principal: Principal, action: str, res: access.Resource, request: Request
) -> None:
    """Ask the policy (audited as PATIENT_RECORD); 403 with its reason on a refusal."""
    # Facts at the runtime's clock: relationships recorded by this workflow start at that clock.
    res, facts = access_facts.load(rt.db, principal, res, rt.clock())
    guard(rt, principal, action, res, event_type=audit.PATIENT_RECORD, request=request, facts=facts)


def load(rt: Runtime, request_id: int) -> FrozenSectionRequest:
    """The request, or 404."""
    with rt.db.sessions() as s:
        try:
            return frozen.get(s, request_id)
        except FrozenSectionError as exc:
            raise HTTPException(exc.status, exc.reason) from exc


def view(rt: Runtime, request_id: int) -> dict[str, Any]:
    """The request as the API shows it, read afresh."""
    with rt.db.sessions() as s:
        return request_view(s, frozen.get(s, request_id), rt.clock())


def http_error(exc: FrozenSectionError) -> HTTPException:
    """The HTTP answer of a refused step."""
    return HTTPException(exc.status, exc.reason)


def refuse(rt: Runtime, principal: Principal, request: Request, action: str, reason: str) -> HTTPException:
    """Audit a refusal the policy does not make (e.g. not on duty) and return its 403."""
    audit.record(
        rt.db,
        principal,
        audit.QUERY,
        action,
        outcome=audit.DENIED,
        source=client_address(request),
        detail=reason,
    )
    return HTTPException(status.HTTP_403_FORBIDDEN, reason)


def deliver(rt: Runtime) -> None:
    """Send what the workflow put in the outbox (run after the response: a slow mail server must not delay it).
    A failure leaves the messages queued for the next round."""
    try:
        notify.deliver_now(rt.db, rt.settings)
    except Exception:
        log.exception("event=frozen_notify_delivery_failed")
