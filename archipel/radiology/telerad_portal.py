"""Teleradiology's part of a person's record in the portals (``platform.portal``): each reading request of the
master is a dated item of the professional timeline (asked, due, where it stands, the study and the worklist
to open). None is ``released`` to the patient portal: the patient sees the signed report, which is a document
of the registry and comes from its own source.

The read scope decides, request by request, as it decides for the study: the request's patient site and master
must be covered by one of the caller's grants.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select

from archipel.platform import access, portal
from archipel.platform.authn import Principal
from archipel.platform.db import Database
from archipel.radiology.telerad_models import ReadingRequest

KIND = "reading-request"


def _item(req: ReadingRequest) -> portal.RecordItem:
    links = {
        "worklist": f"/app/telerad-worklist.html?request={req.id}",
        "api": f"/api/telerad/requests/{req.id}",
    }
    if req.study_uid:
        links["viewer"] = f"/app/study.html?study={req.study_uid}"
    return portal.RecordItem(
        kind=KIND,
        ident=str(req.id),
        site=req.issuer,
        when=req.requested_at,
        title=f"Teleradiology reading ({req.priority}) requested by {req.requesting_site}",
        status=req.state,
        released=False,
        links=links,
        detail={
            "priority": req.priority,
            "subspecialty": req.subspecialty,
            "due_at": req.due_at.isoformat(),
            "study_uid": req.study_uid,
            "accession_number": req.accession_number,
            "final_by": req.final_by,
        },
    )


def reading_requests_source(
    db: Database, principal: Principal, master_id: int, facts: access.Facts
) -> Iterable[portal.RecordItem]:
    """The master's reading requests that the caller's read scope covers, as portal items."""
    scope = access.read_scope(principal, facts)
    if scope.sees_nothing:
        return []
    refused = master_id in facts.refused
    with db.sessions() as s:
        rows = s.execute(
            select(ReadingRequest).where(ReadingRequest.master_id == master_id).order_by(ReadingRequest.id)
        ).scalars()
        return [
            _item(r) for r in rows if scope.grant_for(r.issuer, r.master_id, frozenset(), refused) is not None
        ]


def install() -> None:
    """Register the reading-request source with the portal's record registry."""
    portal.register_source(KIND, reading_requests_source)
