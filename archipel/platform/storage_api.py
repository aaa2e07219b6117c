"""HTTP for administrators: the state of the storage lifecycle (``GET /api/storage/fixity``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from archipel.platform import access, audit, fixity
from archipel.platform.http import PrincipalDep, RuntimeDep, guard

router = APIRouter(prefix="/api/storage", tags=["storage"])


@router.get("/fixity")
def get_fixity(request: Request, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """The last fixity run (its job: progress and summary), the stored objects by check status and by tier, and
    the open problems (objects still missing or corrupt). Administrators only; the objects are named by their
    SHA-256 key, never by patient."""
    resource = access.Resource(kind="platform", ident="storage fixity")
    guard(rt, principal, access.ADMINISTER, resource, event_type=audit.QUERY, request=request)
    return fixity.fixity_status(rt.db)
