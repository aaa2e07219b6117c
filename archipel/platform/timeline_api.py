"""The professional's view of one person's record: ``GET /api/patients/{master}/timeline`` ("ligne de vie").

Every item of the record (studies, slides, reports, frozen sections, screening episodes) across every site,
from the portal registry's sources, newest first, with the patient's identities as a header. The policy runs
once on the record as a whole (at the caller's site when one of its identities is there, else by care
relationship or break-the-glass) and is audited; each source then keeps to the caller's read scope in its own
SQL, so what the caller may not see (another site's confidential study, say) is never read. The caller's
filters (kinds, site, dates) only narrow what they may see.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request, status

from archipel.platform import access, access_facts, audit, portal
from archipel.platform.authn import Principal
from archipel.platform.credentials import PrincipalDep, RuntimeDep
from archipel.platform.http import guard
from archipel.platform.identity import records
from archipel.platform.identity.intake import IdentityNotFound
from archipel.platform.runtime import Runtime

router = APIRouter(prefix="/api/patients", tags=["portal"])


def checked_master(
    rt: Runtime,
    principal: Principal,
    master_id: int,
    request: Request,
    event_type: str = audit.PATIENT_RECORD,
) -> tuple[records.MasterRecord, access.Facts]:
    """The master (or the one it was merged into: 404 if none) and the policy's facts, once the policy allowed
    the caller to read this record (audited; HTTP 403 with the reason otherwise)."""
    resource, facts = access_facts.load(
        rt.db,
        principal,
        access.Resource(kind="patient", master=master_id, ident=f"record of {master_id}"),
        rt.clock(),
    )
    site = principal.site if principal.kind == "user" and principal.site not in ("", "*") else ""
    if site and site in facts.patient_sites:
        resource = replace(resource, site=site)
    guard(rt, principal, access.READ, resource, event_type=event_type, request=request, facts=facts)
    try:
        record = records.master_record(rt.db, master_id, officer=False)
        seen = {master_id}
        while not record.active and record.merged_into is not None and record.merged_into not in seen:
            seen.add(record.merged_into)
            record = records.master_record(rt.db, record.merged_into, officer=False)
    except IdentityNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    return record, facts


def _day(value: str | None, name: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, f"{name}={value!r} is not a date (use YYYY-MM-DD)"
        ) from exc


def _item_day(item: portal.RecordItem) -> date | None:
    when = item.when
    if when is None:
        return None
    return when.date() if isinstance(when, datetime) else when


def identities(record: records.MasterRecord) -> list[dict[str, Any]]:
    """The master's local identities as the portal shows them (names, birth date, sex, qualified INS)."""
    return [
        {
            "issuer": i.issuer,
            "local_id": i.local_id,
            "birth_name": i.birth_name,
            "used_name": i.used_name,
            "given_names": i.given_names,
            "birth_date": i.birth_date,
            "sex": i.sex,
            "ins": i.ins,
        }
        for i in record.identities
    ]


@router.get("/{master_id}/timeline")
def timeline(
    master_id: int,
    request: Request,
    rt: RuntimeDep,
    principal: PrincipalDep,
    kind: list[str] = Query(default=[], description="only these kinds (repeat, or comma-separated)"),
    site: str = "",
    date_from: str | None = Query(None, alias="from", description="first day, YYYY-MM-DD"),
    date_to: str | None = Query(None, alias="to", description="last day, YYYY-MM-DD"),
) -> dict[str, Any]:
    """The person's whole record across sites, newest first: the items the caller may see, narrowed by kind,
    site and date range (an undated item is kept only without a date range)."""
    first, last = _day(date_from, "from"), _day(date_to, "to")
    if first and last and first > last:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "from is after to")
    kinds = sorted({k.strip() for value in kind for k in value.split(",") if k.strip()})
    known = portal.registered_kinds()
    unknown = [k for k in kinds if k not in known]
    if unknown:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, f"unknown kind {', '.join(unknown)}; known: {', '.join(known)}"
        )
    record, facts = checked_master(rt, principal, master_id, request)
    items = portal.record(rt.db, principal, record.master_id, facts, kinds=kinds or None)
    sites = sorted({i.site for i in items if i.site})
    if site:
        items = [i for i in items if i.site == site]
    if first or last:
        dated = [(i, _item_day(i)) for i in items]
        items = [
            i
            for i, d in dated
            if d is not None and (first is None or d >= first) and (last is None or d <= last)
        ]
    return {
        "master_id": record.master_id,
        "requested_master_id": master_id,
        "identities": identities(record),
        "kinds": known,
        "sites": sites,
        "items": [i.as_dict() for i in items],
    }
