"""QIDO-RS (PS3.18 §10.6): search for studies, series and instances over the shared query engine.

Matching keys are attribute keywords or tags; ``includefield``, ``limit``, ``offset`` and ``fuzzymatching`` are the
only other parameters. Every request is checked and audited once as a query. The caller's read scope
(``access.read_scope``: site, care relationships, consent, confidentiality) is part of the SQL, so paging never
reveals hidden studies. Results are ``application/dicom+json``; no match is ``200 []``. A search with no ``limit``
(or a larger one) returns at most :data:`MAX_RESULTS` and says so in a ``Warning`` header.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

from fastapi import APIRouter, HTTPException, Request, Response, status

from archipel.platform import access, access_facts, audit
from archipel.platform.http import PrincipalDep, RuntimeDep, guard
from archipel.radiology.query import (
    ATTRIBUTES,
    Level,
    MatchError,
    Query,
    resolve,
    retrieve_path,
    search,
    to_json,
)

log = logging.getLogger("archipel.dicomweb")

router = APIRouter()

DICOM_JSON = "application/dicom+json"
#: The most results one response carries; a client pages on with ``offset``.
MAX_RESULTS = 1000
_CONTROL = {"includefield", "limit", "offset", "fuzzymatching"}

#: Attributes every result carries at each level (PS3.18 tables 10.6.3-3, -4 and -5), plus the issuer.
STUDY_RETURNS = (
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ModalitiesInStudy",
    "ReferringPhysicianName",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyID",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
    "RetrieveURL",
)
SERIES_RETURNS = (
    "Modality",
    "SeriesDescription",
    "SeriesNumber",
    "SeriesInstanceUID",
    "NumberOfSeriesRelatedInstances",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "StudyInstanceUID",
    "RetrieveURL",
)
INSTANCE_RETURNS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "InstanceNumber",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "AvailableTransferSyntaxUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "RetrieveURL",
)
_TRUNCATED = (
    "The number of results exceeded the maximum supported by the server. Additional results can be requested."
)


@dataclass
class _Search:
    """A parsed QIDO request."""

    query: Query
    returns: set[str] = field(default_factory=set)


def _bad(reason: str) -> HTTPException:
    return HTTPException(status.HTTP_400_BAD_REQUEST, reason)


def _integer(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError as exc:
        raise _bad(f"{name} must be an integer, not {value!r}") from exc
    if number < 0:
        raise _bad(f"{name} must not be negative ({number})")
    return number


def _includefields(values: list[str], level: Level) -> set[str]:
    out: set[str] = set()
    for value in values:
        for name in (v.strip() for v in value.split(",")):
            if not name:
                continue
            if name == "all":
                out.update(a.keyword for a in ATTRIBUTES if a.level.depth <= level.depth)
                out.add("RetrieveURL")
                continue
            keyword, _attr = resolve(name)
            out.add(keyword)
    return out


def parse_search(request: Request, level: Level, defaults: tuple[str, ...], scope: dict[str, str]) -> _Search:
    """The query a QIDO request asks for; :class:`MatchError` (as 400) names a parameter it cannot use."""
    keys: dict[str, str] = {}
    includes: list[str] = []
    limit: int | None = None
    offset = 0
    fuzzy = False
    for name, value in request.query_params.multi_items():
        if name == "includefield":
            includes.append(value)
        elif name == "limit":
            limit = _integer("limit", value)
        elif name == "offset":
            offset = _integer("offset", value)
        elif name == "fuzzymatching":
            if value.lower() not in ("true", "false"):
                raise _bad(f"fuzzymatching must be true or false, not {value!r}")
            fuzzy = value.lower() == "true"
        elif "." in name:
            raise _bad(f"{name}: matching on sequence attributes is not supported")
        else:
            keyword, _attr = resolve(name)
            if keyword in keys:
                if keyword.endswith("UID"):
                    keys[keyword] += "\\" + value
                    continue
                raise _bad(f"{keyword} is given more than once")
            keys[keyword] = value
    keys.update(scope)
    query = Query(level=level, keys=keys, fuzzy=fuzzy, limit=limit, offset=offset)
    query.check()
    returns = set(defaults) | _includefields(includes, level) | set(keys)
    query.returns = frozenset(returns)
    return _Search(query=query, returns=returns)


def _run(
    request: Request,
    rt: RuntimeDep,
    principal: PrincipalDep,
    level: Level,
    defaults: tuple[str, ...],
    scope: dict[str, str] | None = None,
) -> Response:
    _resource, facts = access_facts.load(rt.db, principal)
    guard(
        rt,
        principal,
        access.SEARCH,
        access.Resource(kind="study"),
        event_type=audit.QUERY,
        request=request,
        facts=facts,
    )
    try:
        parsed = parse_search(request, level, defaults, scope or {})
    except MatchError as exc:
        log.info("event=qido_refused level=%s reason=%s", level.value, exc)
        raise _bad(str(exc)) from exc
    query = parsed.query
    query.scope = access.read_scope(principal, facts)
    asked = query.limit
    query.limit = MAX_RESULTS + 1 if asked is None or asked > MAX_RESULTS else asked
    rows = search(rt.db, query)
    headers = {}
    if len(rows) > MAX_RESULTS:
        rows = rows[:MAX_RESULTS]
        headers["Warning"] = f'299 {request.url.netloc}: "{_TRUNCATED}"'
    elif asked is not None and asked > MAX_RESULTS and len(rows) == MAX_RESULTS:
        headers["Warning"] = f'299 {request.url.netloc}: "{_TRUNCATED}"'
    base = str(request.base_url).rstrip("/") + "/dicom-web"
    body = []
    for row in rows:
        if "RetrieveURL" in parsed.returns:
            row["RetrieveURL"] = base + retrieve_path(row, level)
        body.append(to_json(row, parsed.returns))
    return Response(json.dumps(body, separators=(",", ":")), media_type=DICOM_JSON, headers=headers)


@router.get("/studies")
def search_studies(request: Request, rt: RuntimeDep, principal: PrincipalDep) -> Response:
    """Search for studies."""
    return _run(request, rt, principal, Level.STUDY, STUDY_RETURNS)


@router.get("/series")
def search_series(request: Request, rt: RuntimeDep, principal: PrincipalDep) -> Response:
    """Search for series in every study; results carry their study's attributes too."""
    return _run(request, rt, principal, Level.SERIES, SERIES_RETURNS + STUDY_RETURNS)


