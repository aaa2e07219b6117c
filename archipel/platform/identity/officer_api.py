"""The identity officer's HTTP API: register identities, work the review queue, link, unlink, merge, unmerge.

Every route passes the access policy on a resource of kind ``identity`` (identity officers and administrators;
purpose ``identity-management``), which audits the access; every change is audited again by the MPI with its
reason. Merge and unmerge need a recent login (RFC 9470 challenge otherwise). A refused action answers with its
reason and changes nothing: 404 for something that does not exist, 409 for an action that does not fit the
current state (already linked, already undone, declared different people...), 422 for malformed input (an
impossible date, an unknown issuer, a missing reason, a merge of a master into itself).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field

from archipel.platform import access, audit
from archipel.platform.authn import Principal
from archipel.platform.credentials import PrincipalDep, RuntimeDep, client_address, require_recent_auth
from archipel.platform.identity import records, review
from archipel.platform.identity.intake import (
    IdentityConflict,
    IdentityError,
    IdentityNotFound,
    LocalIdentityInput,
)
from archipel.platform.identity.service import register
from archipel.platform.runtime import Runtime

router = APIRouter(prefix="/api/identity", tags=["identity"])

#: How recent the login behind a merge or an unmerge must be.
MERGE_REAUTH = timedelta(minutes=5)
# Checked after the policy, so that someone who may not merge at all is told so (403) whatever their login age.
_recent_login = require_recent_auth(MERGE_REAUTH)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LocalIdentityBody(_Body):
    """A local identity as a site knows it; every field but ``issuer`` and ``local_id`` may be empty."""

    issuer: str
    local_id: str
    birth_name: str = ""
    used_name: str = ""
    given_names: str = ""
    birth_date: str = Field("", description="YYYY-MM-DD or YYYYMMDD")
    sex: str = ""
    birth_place: str = Field("", description="INSEE code of the birth place")
    address: str = ""
    postcode: str = ""
    city: str = ""
    phone: str = ""
    ins: str = ""
    ins_status: str = Field("", description="PROV (default), RECUP, VALI or QUAL")


class Reason(_Body):
    """Why an officer decides: required for every decision, kept in the history and the audit trail."""

    reason: str


class LinkBody(Reason):
    """Put local identity ``issuer/local_id`` on master ``master_id``."""

    issuer: str
    local_id: str
    master_id: int


class UnlinkBody(Reason):
    """Take local identity ``issuer/local_id`` off its master."""

    issuer: str
    local_id: str


class MergeBody(Reason):
    """Merge master ``source_master_id`` into ``target_master_id``."""

    source_master_id: int
    target_master_id: int


def _refusal(exc: IdentityError) -> HTTPException:
    if isinstance(exc, IdentityNotFound):
        return HTTPException(status.HTTP_404_NOT_FOUND, str(exc))
    if isinstance(exc, IdentityConflict):
        return HTTPException(status.HTTP_409_CONFLICT, str(exc))
    return HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, str(exc))


def _guard(
    rt: Runtime,
    who: Principal,
    request: Request,
    action: str,
    *,
    patient: str = "",
    master: int | None = None,
    ident: str = "",
) -> None:
    """The policy on an identity record (audited): ``patient`` a local identity as ``issuer/PatientID``."""
    try:
        access.check(
            rt.db,
            who,
            action,
            access.Resource(kind="identity", patient=patient, master=master, ident=ident),
            event_type=audit.PATIENT_RECORD,
            source=client_address(request),
        )
    except access.AccessDenied as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, exc.reason) from exc


@router.post("/local-identities", status_code=status.HTTP_201_CREATED)
def register_identity(
    body: LocalIdentityBody, request: Request, rt: RuntimeDep, who: PrincipalDep
) -> dict[str, Any]:
    """Create or update a local identity and link it by the MPI's rules; returns where it now stands."""
    _guard(rt, who, request, access.CREATE, patient=f"{body.issuer}/{body.local_id}")
    try:
        outcome = register(rt.db, LocalIdentityInput(**body.model_dump()))
    except IdentityError as exc:
        raise _refusal(exc) from exc
    return asdict(outcome)


@router.get("/local-identities/{issuer}/{local_id}")
def get_identity(
    issuer: str, local_id: str, request: Request, rt: RuntimeDep, who: PrincipalDep
) -> dict[str, Any]:
    """One local identity with its current link and every decision about it."""
    _guard(rt, who, request, access.READ, patient=f"{issuer}/{local_id}")
    try:
        view, history = records.local_record(rt.db, issuer, local_id)
    except IdentityError as exc:
        raise _refusal(exc) from exc
    return {"identity": asdict(view), "history": [asdict(h) for h in history]}


