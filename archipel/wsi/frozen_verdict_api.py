"""Signing a frozen-section verdict over HTTP, and checking its signature; the document and the signature are
made in :mod:`archipel.wsi.frozen_verdict`."""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

import anyio.to_thread
from fastapi import APIRouter, BackgroundTasks, Body, HTTPException, Request, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from archipel.platform import access, audit, notify
from archipel.platform.authn import Principal
from archipel.platform.credentials import require_recent_auth
from archipel.platform.http import PrincipalDep, RuntimeDep, client_address
from archipel.platform.runtime import Runtime
from archipel.radiology.archive import Archive
from archipel.radiology.dicomfile import InvalidInstance
from archipel.wsi import frozen, frozen_verdict
from archipel.wsi.frozen import FrozenSectionError, FrozenSectionRequest
from archipel.wsi.frozen_http import deliver, guard_request, http_error, load, resource, view

log = logging.getLogger("archipel.frozen")

#: Mounted under ``/api/frozen-sections`` by ``frozen_api``.
router = APIRouter(tags=["frozen sections"])


class VerdictBody(BaseModel):
    """The pathologist's answer."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    diagnosis: Literal["benign", "malignant", "uncertain", "deferred"]
    margins: Literal["clear", "involved", "close", "not-assessed"]
    text: str = Field(default="", max_length=10000)


def _tell_surgeon(s: Session, req: FrozenSectionRequest, subject: str, body: str) -> None:
    address = frozen.email_of(s, req.requested_by)
    if address:
        notify.enqueue(s, "email", address, subject, body, frozen.PURPOSE)
    notify.enqueue(s, "sms", req.or_phone, subject, body, frozen.PURPOSE)


def _notify_surgeon(s: Session, req: FrozenSectionRequest) -> None:
    diagnosis = frozen_verdict.DIAGNOSES[req.diagnosis][1]
    margins = frozen_verdict.MARGINS[req.margins][1]
    _tell_surgeon(
        s,
        req,
        f"Frozen section #{req.id}: {diagnosis}",
        f"Frozen section #{req.id} ({req.specimen}, {req.specimen_site}): {diagnosis}; {margins}.\n"
        f"{req.verdict_text}\nSigned by {req.verdict_by}. Open /api/frozen-sections/{req.id} and mark it seen.",
    )


@router.post("/{request_id}/verdict", status_code=status.HTTP_201_CREATED)
async def sign_verdict(
    request_id: int,
    body: Annotated[VerdictBody, Body()],
    request: Request,
    background: BackgroundTasks,
    rt: RuntimeDep,
    principal: PrincipalDep,
) -> dict[str, Any]:
    """Sign the verdict (claim holder, recent log-in): a verified DICOM SR in the case's study and an Ed25519
    signature of the canonical verdict. Once signed it never changes (409)."""
    answer = await anyio.to_thread.run_sync(lambda: _sign(request_id, body, request, rt, principal))
    background.add_task(deliver, rt)
    return answer


def _sign(
    request_id: int, body: VerdictBody, request: Request, rt: Runtime, principal: Principal
) -> dict[str, Any]:
    req = load(rt, request_id)
    guard_request(rt, principal, access.UPDATE, resource(req), request)
    now = rt.clock()
    with rt.db.sessions() as s:
        slides = frozen.slides_of(s, request_id)
    try:
        frozen.check_may_sign(req, principal.subject, bool(slides), now)
    except FrozenSectionError as exc:
        raise http_error(exc) from exc
    require_recent_auth(rt.settings.frozen_verdict_reauth_seconds)(request, rt, principal)
    verdict = frozen_verdict.Verdict(body.diagnosis, body.margins, body.text)
    study_uid = slides[0].study_uid
    ds = frozen_verdict.build_sr(
        rt.db,
        req,
        verdict,
        study_uid=study_uid,
        pathologist=principal.subject,
        organisation=principal.site,
        when=now,
    )
    data = frozen_verdict.to_part10(ds)
    try:
        stored = Archive(rt.db, rt.blobs, rt.settings.duplicate_policy).store(data, default_issuer=req.issuer)
    except InvalidInstance as exc:
        log.error("event=frozen_sr_refused request=%d reason=%s", request_id, exc)
        raise HTTPException(
            status.HTTP_500_INTERNAL_SERVER_ERROR, f"the archive refused the verdict: {exc}"
        ) from exc
    with rt.db.write() as s:
        row = frozen.get_for_update(s, request_id)
        try:
            frozen.check_may_sign(row, principal.subject, True, now)
        except FrozenSectionError as exc:
            raise http_error(exc) from exc
        row.verdict_at, row.verdict_by = now, principal.subject
        row.diagnosis, row.margins, row.verdict_text = body.diagnosis, body.margins, body.text
        row.study_uid, row.sr_series_uid, row.sr_sop_uid = stored.study_uid, stored.series_uid, stored.sop_uid
        payload = frozen_verdict.canonical(row, stored.sha256)
        row.signature, row.signing_key_id = frozen_verdict.sign(rt.settings, payload)
        row.signed_payload = payload.decode()
        row.claim_holder, row.claim_expires_at = principal.subject, None
        s.flush()
        frozen.end_grants(s, request_id=request_id, now=now)
        _notify_surgeon(s, row)
        frozen.event(
            s,
            row,
            frozen.EV_VERDICT,
            now,
            diagnosis=row.diagnosis,
            margins=row.margins,
            pathologist=row.verdict_by,
        )
    audit.record(
        rt.db,
        principal,
        audit.IMPORT,
        "frozen-section-verdict",
        patient=req.patient,
        master=req.master_id,
        obj=f"frozen-section:{request_id}",
        source=client_address(request),
        detail=f"sr={stored.sop_uid} diagnosis={body.diagnosis}",
    )
    log.info("event=frozen_verdict request=%d sr=%s", request_id, stored.sop_uid)
    return view(rt, request_id)


@router.get("/{request_id}/verdict/verify")
def verify_verdict(
    request_id: int, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Whether the verdict is what the platform key signed and its SR is in the archive unchanged."""
    req = load(rt, request_id)
    guard_request(rt, principal, access.READ, resource(req), request)
    with rt.db.sessions() as s:
        amendments = frozen.amendments_of(s, request_id)
    return frozen_verdict.verify(rt.settings, rt.db, req, amendments)


