"""The professional portal's search: ``GET /api/search?q=&kind=&site=&from=&to=``.

One box finds patients (by name, birth date, PatientID or INS: ``patient_search``) and reports (by the words
of their text: the document registry's full-text search). Both keep to the caller's read scope inside their
SQL, so nothing the caller may not see is ever counted or listed. The search is one audited Query event.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, status

from archipel.platform import access, access_facts, audit
from archipel.platform.credentials import PrincipalDep, RuntimeDep
from archipel.platform.http import guard
from archipel.radiology import documents_search, patient_search

router = APIRouter(prefix="/api", tags=["portal"])


def _day(value: str | None, name: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, f"{name}={value!r} is not a date (use YYYY-MM-DD)"
        ) from exc


def _report(doc: Any) -> dict[str, Any]:
    return {
        "id": doc.id,
        "uid": doc.uid,
        "master_id": doc.master_id,
        "title": doc.title,
        "type": doc.type_display or doc.type_code,
        "status": doc.status,
        "site": doc.site,
        "author": doc.author,
        "date": doc.created_at.isoformat() if doc.created_at else None,
        "links": {"timeline": f"/app/index.html?patient={doc.master_id}"} if doc.master_id else {},
    }


@router.get("/search")
def search(
    request: Request,
    rt: RuntimeDep,
    principal: PrincipalDep,
    q: str = Query(
        ..., min_length=1, max_length=200, description="words, a birth date, a PatientID or an INS"
    ),
    kind: Literal["", "patient", "report"] = "",
    site: str = Query("", max_length=64),
    date_from: str | None = Query(None, alias="from", description="reports from this day, YYYY-MM-DD"),
    date_to: str | None = Query(None, alias="to", description="reports up to this day, YYYY-MM-DD"),
    limit: int = Query(20, ge=1, le=100),
) -> dict[str, Any]:
    """Patients and reports matching ``q`` that the caller may see; ``kind`` keeps one of the two, ``site``
    and the date range narrow them (dates apply to reports)."""
    first, last = _day(date_from, "from"), _day(date_to, "to")
    if first and last and first > last:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "from is after to")
    resource, facts = access_facts.load(rt.db, principal, access.Resource(kind="patient"), rt.clock())
    guard(rt, principal, access.SEARCH, resource, event_type=audit.QUERY, request=request, facts=facts)
    scope = access.read_scope(principal, facts)
    out: dict[str, Any] = {"q": q, "patients": [], "patients_total": 0, "reports": [], "reports_total": 0}
    if kind in ("", "patient"):
        try:
            hits, total = patient_search.find_patients(rt.db, scope, q, site=site, limit=limit)
        except patient_search.PatientSearchInvalid as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
        out["patients"], out["patients_total"] = [h.as_dict() for h in hits], total
    if kind in ("", "report"):
        query = documents_search.DocumentQuery(
            words=q,
            created_from=datetime.combine(first, time(), UTC) if first else None,
            created_before=datetime.combine(last + timedelta(days=1), time(), UTC) if last else None,
            limit=limit,
        )
        try:
            docs, total = documents_search.find(rt.db, scope, query)
        except documents_search.SearchInvalid as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
        reports = [_report(d) for d in docs if not site or d.site == site]
        out["reports"], out["reports_total"] = reports, total if not site else len(reports)
    return out
