"""The teleradiology API: ask for a reading, the worklist (by priority, subspecialty and site, soonest due
first, with SLA timers), claim and release, cancel, priors, reports (preliminary, signed final, addenda) and the
acknowledgement of a critical result. The workflow is :mod:`archipel.radiology.telerad`, the user guide
docs/teleradiology.md.

Every route asks the access policy (kind ``reading-request``) and is audited; impossible steps answer 403, 404,
409 or 422 with the reason and change nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, BackgroundTasks, HTTPException, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field

from archipel.platform import access, access_facts, audit, notify
from archipel.platform.authn import Principal
from archipel.platform.http import PrincipalDep, RuntimeDep, client_address, guard
from archipel.platform.runtime import Runtime
from archipel.radiology import (
    prefetch,
    telerad,
    telerad_critical,
    telerad_opinions_api,
    telerad_portal,
    telerad_priors,
    telerad_reports,
    telerad_view,
)
from archipel.radiology.telerad_models import Physician, TeleradError

log = logging.getLogger("archipel.telerad")

router = APIRouter(prefix="/api/telerad", tags=["teleradiology"])
router.include_router(telerad_opinions_api.router)


class PhysicianBody(BaseModel):
    """The requesting physician and how to reach them."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    name: str = Field(min_length=1, max_length=200)
    email: str = Field(default="", max_length=255)
    phone: str = Field(default="", max_length=32, pattern=r"^[0-9+() .#*-]*$")
    #: Their user name, when they have an account here (critical results then reach their inbox).
    username: str = Field(default="", max_length=128)


class ReadingRequestBody(BaseModel):
    """A reading request as a site sends it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    issuer: str = Field(min_length=1, max_length=64)
    patient_id: str = Field(min_length=1, max_length=64)
    accession_number: str = Field(default="", max_length=16)
    study_uid: str = Field(default="", max_length=64, pattern=r"^[0-9.]*$")
    physician: PhysicianBody | None = None
    clinical_info: str = Field(min_length=1, max_length=4000)
    justification: str = Field(min_length=1, max_length=4000)
    priority: str = Field(min_length=1, max_length=16)
    subspecialty: str = Field(default="", max_length=32)
    placer_order: str = Field(default="", max_length=64)


class CancelBody(BaseModel):
    """Why a request is cancelled."""

    model_config = ConfigDict(extra="forbid")
    reason: str = Field(default="", max_length=2000)


class ReportBody(BaseModel):
    """A report's text and its critical flag."""

    model_config = ConfigDict(extra="forbid")
    text: str = Field(default="", max_length=100_000)
    critical: bool = False
    critical_finding: str = Field(default="", max_length=4000)


class AddendumBody(BaseModel):
    """An addendum to a signed report."""

    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=100_000)
    reason: str = Field(min_length=1, max_length=2000)


class AcknowledgeBody(BaseModel):
    """An acknowledgement; ``read_back`` names the requester who acknowledged by telephone (reader only)."""

    model_config = ConfigDict(extra="forbid")
    read_back: str = Field(default="", max_length=80)


def http_error(exc: TeleradError) -> HTTPException:
    """The HTTP answer of a refused step."""
    return HTTPException(exc.status, exc.reason)


def deliver(rt: Runtime) -> None:
    """Send what the step put in the outbox, after the response; a failure leaves it for the outbox sweep."""
    try:
        notify.deliver_now(rt.db, rt.settings)
    except Exception:  # the sweep sends it later
        log.exception("event=telerad_notify_delivery_failed")


def _load(rt: Runtime, request_id: int) -> Any:
    with rt.db.sessions() as s:
        try:
            return telerad.get(s, request_id)
        except TeleradError as exc:
            raise http_error(exc) from exc


def _guard(rt: Runtime, principal: Principal, action: str, req: Any, request: Request) -> access.Facts:
    res, facts = access_facts.load(rt.db, principal, telerad.resource(req), rt.clock())
    guard(rt, principal, action, res, event_type=audit.PATIENT_RECORD, request=request, facts=facts)
    return facts


def _detail(rt: Runtime, request_id: int) -> dict[str, Any]:
    with rt.db.sessions() as s:
        return telerad_view.detail(s, telerad.get(s, request_id), rt.clock())


