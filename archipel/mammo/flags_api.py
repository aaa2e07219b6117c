"""HTTP route for an exam held at intake: release its flag, or send it for a retake (``flags``).

The policy asks about a ``screening-intake`` resource (a technician or radiologist who may read the episode, or a
coordinator of its programme), and the call is audited like every screening route; the resolution keeps who,
when, why and the flag's lines it resolved.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import Field

from archipel.mammo import episodes, flags, reading
from archipel.mammo.api import load_episode, refused
from archipel.mammo.episodes import ScreeningError
from archipel.mammo.models import Programme
from archipel.mammo.schemas import Strict
from archipel.platform import access, access_facts, audit
from archipel.platform.credentials import PrincipalDep, RuntimeDep
from archipel.platform.http import guard

router = APIRouter(prefix="/api/mammo", tags=["screening"])


class FlagBody(Strict):
    """``release``: read the exam as it is, its flag's lines accepted; ``retake``: a technical recall at intake.
    Either with the reason."""

    action: Literal["release", "retake"]
    reason: str = Field(min_length=3, max_length=255)


@router.post("/episodes/{episode_id}/flag")
def resolve_flag(
    episode_id: int, body: FlagBody, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Release the flag of an episode held at intake (flagged, or incomplete), or send its exam for a retake;
    409 when nothing holds it. Answers the episode's state, tasks and decision, and the resolution."""
    ep = load_episode(rt, episode_id)
    resource = access.Resource(
        kind=access.SCREENING_INTAKE,
        site=ep.site,
        patient=f"{ep.issuer}/{ep.patient_id}",
        master=ep.master_id,
        ident=f"intake flag ({body.action}) of screening episode {ep.id}",
    )
    resource, facts = access_facts.load(rt.db, principal, resource, rt.clock())
    with rt.db.sessions() as s:
        prog_row = s.get(Programme, ep.programme_id)
        assert prog_row is not None
        facts = replace(facts, coordinator=reading.coordinates(s, prog_row.code, principal.subject))
    guard(
        rt, principal, access.UPDATE, resource, event_type=audit.PATIENT_RECORD, request=request, facts=facts
    )
    try:
        with rt.db.write() as s:
            fresh = episodes.episode(s, ep.id)
            prog = s.get(Programme, fresh.programme_id)
            assert prog is not None
            row = flags.resolve(s, fresh, prog, body.action, body.reason, principal.subject, rt.clock())
            decided = episodes.decision_of(s, fresh.id)
            return {
                "id": fresh.id,
                "status": fresh.status,
                "flag": fresh.flag,
                "tasks": [
                    {"id": t.id, "role": t.role, "status": t.status} for t in episodes.tasks_of(s, fresh.id)
                ],
                "decision": None
                if decided is None
                else {
                    "decision": decided.decision,
                    "reasons": json.loads(decided.reasons),
                    "letters": [int(i) for i in decided.letters.split(",") if i],
                },
                "resolution": {
                    "id": row.id,
                    "action": row.action,
                    "lines": json.loads(row.problems),
                    "reason": row.reason,
                    "resolved_by": row.resolved_by,
                    "resolved_at": row.resolved_at.isoformat(),
                },
            }
    except ScreeningError as exc:
        raise refused(exc) from exc
