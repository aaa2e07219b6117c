"""The frozen-section API: request, attach slides, the on-duty worklist and its stream, claim and release, the
signed verdict and its check, the surgeon's stream and "seen". The workflow is in :mod:`archipel.wsi.frozen`,
the user guide in docs/frozen-section.md.

Every route asks the access policy (kind ``frozen-section``) and is audited; impossible steps answer 403, 404,
409 or 422 with the reason and change nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, BackgroundTasks, HTTPException, Request, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from archipel.platform import access, access_facts, audit
from archipel.platform.authn import Principal
from archipel.platform.http import PrincipalDep, RuntimeDep, guard
from archipel.platform.runtime import Runtime
from archipel.tiles import hooks
from archipel.wsi import duty, frozen, frozen_report, frozen_streams, frozen_verdict_api
from archipel.wsi.frozen import FrozenSectionError
from archipel.wsi.frozen_http import deliver, guard_request, http_error, load, refuse, resource, view
from archipel.wsi.frozen_view import worklist
from archipel.wsi.models import Slide

log = logging.getLogger("archipel.frozen")

router = APIRouter(prefix="/api/frozen-sections", tags=["frozen sections"])
# The report's fixed paths go before ``/{request_id}``, which would otherwise take them.
router.include_router(frozen_report.report_router)
router.include_router(frozen_verdict_api.router)


class FrozenSectionBody(BaseModel):
    """A frozen-section request, as the operating room sends it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    issuer: str = Field(min_length=1, max_length=64)
    patient_id: str = Field(min_length=1, max_length=64)
    accession: str = Field(default="", max_length=16)
    specimen: str = Field(min_length=1, max_length=200)
    specimen_site: str = Field(min_length=1, max_length=200)
    clinical_question: str = Field(min_length=1, max_length=4000)
    or_phone: str = Field(min_length=3, max_length=32, pattern=r"^[0-9+() .#*-]+$")


class AttachBody(BaseModel):
    """A slide to attach."""

    model_config = ConfigDict(extra="forbid")
    slide_id: str = Field(min_length=1, max_length=32)


@router.post("", status_code=status.HTTP_201_CREATED)
def create_request(
    body: FrozenSectionBody,
    request: Request,
    background: BackgroundTasks,
    rt: RuntimeDep,
    principal: PrincipalDep,
) -> dict[str, Any]:
    """Ask for a frozen section (surgeon or technician of a site holding the patient's record). The requester
    gets a care relationship, every on-duty pathologist is told. Returns the request (``request_id``)."""
    res = access.Resource(
        kind=access.FROZEN_SECTION, site=body.issuer, patient=f"{body.issuer}/{body.patient_id}"
    )
    res, facts = access_facts.load(rt.db, principal, res, rt.clock())
    guard(rt, principal, access.CREATE, res, event_type=audit.PATIENT_RECORD, request=request, facts=facts)
    if res.master is None:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"patient {body.issuer}/{body.patient_id} is unknown to the master patient index; register them first",
        )
    now = rt.clock()
    with rt.db.write() as s:
        req = frozen.create(
            s,
            issuer=body.issuer,
            patient_id=body.patient_id,
            master_id=res.master,
            accession=body.accession,
            specimen=body.specimen,
            specimen_site=body.specimen_site,
            clinical_question=body.clinical_question,
            or_phone=body.or_phone,
            requested_by=principal.subject,
            requesting_site=principal.site,
            now=now,
        )
        request_id = req.id
    background.add_task(deliver, rt)
    return view(rt, request_id)


def _on_duty_or_refuse(rt: Runtime, principal: Principal, request: Request, action: str) -> None:
    with rt.db.sessions() as s:
        on = principal.role == "pathologist" and duty.is_on_duty(s, principal.subject, rt.clock())
    if not on:
        raise refuse(rt, principal, request, action, "the urgent worklist is for pathologists on duty")
    guard(
        rt,
        principal,
        access.SEARCH,
        access.Resource(kind=access.FROZEN_SECTION),
        event_type=audit.QUERY,
        request=request,
    )


