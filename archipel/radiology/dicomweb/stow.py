"""STOW-RS (PS3.18 §10.5): store the Part-10 instances of a ``multipart/related; type="application/dicom"`` body.

The body is read completely (parts spooled to disk) before anything is stored, so a malformed message is refused
whole with 400 and stores nothing. Each part then goes through :meth:`Archive.store` on its own: one bad part
fails with a reason in FailedSOPSequence while the others are stored.
"""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import pydicom
from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from archipel.platform import access, audit
from archipel.platform.authn import Principal
from archipel.platform.http import PrincipalDep, RuntimeDep, guard
from archipel.platform.runtime import Runtime
from archipel.radiology.archive import Archive
from archipel.radiology.dicomfile import InvalidInstance
from archipel.radiology.dicomweb.mediatypes import parse_media_type
from archipel.radiology.dicomweb.multipart import MalformedMultipart, ReceivedPart, read_parts
from archipel.radiology.dicomweb.resources import dicomweb_base

log = logging.getLogger("archipel.dicomweb")

router = APIRouter()

DICOM_JSON = "application/dicom+json"
#: Source recorded on instances stored through STOW-RS (the index keeps a 16-character AE-like source).
SOURCE = "STOW-RS"

PROCESSING_FAILURE = 0x0110
OUT_OF_RESOURCES = 0xA700
DATA_SET_DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000


@dataclass(frozen=True)
class PartOutcome:
    """What became of one part: stored (with its retrieve path) or failed (with a code and reason)."""

    sop_class_uid: str
    sop_uid: str
    study_uid: str
    series_uid: str
    failure: int | None = None
    reason: str = ""


def _element(vr: str, value: Any) -> dict[str, Any]:
    if value in (None, ""):
        return {"vr": vr}
    return {"vr": vr, "Value": [value]}


def _sop_item(outcome: PartOutcome, base: str) -> dict[str, Any]:
    item = {
        "00081150": _element("UI", outcome.sop_class_uid),
        "00081155": _element("UI", outcome.sop_uid),
    }
    if outcome.failure is None:
        url = f"{base}/studies/{outcome.study_uid}/series/{outcome.series_uid}/instances/{outcome.sop_uid}"
        item["00081190"] = _element("UR", url)
    else:
        item["00081197"] = _element("US", outcome.failure)
        # Error Comment carries the reason in words, as dcm4chee does; FailureReason alone says little.
        item["00000902"] = _element("LO", outcome.reason)
    return item


def _as_part10(data: bytes) -> bytes:
    """The part as a Part-10 file: file meta sent without the preamble and ``DICM`` prefix gets both.

    pydicom (and so dicomweb-client) writes a data set that was built in memory that way. The preamble is
    128 zero bytes, as PS3.10 asks when it is unused; every byte sent is kept after it.
    """
    if data[128:132] != b"DICM" and data[:2] == b"\x02\x00":
        return bytes(128) + b"DICM" + data
    return data


_IDENTIFYING = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


def _identify(data: bytes) -> tuple[str, str, str, str]:
    """SOP Class, SOP Instance, Study and Series UIDs of a part, as far as it can be read ('' otherwise).

    Only those four elements are decoded; :meth:`Archive.store` does the full validation.
    """
    try:
        ds = pydicom.dcmread(BytesIO(data), stop_before_pixels=True, specific_tags=list(_IDENTIFYING))
        sop_class, sop_uid, study_uid, series_uid = (str(ds.get(k, "") or "") for k in _IDENTIFYING)
    except Exception:
        return "", "", "", ""
    return sop_class, sop_uid, study_uid, series_uid


def _store_part(archive: Archive, part: ReceivedPart, expected_study: str | None, issuer: str) -> PartOutcome:
    """Store one part and say what happened; never raises for a bad part."""
    media = parse_media_type(part.content_type) if part.content_type else None
    data = _as_part10(part.read())
    sop_class, sop_uid, study_uid, series_uid = _identify(data)
    if media is not None and media.media_type != "application/dicom":
        return PartOutcome(
            sop_class,
            sop_uid,
            study_uid,
            series_uid,
            DATA_SET_DOES_NOT_MATCH,
            f"part Content-Type {media.media_type} is not application/dicom",
        )
    if expected_study is not None and study_uid and study_uid != expected_study:
        return PartOutcome(
            sop_class,
            sop_uid,
            study_uid,
            series_uid,
            DATA_SET_DOES_NOT_MATCH,
            f"StudyInstanceUID {study_uid} differs from the study {expected_study} of the request",
        )
    try:
        result = archive.store(data, source_ae=SOURCE, default_issuer=issuer)
    except InvalidInstance as exc:
        return PartOutcome(sop_class, sop_uid, study_uid, series_uid, exc.code, exc.reason)
    except OSError as exc:
        code = OUT_OF_RESOURCES if exc.errno in (errno.ENOSPC, errno.EDQUOT) else PROCESSING_FAILURE
        log.error("event=stow_store_failed sop_uid=%s errno=%s", sop_uid, exc.errno)
        return PartOutcome(
            sop_class, sop_uid, study_uid, series_uid, code, "the archive could not write the object"
        )
    except Exception as exc:
        log.exception("event=stow_store_failed sop_uid=%s error=%s", sop_uid, type(exc).__name__)
        return PartOutcome(
            sop_class,
            sop_uid,
            study_uid,
            series_uid,
            PROCESSING_FAILURE,
            f"processing failure: {type(exc).__name__}",
        )
    return PartOutcome(result.sop_class_uid, result.sop_uid, result.study_uid, result.series_uid)