@router.post("/requests", status_code=status.HTTP_201_CREATED)
def create(
    body: ReadingRequestBody, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Ask for a reading of a study, or of the study expected under an accession number. The requester is the
    caller unless ``physician`` names another; ``priority`` is stat, urgent, scheduled or emergency (422
    otherwise). The same ``placer_order`` of the same site returns the request made the first time."""
    doctor = Physician(principal.subject, username=principal.subject)
    if body.physician is not None:
        given = body.physician
        doctor = Physician(given.name, given.email, given.phone, given.username)
    try:
        req = telerad.create_request(
            rt.db,
            principal,
            issuer=body.issuer,
            patient_id=body.patient_id,
            accession_number=body.accession_number,
            study_uid=body.study_uid or None,
            requesting_site=principal.site if principal.site not in ("", "*") else body.issuer,
            physician=doctor,
            clinical_info=body.clinical_info,
            justification=body.justification,
            priority=body.priority,
            subspecialty=body.subspecialty,
            placer_order=body.placer_order,
            now=rt.clock(),
            source=client_address(request),
        )
    except TeleradError as exc:
        raise http_error(exc) from exc
    return _detail(rt, req.id)


@router.get("/requests")
def worklist(
    request: Request,
    rt: RuntimeDep,
    principal: PrincipalDep,
    priority: str = "",
    subspecialty: str = "",
    site: str = "",
    state: str = "",
    mine: bool = False,
    limit: int = Query(default=200, ge=1, le=1000),
) -> dict[str, Any]:
    """The worklist, soonest due first: each request with its due time and ``remaining_seconds``. Filters:
    ``priority``, ``subspecialty``, ``site`` (requesting site), ``state`` (``open`` by default, ``all``, or a
    comma-separated list), ``mine`` (my claims)."""
    guard(
        rt,
        principal,
        access.SEARCH,
        access.Resource(kind=access.READING_REQUEST),
        event_type=audit.QUERY,
        request=request,
    )
    if priority and priority.lower() not in telerad.PRIORITIES:
        raise HTTPException(
            422, f"unknown priority {priority!r}; choose one of: {', '.join(telerad.PRIORITIES)}"
        )
    try:
        states = telerad_view.parse_states(state)
    except TeleradError as exc:
        raise http_error(exc) from exc
    flt = telerad_view.WorklistFilter(priority.lower(), subspecialty, site, states, mine, limit)
    now = rt.clock()
    with rt.db.sessions() as s:
        items = telerad_view.worklist(s, principal, flt, now)
    return {"now": now.isoformat(), "requests": items}


@router.get("/requests/{request_id}")
def get_request(request_id: int, request: Request, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """A request with its SLA, claim, reports and critical results."""
    _guard(rt, principal, access.READ, _load(rt, request_id), request)
    return _detail(rt, request_id)


@router.post("/requests/{request_id}/claim")
def claim(
    request_id: int, request: Request, background: BackgroundTasks, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Take the request for ``telerad.CLAIM_MINUTES`` (claim again to renew); 409 names who holds it and until
    when. An expired claim is taken over. A new claim also asks the region's PACS for the patient's remote
    priors (a prefetch job, after the answer)."""
    _guard(rt, principal, access.UPDATE, _load(rt, request_id), request)
    if principal.role not in access.TELERAD_READERS:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "only a radiologist of the reading pool claims a request"
        )
    with rt.db.write() as s:
        try:
            new = telerad.claim(s, telerad.get_for_update(s, request_id), principal.subject, now=rt.clock())
        except TeleradError as exc:
            raise http_error(exc) from exc
    if new:
        background.add_task(telerad_priors.prefetch_after_claim, rt, principal, request_id)
    return _detail(rt, request_id)


