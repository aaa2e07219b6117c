"""HTTP routes of the audit trail: an auditor's search (JSON and FHIR), and a patient's access log.

Reading the trail is itself audited (DCM 110101 Audit Log Used), allowed or denied.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse

from archipel.platform import audit
from archipel.platform.audit import AuditEvent
from archipel.platform.audit_fhir import Server, bundle
from archipel.platform.audit_search import AuditFilter, access_log, search
from archipel.platform.authn import Principal
from archipel.platform.credentials import PrincipalDep, RuntimeDep, client_address, require_recent_auth
from archipel.platform.runtime import Runtime

router = APIRouter(prefix="/api", tags=["audit"])

AUDITOR_ROLE = "auditor"
MAX_PAGE = 1000
FHIR_JSON = "application/fhir+json"
#: An export carries the trail out of the platform: it needs a log-in this recent, like break-the-glass and merge.
EXPORT_REAUTH = timedelta(minutes=5)


def _guard_auditor(rt: Runtime, principal: Principal, request: Request, action: str) -> None:
    """Only auditors read the trail; the decision is audited either way."""
    allowed = principal.kind == "user" and principal.role == AUDITOR_ROLE
    audit.record(
        rt.db,
        principal,
        audit.AUDIT_LOG_USED,
        action,
        outcome=audit.SUCCESS if allowed else audit.DENIED,
        obj=str(request.url.query)[:1000],
        source=client_address(request),
        purpose=audit.AUDIT_REVIEW,
        detail="auditor"
        if allowed
        else f"role {principal.role or principal.kind} may not read the audit trail",
    )
    if not allowed:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "reading the audit trail needs the auditor role")


def _filter(rt: Runtime, q: AuditQuery) -> AuditFilter:
    if q.since is not None and q.until is not None and q.until <= q.since:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "'until' must be after 'since'")
    locals_: tuple[str, ...] = ()
    if q.master is not None:
        from archipel.platform.identity.service import locals_of

        locals_ = tuple(f"{issuer}/{local}" for issuer, local in locals_of(rt.db, q.master))
    return AuditFilter(
        patient=q.patient,
        master=q.master,
        master_locals=locals_,
        actor=q.actor,
        event_type=q.event_type,
        action=q.action,
        outcome=q.outcome,
        purpose=q.purpose,
        since=_utc(q.since),
        until=_utc(q.until),
    )


def _utc(t: datetime | None) -> datetime | None:
    if t is None or t.tzinfo is not None:
        return t
    from datetime import UTC

    return t.replace(tzinfo=UTC)


def event_json(e: AuditEvent) -> dict[str, Any]:
    """One event as the search API returns it."""
    return {
        "id": e.id,
        "at": e.at.isoformat(),
        "event_type": e.event_type,
        "action": e.action,
        "outcome": e.outcome,
        "purpose": e.purpose,
        "actor": e.actor,
        "actor_role": e.actor_role,
        "actor_kind": e.actor_kind,
        "actor_site": e.actor_site,
        "source": e.source,
        "patient": e.patient,
        "master_id": e.master_id,
        "object": e.object,
        "detail": e.detail,
        "hash": e.hash,
    }


PatientQ = Annotated[str, Query(max_length=160, description="Local patient reference ISSUER/PatientID.")]
MasterQ = Annotated[
    int | None, Query(ge=1, description="Master patient id (also matches its local identities).")
]
ActorQ = Annotated[str, Query(max_length=128, description="User name or node AE title.")]
TypeQ = Annotated[str, Query(alias="type", max_length=16, description="DICOM audit event ID, e.g. 110110.")]
ActionQ = Annotated[str, Query(max_length=64, description="Action, e.g. read:study.")]
OutcomeQ = Annotated[str, Query(pattern="^(|success|denied|failure)$")]
PurposeQ = Annotated[str, Query(max_length=32, description="care, break-glass, identity-management, ...")]
TimeQ = Annotated[datetime | None, Query(description="ISO 8601; UTC when no offset is given.")]
OffsetQ = Annotated[int, Query(ge=0)]
LimitQ = Annotated[int, Query(ge=1, le=MAX_PAGE)]


@dataclass(frozen=True)
class AuditQuery:
    """The query parameters of both audit searches, as given (checked against each other by ``_filter``)."""

    patient: str
    master: int | None
    actor: str
    event_type: str
    action: str
    outcome: str
    purpose: str
    since: datetime | None
    until: datetime | None
    offset: int
    limit: int


def _audit_query(
    patient: PatientQ = "",
    master: MasterQ = None,
    actor: ActorQ = "",
    event_type: TypeQ = "",
    action: ActionQ = "",
    outcome: OutcomeQ = "",
    purpose: PurposeQ = "",
    since: TimeQ = None,
    until: TimeQ = None,
    offset: OffsetQ = 0,
    limit: LimitQ = 100,
) -> AuditQuery:
    return AuditQuery(
        patient, master, actor, event_type, action, outcome, purpose, since, until, offset, limit
    )


AuditQueryDep = Annotated[AuditQuery, Depends(_audit_query)]


@router.get("/audit")
def search_audit(
    request: Request, rt: RuntimeDep, principal: PrincipalDep, q: AuditQueryDep
) -> dict[str, Any]:
    """Search audit events (auditors only), oldest first, with the total number of matches."""
    _guard_auditor(rt, principal, request, "search:audit")
    f = _filter(rt, q)
    with rt.db.sessions() as s:
        page = search(s, f, offset=q.offset, limit=q.limit)
        events = [event_json(e) for e in page.events]
    return {"total": page.total, "offset": q.offset, "limit": q.limit, "events": events}


@router.get("/audit/fhir")
def search_audit_fhir(
    request: Request,
    rt: RuntimeDep,
    principal: Annotated[Principal, Depends(require_recent_auth(EXPORT_REAUTH))],
    q: AuditQueryDep,
) -> JSONResponse:
    """The same search as a FHIR R4 searchset Bundle of AuditEvents in the IHE BALP shape."""
    _guard_auditor(rt, principal, request, "export:audit")
    f = _filter(rt, q)
    offset, limit = q.offset, q.limit
    server = Server(rt.settings.ae_title, request.url.hostname or rt.settings.http_host)
    with rt.db.sessions() as s:
        page = search(s, f, offset=offset, limit=limit)
        params = {k: v for k, v in request.query_params.items() if k != "offset"}
        base = str(request.url.remove_query_params(list(request.query_params.keys())))
        links = {"self": str(request.url)}
        if offset + len(page.events) < page.total:
            links["next"] = f"{base}?{urlencode({**params, 'offset': offset + limit})}"
        body = bundle(list(page.events), server, total=page.total, links=links)
    return JSONResponse(body, media_type=FHIR_JSON)


@router.get("/me/access-log")
def my_access_log(request: Request, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """For a patient: who accessed their record (professionals and DICOM nodes), when, in what role, from
    which organisation, what they did and why; newest first. Their own actions are left out."""
    if principal.kind != "patient":
        audit.record(
            rt.db,
            principal,
            audit.AUDIT_LOG_USED,
            "read:access-log",
            outcome=audit.DENIED,
            source=client_address(request),
            purpose=audit.PATIENT_REQUEST,
            detail="the access log is for patients",
        )
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "the access log is for patients; auditors use /api/audit"
        )
    from archipel.platform.identity.service import locals_of, master_of

    issuer, _, local = principal.subject.partition("/")
    master = master_of(rt.db, issuer, local)
    refs = [principal.subject]
    if master is not None:
        refs = sorted({principal.subject, *(f"{i}/{lid}" for i, lid in locals_of(rt.db, master))})
    with rt.db.sessions() as s:
        rows = access_log(s, master, refs, refs)
        entries = [
            {
                "at": e.at.isoformat(),
                "who": e.actor,
                "kind": "dicom-node" if e.actor_kind == "node" else "professional",
                "role": e.actor_role,
                "organisation": e.actor_site,
                "action": e.action,
                "event_type": e.event_type,
                "purpose": e.purpose,
                "outcome": e.outcome,
            }
            for e in rows
        ]
    audit.record(
        rt.db,
        principal,
        audit.AUDIT_LOG_USED,
        "read:access-log",
        patient=principal.subject,
        master=master,
        source=client_address(request),
        purpose=audit.PATIENT_REQUEST,
    )
    return {"patient": principal.subject, "entries": entries}