def _store_all(
    rt: Runtime, parts: list[ReceivedPart], expected_study: str | None, issuer: str
) -> list[PartOutcome]:
    archive = Archive(rt.db, rt.blobs, rt.settings.duplicate_policy)
    try:
        return [_store_part(archive, part, expected_study, issuer) for part in parts]
    finally:
        for part in parts:
            part.close()


def _boundary(request: Request) -> str:
    """The boundary of a ``multipart/related; type="application/dicom"`` request; 415 or 400 otherwise."""
    header = request.headers.get("content-type", "")
    media = parse_media_type(header) if header else None
    if media is None or media.media_type != "multipart/related":
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f'STOW-RS takes multipart/related; type="application/dicom", not {header or "no Content-Type"}',
        )
    part_type = media.params.get("type", "").lower()
    if part_type != "application/dicom":
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f'multipart type {part_type or "(missing)"} is not supported; send type="application/dicom"',
        )
    boundary = media.params.get("boundary", "")
    if not boundary:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "the multipart Content-Type has no boundary")
    return boundary


async def _stow(request: Request, rt: Runtime, principal: Principal, study: str | None) -> JSONResponse:
    await run_in_threadpool(
        guard,
        rt,
        principal,
        access.CREATE,
        access.Resource(kind="study", site=principal.site, ident=study or ""),
        event_type=audit.IMPORT,
        request=request,
    )
    boundary = _boundary(request)
    spool = rt.settings.data_dir / "uploads"
    spool.mkdir(parents=True, exist_ok=True)
    try:
        parts = await read_parts(request.stream(), boundary, spool)
    except MalformedMultipart as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, exc.reason) from exc
    outcomes = await run_in_threadpool(_store_all, rt, parts, study, principal.site)
    return _response(outcomes, dicomweb_base(request), study)


def _response(outcomes: list[PartOutcome], base: str, study: str | None) -> JSONResponse:
    stored = [o for o in outcomes if o.failure is None]
    failed = [o for o in outcomes if o.failure is not None]
    body: dict[str, Any] = {}
    studies = {o.study_uid for o in stored}
    target = study or (next(iter(studies)) if len(studies) == 1 else None)
    if target and stored:
        body["00081190"] = _element("UR", f"{base}/studies/{target}")
    if stored:
        body["00081199"] = {"vr": "SQ", "Value": [_sop_item(o, base) for o in stored]}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": [_sop_item(o, base) for o in failed]}
    headers: dict[str, str] = {}
    if failed:
        reasons = "; ".join(f"{o.sop_uid or 'part'}: {o.reason}" for o in failed[:5])
        text = f"{len(failed)} of {len(outcomes)} instance(s) failed: {reasons}"
        text = text.replace('"', "'").replace("\r", " ").replace("\n", " ")
        headers["Warning"] = f'299 archipel "{text.encode("latin-1", "replace").decode("latin-1")[:900]}"'
    code = (
        status.HTTP_200_OK if not failed else status.HTTP_202_ACCEPTED if stored else status.HTTP_409_CONFLICT
    )
    log.info("event=stow stored=%d failed=%d status=%d", len(stored), len(failed), code)
    return JSONResponse(body, status_code=code, media_type=DICOM_JSON, headers=headers)


@router.post("/studies")
async def store_instances(request: Request, rt: RuntimeDep, principal: PrincipalDep) -> JSONResponse:
    """Store the instances of the request body, whatever their study."""
    return await _stow(request, rt, principal, None)


@router.post("/studies/{study}")
async def store_study_instances(
    study: str, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> JSONResponse:
    """Store the instances of the request body; instances of another study than ``study`` fail."""
    return await _stow(request, rt, principal, study)
