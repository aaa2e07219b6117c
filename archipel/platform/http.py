"""HTTP plumbing shared by every module's router: the runtime and current-principal dependencies, the token
endpoint, health, and the job API."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer, OAuth2PasswordRequestForm

from archipel.platform import access, audit, jobs
from archipel.platform.authn import AuthError, Principal, authenticate, issue_token, read_token
from archipel.platform.runtime import Runtime, get_runtime

oauth2 = OAuth2PasswordBearer(tokenUrl="/api/auth/token", auto_error=False)


def runtime() -> Runtime:
    """Dependency: this process's runtime."""
    return get_runtime()


RuntimeDep = Annotated[Runtime, Depends(runtime)]


def current_principal(rt: RuntimeDep, token: Annotated[str | None, Depends(oauth2)]) -> Principal:
    """Dependency: the principal named by the bearer token; 401 without a valid one."""
    if not token:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "authentication required", headers={"WWW-Authenticate": "Bearer"}
        )
    try:
        return read_token(token, rt.settings.signing_key())
    except AuthError as exc:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, str(exc), headers={"WWW-Authenticate": "Bearer"}
        ) from exc


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def client_address(request: Request) -> str:
    """The caller's IP address, for the audit trail."""
    return request.client.host if request.client else ""


def guard(
    rt: Runtime,
    principal: Principal,
    action: str,
    resource: access.Resource,
    *,
    event_type: str,
    request: Request,
) -> None:
    """Run the access policy and audit; turn a refusal into HTTP 403 with its reason."""
    try:
        access.check(
            rt.db, principal, action, resource, event_type=event_type, source=client_address(request)
        )
    except access.AccessDenied as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, exc.reason) from exc


public = APIRouter()
router = APIRouter(prefix="/api")


@public.get("/healthz", tags=["platform"])
def healthz(rt: RuntimeDep) -> dict[str, Any]:
    """Liveness and readiness: the index answers."""
    from sqlalchemy import text

    with rt.db.sessions() as s:
        s.execute(text("SELECT 1"))
    return {"status": "ok"}


@public.post("/api/auth/token", tags=["auth"])
def token(
    request: Request, rt: RuntimeDep, form: Annotated[OAuth2PasswordRequestForm, Depends()]
) -> dict[str, Any]:
    """Exchange a user name and password for a bearer token (OAuth2 password flow)."""
    try:
        with rt.db.sessions() as s:
            user = authenticate(s, form.username, form.password)
    except AuthError as exc:
        audit.record(
            rt.db,
            Principal(subject=form.username[:128], role=""),
            audit.USER_AUTHENTICATION,
            "login",
            outcome="denied",
            source=client_address(request),
        )
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, str(exc), headers={"WWW-Authenticate": "Bearer"}
        ) from exc
    audit.record(
        rt.db,
        Principal(subject=user.username, role=user.role, site=user.site),
        audit.USER_AUTHENTICATION,
        "login",
        source=client_address(request),
    )
    minutes = rt.settings.token_minutes
    return {
        "access_token": issue_token(user, rt.settings.signing_key(), minutes),
        "token_type": "bearer",
        "expires_in": minutes * 60,
    }


@router.get("/jobs", tags=["jobs"])
def list_jobs(rt: RuntimeDep, principal: PrincipalDep, limit: int = 50) -> list[dict[str, Any]]:
    """The most recent jobs."""
    return [j.as_dict() for j in jobs.list_jobs(rt.db, min(max(limit, 1), 500))]


@router.get("/jobs/{job_id}", tags=["jobs"])
def get_job(job_id: str, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """One job's state, progress (percent, done/total, rate) and result."""
    job = jobs.get_job(rt.db, job_id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id}")
    return job.as_dict()
