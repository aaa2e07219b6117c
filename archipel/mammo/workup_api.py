"""HTTP routes of the deferred work-up after a recall: record its form, read an episode's forms.

As the other screening routes: the access policy decides (kind ``screening-episode``: update to record, read to
see) and every call is audited; a refusal by the workflow (not recalled, a final work-up recorded already) is 409
and changes nothing.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, status

from archipel.mammo import workup
from archipel.mammo.api import check, episode_resource, load_episode, refused
from archipel.mammo.episodes import ScreeningError, episode
from archipel.mammo.schemas import DeferredWorkupBody
from archipel.platform import access, audit
from archipel.platform.credentials import PrincipalDep, RuntimeDep

router = APIRouter(prefix="/api/mammo", tags=["screening"])


@router.post("/episodes/{episode_id}/deferred-workup", status_code=status.HTTP_201_CREATED)
def record_workup(
    episode_id: int, body: DeferredWorkupBody, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Record the deferred work-up of a recalled episode; a final conclusion records the episode's outcome."""
    ep = load_episode(rt, episode_id)
    resource = episode_resource(ep, f"deferred work-up of screening episode {ep.id}")
    check(rt, principal, access.UPDATE, resource, request, audit.PATIENT_RECORD)
    try:
        with rt.db.write() as s:
            row = workup.record(s, episode(s, ep.id), body, principal.subject, rt.clock())
            return workup.view(s, row)
    except ScreeningError as exc:
        raise refused(exc) from exc


@router.get("/episodes/{episode_id}/deferred-workup")
def list_workups(
    episode_id: int, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """The episode's work-up forms, oldest first, and whether a final one is recorded."""
    ep = load_episode(rt, episode_id)
    resource = episode_resource(ep, f"deferred work-up of screening episode {ep.id}")
    check(rt, principal, access.READ, resource, request, audit.PATIENT_RECORD)
    with rt.db.sessions() as s:
        rows = [workup.view(s, w) for w in workup.workups_of(s, ep.id)]
    return {
        "episode_id": ep.id,
        "workups": rows,
        "final": next((w["conclusion"] for w in rows if w["conclusion"] != "suspicious"), None),
    }
