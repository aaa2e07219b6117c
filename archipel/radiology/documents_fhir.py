"""The document registry as FHIR R4 ``DocumentReference`` (IHE MHD), under ``/fhir``, built with
``fhir.resources.R4B`` and answered as ``application/fhir+json``.

Mapping (see docs/documents.md):

- ``status``: ``entered-in-error`` for a withdrawn document, ``current`` otherwise (``superseded`` is kept for
  a replacement, which the registry does not make: corrections are addenda); ``docStatus``: preliminary,
  final, amended (entered-in-error for a withdrawn one);
- ``masterIdentifier``: the document's ``urn:uuid``; ``type``: its LOINC coding; ``subject``: the master
  patient (``Patient/{master}``, as the MPI links it now) with the local identifier of the producing site;
- ``author`` and ``custodian`` (organisation, with the site code), ``authenticator``: who signed;
- ``securityLabel``: the HL7 v3 Confidentiality code, and the platform's codes (MASQUE_PS, PSY...);
- ``content.attachment``: content type, size, title, the SHA-256 (an extension: FHIR's ``hash`` is SHA-1)
  and the URL of the content route; ``context.related``: the studies (DICOM Study Instance UIDs);
  ``relatesTo``: ``appends`` for an addendum, pointing at the document it amends.

Search: ``patient`` (a master id, ``Patient/{id}``), ``type`` (``[system|]code``), ``date`` (``eq``, ``ge``,
``gt``, ``le``, ``lt`` prefixes on a day, month, year or instant; repeatable), ``status``, ``_count`` and
``_offset``. Errors are ``OperationOutcome`` resources.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.documentreference import DocumentReference
from sqlalchemy import and_, select

from archipel.platform.confidentiality import decode
from archipel.platform.db import Database
from archipel.platform.http import PrincipalDep, RuntimeDep, client_address
from archipel.platform.identity.models import LocalIdentity
from archipel.radiology import documents, fhir_capability
from archipel.radiology.documents_api import content_url, http_errors, search_scope
from archipel.radiology.documents_models import AMENDED, ENTERED_IN_ERROR, FINAL, PRELIMINARY, Document
from archipel.radiology.documents_search import DocumentQuery, find

FHIR_JSON = "application/fhir+json"
LOINC = "http://loinc.org"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
PLATFORM_CODES = "urn:archipel:confidentiality"
DOCUMENT_IDS = "urn:archipel:document"
SITES = "urn:archipel:site"
DICOM_UID = "urn:dicom:uid"
SHA256_EXT = "urn:archipel:fhir:StructureDefinition/attachment-sha256"
REASON_EXT = "urn:archipel:fhir:StructureDefinition/document-reason"
#: Our status -> FHIR DocumentReference.status.
FHIR_STATUS = {
    PRELIMINARY: "current",
    FINAL: "current",
    AMENDED: "current",
    ENTERED_IN_ERROR: "entered-in-error",
}
#: FHIR status search values -> our statuses.
BY_FHIR_STATUS = {
    "current": (PRELIMINARY, FINAL, AMENDED),
    "superseded": (),
    "entered-in-error": (ENTERED_IN_ERROR,),
}
SEARCH_PARAMS = frozenset(
    {"patient", "subject", "patient.identifier", "type", "date", "status", "_count", "_offset", "_format"}
)
MAX_COUNT = 200

router = APIRouter(prefix="/fhir", tags=["fhir"])
router.include_router(fhir_capability.router)


class FhirError(HTTPException):
    """An error answered as an ``OperationOutcome``."""


def operation_outcome(status_code: int, diagnostics: str) -> Response:
    """An ``OperationOutcome`` with one error issue."""
    code = {400: "invalid", 403: "forbidden", 404: "not-found", 409: "conflict"}.get(status_code, "exception")
    body = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}],
    }
    return Response(json.dumps(body), status_code=status_code, media_type=FHIR_JSON)


def _masters_now(db: Database, docs: Iterable[Document]) -> dict[tuple[str, str], int]:
    keys = {(d.issuer, d.patient_id) for d in docs}
    if not keys:
        return {}
    li = LocalIdentity
    with db.sessions() as s:
        rows = s.execute(
            select(li.issuer, li.local_id, li.master_id).where(
                and_(
                    li.issuer.in_(sorted({k[0] for k in keys})), li.local_id.in_(sorted({k[1] for k in keys}))
                )
            )
        ).all()
    return {(r.issuer, r.local_id): r.master_id for r in rows if (r.issuer, r.local_id) in keys}


def _studies(db: Database, doc_ids: list[int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {i: [] for i in doc_ids}
    if not doc_ids:
        return out
    with db.sessions() as s:
        rows = s.execute(
            select(documents.DocumentStudy.document_id, documents.DocumentStudy.study_uid)
            .where(documents.DocumentStudy.document_id.in_(doc_ids))
            .order_by(documents.DocumentStudy.study_uid)
        ).all()
    for doc_id, uid in rows:
        out[doc_id].append(uid)
    return out


def _loinc(doc: Document) -> dict[str, str]:
    coding = {"system": LOINC, "code": doc.type_code}
    if doc.type_display:
        coding["display"] = doc.type_display
    return coding


def _reference(display: str) -> dict[str, Any]:
    return {"display": display}


def to_fhir(doc: Document, master: int | None, studies: list[str], base: str = "") -> DocumentReference:
    """``doc`` as a FHIR R4 DocumentReference; ``master``: its patient's master now; ``base``: the server's
    base URL for the attachment (relative when empty)."""
    subject: dict[str, Any] = {
        "identifier": {"system": f"{SITES}:{doc.issuer}", "value": doc.patient_id},
        "type": "Patient",
    }
    if master is not None:
        subject["reference"] = f"Patient/{master}"
    level = {"system": CONFIDENTIALITY, "code": doc.confidentiality}
    level["display"] = documents.CONFIDENTIALITY_CODES.get(doc.confidentiality, "")
    labels = [{"coding": [level]}]
    labels += [{"coding": [{"system": PLATFORM_CODES, "code": c}]} for c in sorted(decode(doc.codes))]
    attachment: dict[str, Any] = {
        "contentType": doc.content_type,
        "url": f"{base}{content_url(doc.id)}",
        "size": doc.size,
        "title": doc.title,
        "creation": doc.created_at.isoformat(),
        "extension": [{"url": SHA256_EXT, "valueString": doc.sha256}],
    }
    resource: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "id": str(doc.id),
        "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": doc.uid},
        "identifier": [{"system": DOCUMENT_IDS, "value": str(doc.id)}],
        "status": FHIR_STATUS[doc.status],
        "docStatus": doc.status,
        "type": {"coding": [_loinc(doc)]},
        "subject": subject,
        "date": doc.created_at.isoformat(),
        "description": doc.title,
        "securityLabel": labels,
        "content": [{"attachment": attachment}],
    }
    if doc.author:
        resource["author"] = [_reference(doc.author)]
    if doc.signed_by:
        resource["authenticator"] = _reference(doc.signed_by)
    custodian: dict[str, Any] = {"identifier": {"system": SITES, "value": doc.site}}
    if doc.organisation:
        custodian["display"] = doc.organisation
    resource["custodian"] = custodian
    if studies:
        resource["context"] = {
            "related": [
                {"type": "ImagingStudy", "identifier": {"system": DICOM_UID, "value": f"urn:oid:{uid}"}}
                for uid in studies
            ]
        }
    if doc.relates_to is not None and doc.relation:
        resource["relatesTo"] = [
            {"code": doc.relation, "target": {"reference": f"DocumentReference/{doc.relates_to}"}}
        ]
    reason = doc.error_reason or doc.addendum_reason
    if reason:
        resource["extension"] = [{"url": REASON_EXT, "valueString": reason}]
    return DocumentReference.model_validate(resource)


def _fhir_response(model: Any) -> Response:
    return Response(model.model_dump_json(exclude_none=True), media_type=FHIR_JSON)


def _day_bounds(value: str) -> tuple[datetime, datetime]:
    """The instants ``[start, end)`` a FHIR date value covers (a year, month, day, or an instant)."""
    try:
        if len(value) == 4:
            start = datetime(int(value), 1, 1, tzinfo=UTC)
            return start, start.replace(year=start.year + 1)
        if len(value) == 7:
            year, month = int(value[:4]), int(value[5:7])
            start = datetime(year, month, 1, tzinfo=UTC)
            end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
            return start, end
        if len(value) == 10:
            day = date.fromisoformat(value)
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return start, start + timedelta(days=1)
        instant = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if instant.tzinfo is None:
            instant = instant.replace(tzinfo=UTC)
        return instant, instant + timedelta(seconds=1)
    except ValueError as exc:
        raise FhirError(
            400, f"date {value!r} is not a FHIR date (YYYY, YYYY-MM, YYYY-MM-DD or an instant)"
        ) from exc


def date_range(values: list[str]) -> tuple[datetime | None, datetime | None]:
    """The ``[from, before)`` range of one or more FHIR ``date`` search values (all must hold)."""
    low: datetime | None = None
    high: datetime | None = None
    for raw in values:
        prefix, value = (raw[:2], raw[2:]) if raw[:2] in ("eq", "ge", "gt", "le", "lt") else ("eq", raw)
        start, end = _day_bounds(value)
        bounds: dict[str, tuple[datetime | None, datetime | None]] = {
            "eq": (start, end),
            "ge": (start, None),
            "gt": (end, None),
            "le": (None, end),
            "lt": (None, start),
        }
        lo, hi = bounds[prefix]
        if lo is not None:
            low = lo if low is None else max(low, lo)
        if hi is not None:
            high = hi if high is None else min(high, hi)
    return low, high


def _patient(value: str) -> int:
    ref = value.removeprefix("Patient/")
    if not ref.isdigit():
        raise FhirError(400, f"patient {value!r} must be a master patient id (Patient/123 or 123)")
    return int(ref)


def _local_identifier(values: list[str]) -> tuple[str, str]:
    """``(issuer, PatientID)`` of a ``patient.identifier`` search (``urn:archipel:site:ISSUER|PatientID``)."""
    if not values:
        return "", ""
    system, sep, value = values[0].partition("|")
    issuer = system.removeprefix(f"{SITES}:")
    if len(values) > 1 or not sep or issuer == system or not issuer or not value:
        raise FhirError(400, f"patient.identifier is one {SITES}:ISSUER|PatientID")
    return issuer, value


def _types(values: list[str]) -> tuple[str, ...]:
    codes = []
    for value in values:
        for token in value.split(","):
            system, sep, code = token.rpartition("|")
            if sep and system and system != LOINC:
                raise FhirError(
                    400, f"type system {system!r} is not known; document types are LOINC ({LOINC})"
                )
            codes.append(code)
    return tuple(codes)


def _statuses(values: list[str]) -> tuple[str, ...]:
    """Our statuses for FHIR ``status`` values; empty when none can match (``superseded``)."""
    out: list[str] = []
    for value in values:
        for token in value.split(","):
            if token not in BY_FHIR_STATUS:
                raise FhirError(400, f"status {token!r} is not one of: {', '.join(BY_FHIR_STATUS)}")
            out.extend(BY_FHIR_STATUS[token])
    return tuple(out)


def _int(params: Any, name: str, default: int, high: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    if not raw.isdigit():
        raise FhirError(400, f"{name} must be a non-negative integer")
    return min(int(raw), high)


@router.get("/DocumentReference")
def search_document_references(request: Request, rt: RuntimeDep, principal: PrincipalDep) -> Response:
    """A searchset Bundle of the DocumentReferences matching the search that the caller may see."""
    params = request.query_params
    unknown = sorted(set(params) - SEARCH_PARAMS)
    try:
        if unknown:
            raise FhirError(400, f"unsupported search parameter {', '.join(unknown)}")
        patients = params.getlist("patient") + params.getlist("subject")
        if len(patients) > 1:
            raise FhirError(400, "give one patient")
        master = _patient(patients[0]) if patients else None
        issuer, patient_id = _local_identifier(params.getlist("patient.identifier"))
        low, high = date_range(params.getlist("date"))
        statuses = _statuses(params.getlist("status"))
        # A status that maps to none of ours (superseded) matches nothing.
        empty = bool(params.getlist("status")) and not statuses
        count = _int(params, "_count", 50, MAX_COUNT)
        offset = _int(params, "_offset", 0, 10**9)
        types = _types(params.getlist("type"))
        with http_errors():
            scope, current = search_scope(rt, principal, request, master)
            query = DocumentQuery(
                master_id=current,
                issuer=issuer,
                patient_id=patient_id,
                type_codes=types,
                statuses=statuses,
                created_from=low,
                created_before=high,
                limit=count,
                offset=offset,
            )
            rows, total = ([], 0) if empty else find(rt.db, scope, query)
    except HTTPException as exc:
        return operation_outcome(exc.status_code, str(exc.detail))
    base = str(request.base_url).rstrip("/")
    masters = _masters_now(rt.db, rows)
    studies = _studies(rt.db, [d.id for d in rows])
    kept = [(k, v) for k, v in params.multi_items() if k not in ("_offset",)]
    links = [{"relation": "self", "url": f"{base}/fhir/DocumentReference?{urlencode(params.multi_items())}"}]
    if offset + count < total:
        links.append(
            {
                "relation": "next",
                "url": f"{base}/fhir/DocumentReference?{urlencode([*kept, ('_offset', offset + count)])}",
            }
        )
    bundle = Bundle.model_validate(
        {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": total,
            "link": links,
            "entry": [
                {
                    "fullUrl": f"{base}/fhir/DocumentReference/{d.id}",
                    "resource": to_fhir(d, masters.get((d.issuer, d.patient_id)), studies[d.id], base),
                    "search": {"mode": "match"},
                }
                for d in rows
            ],
        }
    )
    return _fhir_response(bundle)


@router.get("/DocumentReference/{doc_id}")
def read_document_reference(
    doc_id: str, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> Response:
    """One DocumentReference (the policy's READ, audited)."""
    if not doc_id.isdigit():
        return operation_outcome(404, f"no DocumentReference {doc_id}")
    try:
        with http_errors():
            doc = documents.check_read(rt.db, principal, int(doc_id), client=client_address(request))
    except HTTPException as exc:
        return operation_outcome(exc.status_code, str(exc.detail))
    base = str(request.base_url).rstrip("/")
    master = _masters_now(rt.db, [doc]).get((doc.issuer, doc.patient_id))
    return _fhir_response(to_fhir(doc, master, documents.studies_of(rt.db, doc.id), base))