@router.get("/worklist")
def get_worklist(request: Request, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """The on-duty pathologist's urgent worklist: open requests, oldest first, then the last day's answered
    ones; each with state, slides, claim and elapsed minutes against the 20-minute target."""
    _on_duty_or_refuse(rt, principal, request, "search:frozen-section")
    _, facts = access_facts.load(rt.db, principal, None, rt.clock())
    scope = access.read_scope(principal, facts)
    with rt.db.sessions() as s:
        return worklist(s, scope, facts, rt.clock())


@router.get("/stream", response_class=StreamingResponse)
def worklist_stream(request: Request, rt: RuntimeDep, principal: PrincipalDep) -> StreamingResponse:
    """Server-Sent Events for on-duty pathologists: one event per new request or change of a request they may
    see (``requested``, ``slide-attached``, ``claimed``, ``released``, ``first-view``, ``verdict``, ``seen``)."""
    _on_duty_or_refuse(rt, principal, request, "search:frozen-section")

    def on_duty() -> bool:
        with rt.db.sessions() as s:
            return duty.is_on_duty(s, principal.subject, rt.clock())

    events = frozen_streams.stream(
        request,
        frozen_streams.visible_events(rt, principal),
        after=frozen_streams.last_event_id(request) or _latest_event(rt),
        may_go_on=on_duty,
        ends_with="",
    )
    return StreamingResponse(events, media_type=frozen_streams.MEDIA_TYPE, headers=frozen_streams.HEADERS)


def _latest_event(rt: Runtime) -> int:
    from sqlalchemy import func, select

    with rt.db.sessions() as s:
        return int(s.execute(select(func.coalesce(func.max(frozen.FrozenSectionEvent.id), 0))).scalar_one())


@router.get("/{request_id}")
def get_request(request_id: int, request: Request, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """A request: patient, specimen, question, state, slides, claim, the time of each step, and its verdict."""
    guard_request(rt, principal, access.READ, resource(load(rt, request_id)), request)
    return view(rt, request_id)


@router.post("/{request_id}/slides")
def attach_slide(
    request_id: int, body: AttachBody, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Attach a slide of the same patient (surgeon or technician of the site); 422 for another patient's."""
    req = load(rt, request_id)
    guard_request(rt, principal, access.CREATE, resource(req), request)
    now = rt.clock()
    with rt.db.write() as s:
        slide = s.get(Slide, body.slide_id)
        if slide is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no slide {body.slide_id}")
        try:
            frozen.attach(
                s, frozen.get_for_update(s, request_id), slide, how="explicit", by=principal.subject, now=now
            )
        except FrozenSectionError as exc:
            raise http_error(exc) from exc
    return view(rt, request_id)


@router.post("/{request_id}/claim")
def claim(request_id: int, request: Request, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """Take the request for ``frozen_claim_minutes`` (claim again to renew); 409 names who holds it, until when."""
    req = load(rt, request_id)
    guard_request(rt, principal, access.UPDATE, resource(req), request)
    if principal.role != "pathologist":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only a pathologist claims a frozen section")
    with rt.db.write() as s:
        try:
            frozen.claim(
                s,
                frozen.get_for_update(s, request_id),
                principal.subject,
                minutes=rt.settings.frozen_claim_minutes,
                now=rt.clock(),
            )
        except FrozenSectionError as exc:
            raise http_error(exc) from exc
    return view(rt, request_id)


@router.post("/{request_id}/release")
def release(request_id: int, request: Request, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """Give the claim back, so that another pathologist may take it."""
    req = load(rt, request_id)
    guard_request(rt, principal, access.UPDATE, resource(req), request)
    with rt.db.write() as s:
        try:
            frozen.release(s, frozen.get_for_update(s, request_id), principal.subject, rt.clock())
        except FrozenSectionError as exc:
            raise http_error(exc) from exc
    return view(rt, request_id)


@router.get("/{request_id}/events", response_class=StreamingResponse)
def request_events(
    request_id: int, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> StreamingResponse:
    """Server-Sent Events of one request's changes (slide attached, claimed, first view, verdict, seen), from
    the start (or ``Last-Event-ID``); the stream ends after ``seen``."""
    guard_request(rt, principal, access.READ, resource(load(rt, request_id)), request)
    events = frozen_streams.stream(
        request, frozen_streams.request_events(rt, request_id), after=frozen_streams.last_event_id(request)
    )
    return StreamingResponse(events, media_type=frozen_streams.MEDIA_TYPE, headers=frozen_streams.HEADERS)


def _first_view(rt: Runtime, principal: Principal, slide_id: str) -> None:
    """The tile service's open hook: the first open of a request's slide by a pathologist is a step."""
    if principal.kind != "user" or principal.role != "pathologist":
        return
    with rt.db.sessions() as s:
        if not frozen.awaits_first_view(s, slide_id):
            return
    with rt.db.write() as s:
        frozen.record_view(s, slide_id, principal.subject, rt.clock())


def install() -> None:
    """Register the first-view hook with the tile service."""
    hooks.register_open_hook("frozen-section-first-view", _first_view)