@router.get("/studies/{study}/series")
def search_study_series(study: str, request: Request, rt: RuntimeDep, principal: PrincipalDep) -> Response:
    """Search for the series of one study."""
    return _run(request, rt, principal, Level.SERIES, SERIES_RETURNS, {"StudyInstanceUID": study})


@router.get("/instances")
def search_instances(request: Request, rt: RuntimeDep, principal: PrincipalDep) -> Response:
    """Search for instances in every study; results carry their study's and series' attributes too."""
    return _run(request, rt, principal, Level.IMAGE, INSTANCE_RETURNS + SERIES_RETURNS + STUDY_RETURNS)


@router.get("/studies/{study}/instances")
def search_study_instances(study: str, request: Request, rt: RuntimeDep, principal: PrincipalDep) -> Response:
    """Search for the instances of one study; results carry their series' attributes too."""
    return _run(
        request, rt, principal, Level.IMAGE, INSTANCE_RETURNS + SERIES_RETURNS, {"StudyInstanceUID": study}
    )


@router.get("/studies/{study}/series/{series}/instances")
def search_series_instances(
    study: str, series: str, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> Response:
    """Search for the instances of one series."""
    scope = {"StudyInstanceUID": study, "SeriesInstanceUID": series}
    return _run(request, rt, principal, Level.IMAGE, INSTANCE_RETURNS, scope)
