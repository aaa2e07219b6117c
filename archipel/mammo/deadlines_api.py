"""HTTP routes of the results-letter deadline watch and of the episodes ready for a decision.

Both list women of the whole programme, so they are its coordinators' and administrators' (kind
``screening-programme``, as the metrics); each call is audited, and a refusal is a 403 and an audited denial.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, status

from archipel.mammo import deadlines, episodes
from archipel.mammo.api import programme_facts, refused
from archipel.mammo.episodes import ScreeningError
from archipel.mammo.models import Programme
from archipel.platform import access, audit
from archipel.platform.authn import Principal
from archipel.platform.credentials import PrincipalDep, RuntimeDep
from archipel.platform.http import guard
from archipel.platform.runtime import Runtime

router = APIRouter(prefix="/api/mammo", tags=["screening"])


def _programme(rt: Runtime, principal: Principal, request: Request, code: str, what: str) -> Programme:
    resource = access.Resource(kind=access.SCREENING_PROGRAMME, ident=f"{what} of {code}")
    facts = programme_facts(rt, principal, code)
    guard(rt, principal, access.READ, resource, event_type=audit.QUERY, request=request, facts=facts)
    with rt.db.sessions() as s:
        try:
            return episodes.programme(s, code)
        except ScreeningError as exc:
            raise refused(exc) from exc


@router.get("/programmes/{code}/deadlines")
def get_deadlines(
    code: str,
    request: Request,
    rt: RuntimeDep,
    principal: PrincipalDep,
    state: str = "",
    warning_days: Annotated[int, Query(ge=0, le=60)] = deadlines.DEFAULT_WARNING_DAYS,
) -> dict[str, Any]:
    """The episodes whose result is not sent, most urgent first (``state``: fine, at_risk or late; all when
    empty), each with its due date, days left and the stage it waits at."""
    if state and state not in deadlines.STATES:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_ENTITY, f"state is one of {', '.join(deadlines.STATES)}"
        )
    prog = _programme(rt, principal, request, code, "results-letter deadlines")
    today = rt.clock().date()
    with rt.db.sessions() as s:
        rows = [d.row() for d in deadlines.watch(s, prog, today, warning_days, state)]
    counts = {k: sum(1 for r in rows if r["state"] == k) for k in deadlines.STATES}
    return {
        "programme": prog.code,
        "today": today.isoformat(),
        "result_deadline_days": prog.result_deadline_days,
        "warning_days": warning_days,
        "counts": counts,
        "episodes": rows,
    }


@router.get("/programmes/{code}/ready-for-decision")
def get_ready_for_decision(
    code: str,
    request: Request,
    rt: RuntimeDep,
    principal: PrincipalDep,
    warning_days: Annotated[int, Query(ge=0, le=60)] = deadlines.DEFAULT_WARNING_DAYS,
) -> dict[str, Any]:
    """The episodes whose reads are complete and that wait only for the decision, oldest exam first, each
    with where it stands against its results-letter deadline."""
    prog = _programme(rt, principal, request, code, "episodes ready for a decision")
    today = rt.clock().date()
    with rt.db.sessions() as s:
        found = deadlines.ready_for_decision(s, prog)
        rows = [deadlines.deadline_of(prog, ep, today, warning_days).row() for ep in found]
    return {"programme": prog.code, "episodes": rows}
