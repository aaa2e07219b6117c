"""HTTP plumbing shared by every module's router: the runtime and current-principal dependencies (defined in
``credentials``), the access guard, health, the job API, and the authentication routes (``auth_api``,
``patient_api``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import JSONResponse

from archipel.platform import access, access_facts, audit, auth_api, jobs, oidc_flow, patient_api, readiness
from archipel.platform.authn import Principal
from archipel.platform.credentials import (
    PrincipalDep,
    RuntimeDep,
    client_address,
    current_principal,
    require_recent_auth,
    runtime,
)
from archipel.platform.runtime import Runtime

__all__ = [
    "PrincipalDep",
    "RuntimeDep",
    "client_address",
    "current_principal",
    "guard",
    "guard_patient_record",
    "public",
    "require_recent_auth",
    "router",
    "runtime",
]


def guard(
    rt: Runtime,
    principal: Principal,
    action: str,
    resource: access.Resource,
    *,
    event_type: str,
    request: Request,
    facts: access.Facts | None = None,
) -> access.Decision:
    """Run the access policy and audit; turn a refusal into HTTP 403 with its reason. ``facts``, when the
    caller loaded them already (``access_facts.load``), spare loading them again."""
    try:
        return access.check(
            rt.db,
            principal,
            action,
            resource,
            event_type=event_type,
            source=client_address(request),
            facts=facts,
        )
    except access.AccessDenied as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, exc.reason) from exc


def guard_patient_record(
    rt: Runtime, principal: Principal, action: str, resource: access.Resource, request: Request
) -> access.Decision:
    """:func:`guard` for a change or read of what governs a patient's record (consent, care relationships,
    break-the-glass, confidentiality): the facts are taken at the runtime's clock, the event is PATIENT_RECORD."""
    resource, facts = access_facts.load(rt.db, principal, resource, rt.clock())
    return guard(
        rt, principal, action, resource, event_type=audit.PATIENT_RECORD, request=request, facts=facts
    )


public = APIRouter()
router = APIRouter(prefix="/api")
public.include_router(auth_api.public)
public.include_router(auth_api.router)
public.include_router(oidc_flow.public)
public.include_router(patient_api.public)


@public.get("/healthz", tags=["platform"])
def healthz(rt: RuntimeDep) -> dict[str, Any]:
    """Liveness and readiness: the index answers."""
    from sqlalchemy import text

    with rt.db.sessions() as s:
        s.execute(text("SELECT 1"))
    return {"status": "ok"}


@public.get("/readyz", tags=["platform"], responses={503: {"description": "a part does not answer"}})
def readyz(rt: RuntimeDep) -> JSONResponse:
    """Readiness: 200 when the index, the blob store and the broker all answer; else 503 naming each part that
    failed and why (``{"status": "unready", "failed": {"broker": "..."}}``)."""
    failed = readiness.check(rt)
    if failed:
        return JSONResponse({"status": "unready", "failed": failed}, status.HTTP_503_SERVICE_UNAVAILABLE)
    return JSONResponse({"status": "ready", "parts": sorted(readiness.PARTS)})


def _job_owner(principal: Principal) -> str | None:
    # A job's result can name the files and patients it touched: each sees their own jobs, admins see all.
    return None if principal.role == "admin" else principal.subject


@router.get("/jobs", tags=["jobs"])
def list_jobs(rt: RuntimeDep, principal: PrincipalDep, limit: int = 50) -> list[dict[str, Any]]:
    """The caller's most recent jobs (every job for an admin)."""
    return [j.as_dict() for j in jobs.list_jobs(rt.db, min(max(limit, 1), 500), owner=_job_owner(principal))]


@router.get("/jobs/{job_id}", tags=["jobs"])
def get_job(job_id: str, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """One of the caller's jobs: state, progress (percent, done/total, rate) and result."""
    job = jobs.get_job(rt.db, job_id, owner=_job_owner(principal))
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id}")
    return job.as_dict()