@router.post("/requests/{request_id}/release")
def release(request_id: int, request: Request, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """Give the claim back; the request waits in the worklist again."""
    _guard(rt, principal, access.UPDATE, _load(rt, request_id), request)
    with rt.db.write() as s:
        try:
            telerad.release(s, telerad.get_for_update(s, request_id), principal.subject, rt.clock())
        except TeleradError as exc:
            raise http_error(exc) from exc
    return _detail(rt, request_id)


@router.post("/requests/{request_id}/cancel")
def cancel(
    request_id: int, body: CancelBody, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Cancel a request (the requester, their site, or an admin); 409 once its final report is signed."""
    req = _load(rt, request_id)
    of_site = principal.site not in ("", "*") and principal.site in (req.requesting_site, req.issuer)
    if not (
        principal.subject in (req.created_by, req.physician_user) or of_site or principal.role == "admin"
    ):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only the requesting site cancels its request")
    try:
        telerad.cancel_request(
            rt.db, principal, request_id, reason=body.reason, now=rt.clock(), source=client_address(request)
        )
    except TeleradError as exc:
        raise http_error(exc) from exc
    return _detail(rt, request_id)


@router.get("/requests/{request_id}/priors")
def priors(request_id: int, request: Request, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """The patient's other studies at every site (through the MPI) that the caller may see, newest first, each
    with its status (``listed``; for a study the request's prefetch found at a remote node,
    ``prefetch-requested``, ``available`` once here, or ``failed`` with its reason); recorded on the request."""
    req = _load(rt, request_id)
    _guard(rt, principal, access.READ, req, request)
    _, facts = access_facts.load(rt.db, principal, None, rt.clock())
    scope = access.read_scope(principal, facts)
    with rt.db.write() as s:
        req = telerad.get_for_update(s, request_id)
        found = telerad_priors.record_priors(s, req, scope, rt.clock(), viewer=principal.subject)
    return {"request_id": request_id, "priors": found}


@router.post("/requests/{request_id}/priors/prefetch", status_code=status.HTTP_202_ACCEPTED)
def prefetch_priors(
    request_id: int, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Fetch the patient's studies held by the region's other PACS (``radiology.prefetch``) for the claim
    holder; returns the prefetch job, whose progress is in the job API."""
    req = _load(rt, request_id)
    _guard(rt, principal, access.UPDATE, req, request)
    try:
        telerad.check_holder(req, principal.subject, rt.clock())
        job_id = telerad_priors.request_remote_priors(rt, principal, req)
    except TeleradError as exc:
        raise http_error(exc) from exc
    except prefetch.PrefetchError as exc:
        raise HTTPException(422, str(exc)) from exc
    except access.AccessDenied as exc:
        raise HTTPException(403, exc.reason) from exc
    return {"request_id": request_id, "job_id": job_id, "job_url": f"/api/jobs/{job_id}"}


def _guard_report(rt: Runtime, principal: Principal, request_id: int, request: Request) -> None:
    _guard(rt, principal, access.UPDATE, _load(rt, request_id), request)


def _report_step(
    rt: Runtime,
    principal: Principal,
    request_id: int,
    body: ReportBody,
    request: Request,
    background: BackgroundTasks,
    step: Callable[..., object],
) -> dict[str, Any]:
    """Run one report step (save the preliminary, sign the final) after the policy, then tell the requester."""
    _guard_report(rt, principal, request_id, request)
    report = telerad_reports.ReportInput(body.text, body.critical, body.critical_finding)
    try:
        step(rt, principal, request_id, report, client=client_address(request))
    except TeleradError as exc:
        raise http_error(exc) from exc
    background.add_task(deliver, rt)
    return _detail(rt, request_id)


@router.post("/requests/{request_id}/report")
def preliminary(
    request_id: int,
    body: ReportBody,
    request: Request,
    background: BackgroundTasks,
    rt: RuntimeDep,
    principal: PrincipalDep,
) -> dict[str, Any]:
    """Issue (or revise) the preliminary report; ``critical`` with its finding tells the requester at once."""
    return _report_step(
        rt, principal, request_id, body, request, background, telerad_reports.save_preliminary
    )


@router.post("/requests/{request_id}/sign")
def sign(
    request_id: int,
    body: ReportBody,
    request: Request,
    background: BackgroundTasks,
    rt: RuntimeDep,
    principal: PrincipalDep,
) -> dict[str, Any]:
    """Sign the final report (``text`` replaces the preliminary's when given); 409 when signed already."""
    return _report_step(rt, principal, request_id, body, request, background, telerad_reports.sign_final)


@router.post("/requests/{request_id}/addenda", status_code=status.HTTP_201_CREATED)
def addendum(
    request_id: int, body: AddendumBody, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Add a signed addendum to the final report (by the radiologist who signed it)."""
    _guard_report(rt, principal, request_id, request)
    try:
        telerad_reports.add_addendum(
            rt, principal, request_id, body.text, body.reason, client=client_address(request)
        )
    except TeleradError as exc:
        raise http_error(exc) from exc
    return _detail(rt, request_id)


@router.post("/critical-results/{critical_id}/acknowledge")
def acknowledge(
    critical_id: int, body: AcknowledgeBody, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Acknowledge a critical result: the requester (or their site), or the reader recording a telephone
    read-back (``read_back``). Acknowledging again keeps the first acknowledgement."""
    with rt.db.sessions() as s:
        try:
            c = telerad_critical.get(s, critical_id)
        except TeleradError as exc:
            raise http_error(exc) from exc
    req = _load(rt, c.request_id)
    _guard(rt, principal, access.READ, req, request)
    with rt.db.write() as s:
        try:
            c = telerad_critical.get(s, critical_id)
            telerad_critical.acknowledge(s, c, telerad.get(s, c.request_id), principal, rt.clock(),
                                         read_back=body.read_back)  # fmt: skip
            view = telerad_view.critical_view(c)
        except TeleradError as exc:
            raise http_error(exc) from exc
    return view


def install() -> None:
    """Link arriving studies to the requests that wait for their accession number; show reading requests in
    the professional timeline."""
    telerad.install()
    telerad_portal.install()
