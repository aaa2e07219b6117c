"""The second-opinion (tele-expertise) routes, under ``/api/telerad/second-opinions``: ask a specialist or a
reference centre, the experts' own worklist, take a centre's question, answer with a signed document. The
workflow is :mod:`archipel.radiology.second_opinion`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel, ConfigDict, Field

from archipel.platform import access, access_facts, audit
from archipel.platform.authn import Principal
from archipel.platform.http import PrincipalDep, RuntimeDep, client_address, guard
from archipel.platform.runtime import Runtime
from archipel.radiology import second_opinion
from archipel.radiology.telerad_models import SecondOpinion, TeleradError

router = APIRouter(prefix="/second-opinions")


class AskBody(BaseModel):
    """A question to a named specialist (``to_user``) or a reference centre (``to_site``)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    issuer: str = Field(min_length=1, max_length=64)
    patient_id: str = Field(min_length=1, max_length=64)
    study_uid: str = Field(default="", max_length=64, pattern=r"^[0-9.]*$")
    question: str = Field(min_length=1, max_length=4000)
    to_site: str = Field(default="", max_length=64)
    to_user: str = Field(default="", max_length=128)
    reading_request_id: int | None = None


class AnswerBody(BaseModel):
    """The expert's answer."""

    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=100_000)


def _error(exc: TeleradError) -> HTTPException:
    return HTTPException(exc.status, exc.reason)


def _load(rt: Runtime, opinion_id: int) -> SecondOpinion:
    with rt.db.sessions() as s:
        try:
            return second_opinion.get(s, opinion_id)
        except TeleradError as exc:
            raise _error(exc) from exc


def _guard(rt: Runtime, principal: Principal, action: str, op: SecondOpinion, request: Request) -> None:
    res, facts = access_facts.load(rt.db, principal, second_opinion.resource(op), rt.clock())
    guard(rt, principal, action, res, event_type=audit.PATIENT_RECORD, request=request, facts=facts)


@router.post("", status_code=status.HTTP_201_CREATED)
def ask(body: AskBody, request: Request, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """Ask for a second opinion; the expert (or every expert of the centre) is told in the inbox."""
    try:
        op = second_opinion.ask(
            rt,
            principal,
            issuer=body.issuer,
            patient_id=body.patient_id,
            study_uid=body.study_uid,
            question=body.question,
            to_site=body.to_site,
            to_user=body.to_user,
            reading_request_id=body.reading_request_id,
            client=client_address(request),
        )
    except TeleradError as exc:
        raise _error(exc) from exc
    return second_opinion.view(op)


@router.get("")
def worklist(
    request: Request, rt: RuntimeDep, principal: PrincipalDep, asked: bool = False, state: str = "open"
) -> dict[str, Any]:
    """The second opinions addressed to me or my centre (open ones by default; ``state=all``), or with
    ``asked=true`` those I asked, oldest first."""
    guard(
        rt,
        principal,
        access.SEARCH,
        access.Resource(kind=access.SECOND_OPINION),
        event_type=audit.QUERY,
        request=request,
    )
    if state not in ("open", "all"):
        raise HTTPException(422, f"state is open or all, not {state!r}")
    with rt.db.sessions() as s:
        rows = second_opinion.worklist(s, principal, asked=asked, open_only=state == "open")
    return {"second_opinions": [second_opinion.view(op) for op in rows]}


@router.get("/{opinion_id}")
def get_opinion(opinion_id: int, request: Request, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """One second-opinion request and its answer."""
    op = _load(rt, opinion_id)
    _guard(rt, principal, access.READ, op, request)
    return second_opinion.view(op)


@router.post("/{opinion_id}/take")
def take(opinion_id: int, request: Request, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """Take a question sent to my centre (I get a reading assignment on the patient)."""
    _guard(rt, principal, access.UPDATE, _load(rt, opinion_id), request)
    with rt.db.write() as s:
        try:
            op = second_opinion.get_for_update(s, opinion_id)
            second_opinion.take(s, op, principal, rt.clock())
        except TeleradError as exc:
            raise _error(exc) from exc
        return second_opinion.view(op)


@router.post("/{opinion_id}/answer")
def answer(
    opinion_id: int, body: AnswerBody, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Answer with a signed document of the registry; 409 when answered already."""
    _guard(rt, principal, access.UPDATE, _load(rt, opinion_id), request)
    try:
        op = second_opinion.answer(rt, principal, opinion_id, body.text, client=client_address(request))
    except TeleradError as exc:
        raise _error(exc) from exc
    return second_opinion.view(op)
