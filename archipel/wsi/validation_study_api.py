"""The WSI validation study over HTTP (:mod:`archipel.wsi.validation_study`): an administrator or a pathologist
opens a study for a pathologist and an application; the pathologist adds slides they may read, records each glass
read, then, after the washout and blinded to it, the digital read; the report gives the concordance.

Cases name slides, so adding, reading and recording them ask the access policy on the slide (audited).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel, ConfigDict, Field

from archipel.platform import access, access_facts, audit
from archipel.platform.authn import Principal, find_user
from archipel.platform.http import PrincipalDep, RuntimeDep, guard
from archipel.platform.runtime import Runtime
from archipel.wsi import validation_study as vs
from archipel.wsi.models import Slide
from archipel.wsi.slide_access import resource_of

router = APIRouter(prefix="/api/validation-studies", tags=["validation studies"])


class StudyBody(BaseModel):
    """A study: the application, and for an administrator the pathologist; bounds at least the guideline's."""

    model_config = ConfigDict(extra="forbid")
    application: str = Field(min_length=1, max_length=32)
    pathologist: str = Field(default="", max_length=128)
    min_cases: int = Field(default=vs.MIN_CASES, le=10000)
    washout_days: int = Field(default=vs.WASHOUT_DAYS, le=365)


class CaseBody(BaseModel):
    """A slide to add as a case."""

    model_config = ConfigDict(extra="forbid")
    slide_id: str = Field(min_length=1, max_length=32)


class ReadBody(BaseModel):
    """One read: the diagnostic category compared for concordance, and free text."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    diagnosis: str = Field(min_length=1, max_length=64)
    text: str = Field(default="", max_length=10000)


def _http(exc: vs.ValidationError) -> HTTPException:
    return HTTPException(exc.status, exc.reason)


def _guard_slide(rt: Runtime, principal: Principal, slide_id: str, action: str, request: Request) -> None:
    with rt.db.sessions() as s:
        slide = s.get(Slide, slide_id)
    if slide is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no slide {slide_id}")
    res, facts = access_facts.load(rt.db, principal, resource_of(slide), rt.clock())
    guard(rt, principal, action, res, event_type=audit.PATIENT_RECORD, request=request, facts=facts)


def _study(
    rt: Runtime, study_id: int, principal: Principal, *, admin_too: bool = False
) -> vs.ValidationStudy:
    with rt.db.sessions() as s:
        try:
            if admin_too and principal.role == "admin" and (study := s.get(vs.ValidationStudy, study_id)):
                return study
            return vs.study_of(s, study_id, principal.subject)
        except vs.ValidationError as exc:
            raise _http(exc) from exc


def _case(
    rt: Runtime, study_id: int, case_id: int, principal: Principal
) -> tuple[vs.ValidationStudy, vs.ValidationCase]:
    with rt.db.sessions() as s:
        try:
            study = vs.study_of(s, study_id, principal.subject)
            return study, vs.case_of(s, study, case_id)
        except vs.ValidationError as exc:
            raise _http(exc) from exc


@router.post("", status_code=status.HTTP_201_CREATED)
def create_study(body: StudyBody, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """Open a study for the calling pathologist (an administrator names one)."""
    who = body.pathologist or principal.subject
    if principal.role != "admin" and (principal.role != "pathologist" or who != principal.subject):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "a pathologist opens their own study; an admin may name one"
        )
    with rt.db.write() as s:
        user = find_user(s, who)
        if user is None or user.role != "pathologist":
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT, f"{who} is not a pathologist's account"
            )
        try:
            study = vs.create_study(
                s, who, body.application, by=principal.subject, now=rt.clock(),
                min_cases=body.min_cases, washout_days=body.washout_days,
            )  # fmt: skip
        except vs.ValidationError as exc:
            raise _http(exc) from exc
        return study.as_dict()


@router.get("")
def list_studies(rt: RuntimeDep, principal: PrincipalDep) -> list[dict[str, Any]]:
    """The caller's studies (every study for an administrator)."""
    from sqlalchemy import select

    stmt = select(vs.ValidationStudy).order_by(vs.ValidationStudy.id)
    if principal.role != "admin":
        stmt = stmt.where(vs.ValidationStudy.pathologist == principal.subject)
    with rt.db.sessions() as s:
        return [study.as_dict() for study in s.execute(stmt).scalars()]


@router.post("/{study_id}/cases", status_code=status.HTTP_201_CREATED)
def add_case(
    study_id: int, body: CaseBody, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Add a slide the pathologist may read as a case."""
    study = _study(rt, study_id, principal)
    _guard_slide(rt, principal, body.slide_id, access.READ, request)
    with rt.db.write() as s:
        try:
            case = vs.add_case(s, study, body.slide_id, rt.clock())
        except vs.ValidationError as exc:
            raise _http(exc) from exc
        return vs.case_view(study, case)


@router.get("/{study_id}/cases/{case_id}")
def get_case(
    study_id: int, case_id: int, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """A case for its reader; the glass read stays hidden until the digital read is recorded."""
    study, case = _case(rt, study_id, case_id, principal)
    _guard_slide(rt, principal, case.slide_id, access.READ, request)
    return vs.case_view(study, case)


def _record(
    kind: str,
    study_id: int,
    case_id: int,
    body: ReadBody,
    request: Request,
    rt: Runtime,
    principal: Principal,
) -> dict[str, Any]:
    study, case = _case(rt, study_id, case_id, principal)
    _guard_slide(rt, principal, case.slide_id, access.READ, request)
    record = vs.record_glass if kind == "glass" else vs.record_digital
    with rt.db.write() as s:
        row = s.get(vs.ValidationCase, case.id)
        assert row is not None
        try:
            record(s, study, row, body.diagnosis, body.text, rt.clock())
        except vs.ValidationError as exc:
            raise _http(exc) from exc
        return vs.case_view(study, row)


@router.post("/{study_id}/cases/{case_id}/glass")
def record_glass(
    study_id: int, case_id: int, body: ReadBody, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Record the glass read (once)."""
    return _record("glass", study_id, case_id, body, request, rt, principal)


@router.post("/{study_id}/cases/{case_id}/digital")
def record_digital(
    study_id: int, case_id: int, body: ReadBody, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Record the digital read (once, at least ``washout_days`` after the glass read); 409 before."""
    return _record("digital", study_id, case_id, body, request, rt, principal)


@router.get("/{study_id}/report")
def study_report(study_id: int, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """Cases, reads and concordance against the 95 % goal; cases whose digital read is due (the pathologist's
    own study, or any for an administrator: no diagnosis or patient is shown)."""
    study = _study(rt, study_id, principal, admin_too=True)
    with rt.db.sessions() as s:
        return vs.report(s, study, rt.clock())
