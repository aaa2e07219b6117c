"""HTTP routes of reading work: the worklist, claiming, skipping and deferring a case, submitting a read, and
the programme's metrics.

A claim (and the preparation of the next case, which claims nothing) asks the policy about a ``reading-task``
(any screening reader), then the programme's rules (the reader's qualification, the same reader never twice
on one exam); their refusals are 403 and audited. The metrics, with every reader's figures, are the
programme's coordinators' and administrators' (kind ``screening-programme``).
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import PlainTextResponse, Response

from archipel.mammo import episodes, metrics, metrics_export, reading, volumes
from archipel.mammo.api import check, deny, episode_resource, programme_facts, reading_view, refused
from archipel.mammo.episodes import ScreeningError
from archipel.mammo.models import Episode
from archipel.mammo.schemas import ReadBody, ReasonBody
from archipel.platform import access, audit
from archipel.platform.authn import Principal
from archipel.platform.credentials import PrincipalDep, RuntimeDep
from archipel.platform.http import guard
from archipel.platform.runtime import Runtime

router = APIRouter(prefix="/api/mammo", tags=["screening"])


@router.get("/worklist")
def get_worklist(
    request: Request,
    rt: RuntimeDep,
    principal: PrincipalDep,
    role: str = "",
    programme: str = "",
    batch: str = "",
) -> list[dict[str, Any]]:
    """The cases the caller may read now: their claims first, then by priority, batch and date; ``role``,
    ``programme`` and ``batch`` (a clinic's batch) narrow the list."""
    resource = access.Resource(kind=access.SCREENING, ident="screening worklist")
    check(rt, principal, access.SEARCH, resource, request, audit.QUERY)
    with rt.db.sessions() as s:
        return reading.worklist(s, principal.subject, rt.clock(), role, programme, batch)


@router.get("/readers/me")
def get_my_volumes(rt: RuntimeDep, principal: PrincipalDep) -> list[dict[str, Any]]:
    """The caller's reads over the last year in each programme, against its minimum, with a warning below it."""
    with rt.db.sessions() as s:
        return [v.as_dict() for v in volumes.volumes_of(s, principal.subject, rt.clock())]


@router.get("/metrics", response_model=None)
def get_metrics(
    request: Request,
    rt: RuntimeDep,
    principal: PrincipalDep,
    programme: str,
    start: Annotated[date | None, Query(alias="from")] = None,
    end: Annotated[date | None, Query(alias="to")] = None,
    format: str = "json",
) -> dict[str, Any] | Response:
    """The programme's figures (see ``metrics``) as JSON, or as CSV with ``format=csv``."""
    if format not in ("json", "csv"):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, "format is json or csv")
    if start and end and end < start:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, "'to' is before 'from'")
    # Every reader's figures: the programme's coordinators and administrators only (docs/mammo.md).
    resource = access.Resource(kind=access.SCREENING_PROGRAMME, ident=f"screening metrics of {programme}")
    facts = programme_facts(rt, principal, programme)
    guard(rt, principal, access.READ, resource, event_type=audit.QUERY, request=request, facts=facts)
    with rt.db.sessions() as s:
        try:
            prog = episodes.programme(s, programme)
        except ScreeningError as exc:
            raise refused(exc) from exc
        figures = metrics.programme_metrics(s, prog, start, end)
    if format == "csv":
        return PlainTextResponse(metrics_export.as_csv(figures), media_type="text/csv")
    return figures


def _task_episode(rt: Runtime, task_id: int) -> Episode:
    with rt.db.sessions() as s:
        try:
            _, ep, _ = reading.task_context(s, task_id)
        except ScreeningError as exc:
            raise refused(exc) from exc
    return ep


@router.post("/tasks/{task_id}/prepare")
def prepare_task(task_id: int, request: Request, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """Fetch a case ahead without claiming it (the reading screen's next case): a case the caller could claim
    now, whose images they may then see for a few minutes; it stays open to every reader."""
    ep = _task_episode(rt, task_id)
    resource = _task_resource(ep, task_id, f"preparation of screening task {task_id} of episode {ep.id}")
    check(rt, principal, access.UPDATE, resource, request, audit.PATIENT_RECORD)
    try:
        with rt.db.write() as s:
            until = reading.prepare(s, task_id, principal.subject, rt.clock())
    except ScreeningError as exc:
        if exc.status == status.HTTP_403_FORBIDDEN:
            raise deny(rt, principal, request, "update:reading-task", resource, str(exc)) from exc
        raise refused(exc) from exc
    return {"task_id": task_id, "episode_id": ep.id, "until": until.isoformat()}


def _task_resource(ep: Episode, task_id: int, ident: str = "") -> access.Resource:
    return access.Resource(
        kind=access.READING_TASK,
        site=ep.site,
        patient=f"{ep.issuer}/{ep.patient_id}",
        master=ep.master_id,
        ident=ident or f"screening task {task_id} of episode {ep.id}",
    )


@router.post("/tasks/{task_id}/claim")
def claim_task(task_id: int, request: Request, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """Claim a case: it is locked to the caller, who gets the reading assignment to the woman's images for as
    long as the claim holds (claiming again renews it)."""
    ep = _task_episode(rt, task_id)
    resource = _task_resource(ep, task_id)
    check(rt, principal, access.UPDATE, resource, request, audit.PATIENT_RECORD)
    try:
        with rt.db.write() as s:
            task = reading.claim(s, task_id, principal.subject, rt.clock())
            return {"task_id": task.id, "role": task.role, "episode_id": ep.id, "status": task.status}
    except ScreeningError as exc:
        if exc.status == status.HTTP_403_FORBIDDEN:
            raise deny(rt, principal, request, "update:reading-task", resource, str(exc)) from exc
        raise refused(exc) from exc


def _release(
    task_id: int, body: ReasonBody, request: Request, rt: Runtime, principal: Principal, hours: int
) -> dict[str, Any]:
    ep = _task_episode(rt, task_id)
    resource = _task_resource(ep, task_id)
    check(rt, principal, access.UPDATE, resource, request, audit.PATIENT_RECORD)
    try:
        with rt.db.write() as s:
            task = reading.release(s, task_id, principal.subject, body.reason, rt.clock(), hours)
            return {"task_id": task.id, "status": task.status, "note": task.note}
    except ScreeningError as exc:
        raise refused(exc) from exc


@router.post("/tasks/{task_id}/skip")
def skip_task(
    task_id: int, body: ReasonBody, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Give a case back with a reason; it is not offered to the caller again."""
    return _release(task_id, body, request, rt, principal, 0)


@router.post("/tasks/{task_id}/defer")
def defer_task(
    task_id: int, body: ReasonBody, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Put a case aside for ``hours`` with a reason."""
    return _release(task_id, body, request, rt, principal, body.hours)


@router.post("/tasks/{task_id}/reading", status_code=status.HTTP_201_CREATED)
def submit_reading(
    task_id: int, body: ReadBody, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Submit the read of a claimed case (once: a second submission is refused and changes nothing)."""
    ep = _task_episode(rt, task_id)
    check(
        rt,
        principal,
        access.UPDATE,
        episode_resource(ep, f"read of screening task {task_id}"),
        request,
        audit.PATIENT_RECORD,
    )
    try:
        with rt.db.write() as s:
            row = reading.submit(s, task_id, principal.subject, body, rt.clock())
            return reading_view(row)
    except ScreeningError as exc:
        raise refused(exc) from exc