@router.get("/review")
def review_queue(
    request: Request, rt: RuntimeDep, who: PrincipalDep, limit: Annotated[int, Query(ge=1, le=5000)] = 1000
) -> list[dict[str, Any]]:
    """The open doubts, oldest first: which identity might belong to which master, the score and why."""
    _guard(rt, who, request, access.READ, ident="review-queue")
    return [asdict(e) for e in review.review_queue(rt.db, limit)]


@router.get("/masters/{master_id}")
def get_master(master_id: int, request: Request, rt: RuntimeDep, who: PrincipalDep) -> dict[str, Any]:
    """A master patient, its local identities and the history of its links and merges."""
    _guard(rt, who, request, access.READ, master=master_id)
    try:
        return asdict(records.master_record(rt.db, master_id))
    except IdentityError as exc:
        raise _refusal(exc) from exc


@router.post("/links")
def link(body: LinkBody, request: Request, rt: RuntimeDep, who: PrincipalDep) -> dict[str, Any]:
    """Put a local identity on a master by hand (its open doubts are resolved)."""
    _guard(rt, who, request, access.UPDATE, master=body.master_id, patient=f"{body.issuer}/{body.local_id}")
    try:
        review.link(rt.db, who, body.issuer, body.local_id, body.master_id, body.reason)
    except IdentityError as exc:
        raise _refusal(exc) from exc
    return {"issuer": body.issuer, "local_id": body.local_id, "master_id": body.master_id}


@router.post("/unlinks")
def unlink(body: UnlinkBody, request: Request, rt: RuntimeDep, who: PrincipalDep) -> dict[str, Any]:
    """Take a local identity off its master onto a new one; it is never linked to those identities again."""
    _guard(rt, who, request, access.UPDATE, patient=f"{body.issuer}/{body.local_id}")
    try:
        master_id = review.unlink(rt.db, who, body.issuer, body.local_id, body.reason)
    except IdentityError as exc:
        raise _refusal(exc) from exc
    return {"issuer": body.issuer, "local_id": body.local_id, "master_id": master_id}


@router.post("/review/{review_id}/accept")
def accept(
    review_id: int, body: Reason, request: Request, rt: RuntimeDep, who: PrincipalDep
) -> dict[str, Any]:
    """Resolve a doubt as "same person": the identity joins the proposed master."""
    _guard(rt, who, request, access.UPDATE, ident=f"review/{review_id}")
    try:
        review.accept(rt.db, who, review_id, body.reason)
    except IdentityError as exc:
        raise _refusal(exc) from exc
    return {"review_id": review_id, "resolution": "linked"}


@router.post("/review/{review_id}/different")
def different(
    review_id: int, body: Reason, request: Request, rt: RuntimeDep, who: PrincipalDep
) -> dict[str, Any]:
    """Resolve a doubt as "different people": the identity keeps its own master for good."""
    _guard(rt, who, request, access.UPDATE, ident=f"review/{review_id}")
    try:
        review.different(rt.db, who, review_id, body.reason)
    except IdentityError as exc:
        raise _refusal(exc) from exc
    return {"review_id": review_id, "resolution": "different"}


@router.post("/merges", status_code=status.HTTP_201_CREATED)
def merge(body: MergeBody, request: Request, rt: RuntimeDep, who: PrincipalDep) -> dict[str, Any]:
    """Merge one master into another (recent login required); returns the merge's id, for an unmerge."""
    _guard(
        rt, who, request, access.UPDATE, master=body.target_master_id, ident=f"master/{body.source_master_id}"
    )
    _recent_login(request, rt, who)
    try:
        merge_id = review.merge(rt.db, who, body.source_master_id, body.target_master_id, body.reason)
    except IdentityError as exc:
        raise _refusal(exc) from exc
    return {"merge_id": merge_id, "master_id": body.target_master_id}


@router.post("/merges/{merge_id}/unmerge")
def unmerge(
    merge_id: int, body: Reason, request: Request, rt: RuntimeDep, who: PrincipalDep
) -> dict[str, Any]:
    """Undo a merge (recent login required): both masters and their identities' links are restored exactly."""
    _guard(rt, who, request, access.UPDATE, ident=f"merge/{merge_id}")
    _recent_login(request, rt, who)
    try:
        review.unmerge(rt.db, who, merge_id, body.reason)
    except IdentityError as exc:
        raise _refusal(exc) from exc
    return {"merge_id": merge_id, "undone": True}