class AmendmentBody(VerdictBody):
    """A later answer, and why the signed one is amended."""

    reason: str = Field(min_length=1, max_length=2000)


@router.post("/{request_id}/amendments", status_code=status.HTTP_201_CREATED)
async def amend_verdict(
    request_id: int,
    body: Annotated[AmendmentBody, Body()],
    request: Request,
    background: BackgroundTasks,
    rt: RuntimeDep,
    principal: PrincipalDep,
) -> dict[str, Any]:
    """Amend a signed verdict (its pathologist, recent log-in): a new signed SR in the same series that names the
    amended one as its predecessor; the verdict itself stays as signed. The surgeon is told again."""
    answer = await anyio.to_thread.run_sync(lambda: _amend(request_id, body, request, rt, principal))
    background.add_task(deliver, rt)
    return answer


def _amend(
    request_id: int, body: AmendmentBody, request: Request, rt: Runtime, principal: Principal
) -> dict[str, Any]:
    req = load(rt, request_id)
    guard_request(rt, principal, access.UPDATE, resource(req), request)
    try:
        frozen.check_may_amend(req, principal.subject)
    except FrozenSectionError as exc:
        raise http_error(exc) from exc
    require_recent_auth(rt.settings.frozen_verdict_reauth_seconds)(request, rt, principal)
    now = rt.clock()
    with rt.db.sessions() as s:
        earlier = frozen.amendments_of(s, request_id)
    previous = earlier[-1].sr_sop_uid if earlier else req.sr_sop_uid
    amends = frozen_verdict.Amended(req.sr_series_uid, previous, len(earlier) + 2, body.reason)
    ds = frozen_verdict.build_sr(
        rt.db,
        req,
        frozen_verdict.Verdict(body.diagnosis, body.margins, body.text),
        study_uid=req.study_uid,
        pathologist=principal.subject,
        organisation=principal.site,
        when=now,
        amends=amends,
    )
    try:
        stored = Archive(rt.db, rt.blobs, rt.settings.duplicate_policy).store(
            frozen_verdict.to_part10(ds), default_issuer=req.issuer
        )
    except InvalidInstance as exc:
        log.error("event=frozen_amendment_refused request=%d reason=%s", request_id, exc)
        raise HTTPException(
            status.HTTP_500_INTERNAL_SERVER_ERROR, f"the archive refused the amendment: {exc}"
        ) from exc
    with rt.db.write() as s:
        row = frozen.get_for_update(s, request_id)
        am = frozen.FrozenSectionAmendment(
            request_id=request_id,
            at=now,
            by=principal.subject,
            reason=body.reason,
            diagnosis=body.diagnosis,
            margins=body.margins,
            text=body.text,
            sr_sop_uid=stored.sop_uid,
            signed_payload="",
            signature="",
            signing_key_id="",
        )
        s.add(am)
        s.flush()
        payload = frozen_verdict.canonical_amendment(row, am, stored.sha256)
        am.signature, am.signing_key_id = frozen_verdict.sign(rt.settings, payload)
        am.signed_payload = payload.decode()
        diagnosis, margins = frozen_verdict.DIAGNOSES[am.diagnosis][1], frozen_verdict.MARGINS[am.margins][1]
        _tell_surgeon(
            s,
            row,
            f"Frozen section #{row.id} AMENDED: {diagnosis}",
            f"The verdict of frozen section #{row.id} is amended: {diagnosis}; {margins}.\n{am.text}\n"
            f"Reason: {am.reason}\nSigned by {am.by}.",
        )
        frozen.event(
            s, row, frozen.EV_AMENDED, now, diagnosis=am.diagnosis, margins=am.margins, pathologist=am.by
        )
    audit.record(
        rt.db,
        principal,
        audit.IMPORT,
        "frozen-section-amendment",
        patient=req.patient,
        master=req.master_id,
        obj=f"frozen-section:{request_id}",
        source=client_address(request),
        detail=f"sr={stored.sop_uid} amends={previous} diagnosis={body.diagnosis}",
    )
    log.info("event=frozen_amended request=%d sr=%s", request_id, stored.sop_uid)
    return view(rt, request_id)


@router.post("/{request_id}/seen")
def seen(request_id: int, request: Request, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """The requesting surgeon records that they read the verdict."""
    req = load(rt, request_id)
    guard_request(rt, principal, access.UPDATE, resource(req), request)
    with rt.db.write() as s:
        try:
            frozen.mark_seen(s, frozen.get_for_update(s, request_id), principal.subject, rt.clock())
        except FrozenSectionError as exc:
            raise http_error(exc) from exc
    return view(rt, request_id)
