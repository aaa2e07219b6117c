"""WADO-RS (PS3.18 §10.4): instances as stored, metadata, frames and bulk data.

Every response is streamed: instances from the blob a chunk at a time, frames and bulk data by range reads.
Nothing is transcoded; a request for an encoding other than the stored one gets 406 with the stored syntax.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import Response, StreamingResponse

from archipel.platform.http import PrincipalDep, RuntimeDep
from archipel.platform.runtime import Runtime
from archipel.radiology.dicomweb import rendered
from archipel.radiology.dicomweb.frames import (
    FrameLayoutError,
    FrameRequestError,
    check_layout,
    frame_count,
    parse_frame_list,
    pixel_data_frames,
    read_frame,
)
from archipel.radiology.dicomweb.mediatypes import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    NATIVE_TRANSFER_SYNTAXES,
    MediaRange,
    accepts_frames,
    accepts_instances,
    frame_media_type,
    parse_media_ranges,
    wants_single_part,
)
from archipel.radiology.dicomweb.metadata import (
    PIXEL_DATA_PATH,
    BulkDataNotFound,
    bulk_value,
    instance_metadata,
)
from archipel.radiology.dicomweb.multipart import (
    OutgoingPart,
    file_chunks,
    multipart_content_type,
    new_boundary,
    write_parts,
)
from archipel.radiology.dicomweb.resources import Selection, StoredInstance, dicomweb_base, select_instances

log = logging.getLogger("archipel.dicomweb")

router = APIRouter()
router.include_router(rendered.router)

DICOM_JSON = "application/dicom+json"
OCTET_STREAM = "application/octet-stream"
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def _not_acceptable(reason: str) -> HTTPException:
    return HTTPException(status.HTTP_406_NOT_ACCEPTABLE, reason)


def _instances_response(rt: Runtime, request: Request, selection: Selection) -> StreamingResponse:
    """The selected instances' Part-10 bytes, unchanged, as ``multipart/related; type="application/dicom"``."""
    stored = {i.transfer_syntax for i in selection.instances}
    if not accepts_instances(parse_media_ranges(request.headers.get("accept")), stored):
        raise _not_acceptable(
            "the archive does not transcode; stored transfer syntaxes: " + ", ".join(sorted(stored))
        )
    base = dicomweb_base(request)
    boundary = new_boundary()
    parts = (
        OutgoingPart(
            content_type=f"application/dicom; transfer-syntax={i.transfer_syntax}",
            content=file_chunks(rt.blobs.open(i.blob_key)),
            location=base + i.path(),
        )
        for i in selection.instances
    )
    log.info("event=wado_retrieve study_uid=%s instances=%d", selection.study_uid, len(selection.instances))
    only = next(iter(stored)) if len(stored) == 1 else None
    return StreamingResponse(
        write_parts(parts, boundary),
        media_type=multipart_content_type("application/dicom", boundary, only),
    )


@router.get("/studies/{study}")
def retrieve_study(
    study: str, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> StreamingResponse:
    """Every instance of a study, as stored."""
    return _instances_response(rt, request, select_instances(rt, principal, request, study))


@router.get("/studies/{study}/series/{series}")
def retrieve_series(
    study: str, series: str, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> StreamingResponse:
    """Every instance of a series, as stored."""
    return _instances_response(rt, request, select_instances(rt, principal, request, study, series))


@router.get("/studies/{study}/series/{series}/instances/{instance}")
def retrieve_instance(
    study: str, series: str, instance: str, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> StreamingResponse:
    """One instance, as stored."""
    return _instances_response(rt, request, select_instances(rt, principal, request, study, series, instance))


def _metadata_response(rt: Runtime, request: Request, selection: Selection) -> StreamingResponse:
    ranges = parse_media_ranges(request.headers.get("accept"))
    json_types = (DICOM_JSON, "application/json", "application/*", "*/*")
    if ranges and not any(r.media_type in json_types for r in ranges):
        raise _not_acceptable(f"metadata is available as {DICOM_JSON} only")
    base = dicomweb_base(request)

    def body() -> Iterator[bytes]:
        yield b"["
        for n, inst in enumerate(selection.instances):
            yield (b"," if n else b"") + json.dumps(instance_metadata(rt.blobs, inst, base)).encode()
        yield b"]"

    log.info("event=wado_metadata study_uid=%s instances=%d", selection.study_uid, len(selection.instances))
    return StreamingResponse(body(), media_type=DICOM_JSON)


@router.get("/studies/{study}/metadata")
def study_metadata(
    study: str, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> StreamingResponse:
    """DICOM JSON of every instance of a study, bulk data by reference."""
    return _metadata_response(rt, request, select_instances(rt, principal, request, study))


@router.get("/studies/{study}/series/{series}/metadata")
def series_metadata(
    study: str, series: str, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> StreamingResponse:
    """DICOM JSON of every instance of a series, bulk data by reference."""
    return _metadata_response(rt, request, select_instances(rt, principal, request, study, series))


@router.get("/studies/{study}/series/{series}/instances/{instance}/metadata")
def instance_metadata_route(
    study: str, series: str, instance: str, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> StreamingResponse:
    """DICOM JSON of one instance, bulk data by reference."""
    return _metadata_response(rt, request, select_instances(rt, principal, request, study, series, instance))


def _frame_encoding(inst: StoredInstance) -> tuple[str, str]:
    """Media type and transfer syntax of the instance's frames as served."""
    if inst.transfer_syntax in NATIVE_TRANSFER_SYNTAXES:
        # Native frames are served as little-endian bytes whatever the data set's own encoding.
        return OCTET_STREAM, EXPLICIT_VR_LITTLE_ENDIAN
    return frame_media_type(inst.transfer_syntax), inst.transfer_syntax


def _frame_chunks(rt: Runtime, inst: StoredInstance, number: int) -> Iterator[bytes]:
    """One frame's bytes, read only when the response body reaches it."""
    yield read_frame(rt.blobs, inst, number)


@router.get("/studies/{study}/series/{series}/instances/{instance}/frames/{frames}")
def retrieve_frames(
    study: str,
    series: str,
    instance: str,
    frames: str,
    request: Request,
    rt: RuntimeDep,
    principal: PrincipalDep,
) -> StreamingResponse:
    """The listed frames (1-based, comma-separated) as stored, each read by range from the blob."""
    inst = select_instances(rt, principal, request, study, series, instance).instances[0]
    count = frame_count(inst)
    if count == 0:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"instance {instance} has no pixel data")
    try:
        numbers = parse_frame_list(frames, count)
    except FrameRequestError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, exc.reason) from exc
    try:
        check_layout(rt.blobs, inst)
    except FrameLayoutError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"frames cannot be served: {exc}") from exc
    if not accepts_frames(parse_media_ranges(request.headers.get("accept")), inst.transfer_syntax):
        raise _not_acceptable(
            f"the archive does not transcode; frames are stored as {frame_media_type(inst.transfer_syntax)}"
            f" with transfer syntax {inst.transfer_syntax}"
        )
    media, syntax = _frame_encoding(inst)
    base = dicomweb_base(request) + inst.path()
    boundary = new_boundary()
    parts = (
        OutgoingPart(f"{media}; transfer-syntax={syntax}", _frame_chunks(rt, inst, n), f"{base}/frames/{n}")
        for n in numbers
    )
    log.info("event=wado_frames sop_uid=%s frames=%d", instance, len(numbers))
    return StreamingResponse(
        write_parts(parts, boundary), media_type=multipart_content_type(media, boundary, syntax)
    )


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, length)`` of a single ``Range: bytes=a-b`` header; ``None`` without one; 416 when unsatisfiable."""
    if not header:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None or (not match.group(1) and not match.group(2)):
        raise HTTPException(status.HTTP_416_REQUESTED_RANGE_NOT_SATISFIABLE, f"unsupported range {header!r}")
    first, last = match.group(1), match.group(2)
    if first:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
    else:
        start = max(size - int(last), 0)
        end = size - 1
    if start >= size or end < start:
        raise HTTPException(
            status.HTTP_416_REQUESTED_RANGE_NOT_SATISFIABLE,
            f"range {header!r} is outside the {size} bytes of the value",
            headers={"Content-Range": f"bytes */{size}"},
        )
    return start, end - start + 1


def _accepts_bulk(ranges: list[MediaRange], media_types: set[str]) -> bool:
    if not ranges:
        return True
    acceptable = {"", "*/*", "application/*", *media_types}
    return any(r.part_type in acceptable or r.media_type == "*/*" for r in ranges)


@router.get("/studies/{study}/series/{series}/instances/{instance}/bulkdata/{path:path}")
def retrieve_bulkdata(
    study: str,
    series: str,
    instance: str,
    path: str,
    request: Request,
    rt: RuntimeDep,
    principal: PrincipalDep,
) -> Response:
    """A BulkDataURI target: Pixel Data or another large binary value, with single ``Range`` support.

    Encapsulated Pixel Data answers one part per frame, in the frames' own media type.
    """
    inst = select_instances(rt, principal, request, study, series, instance).instances[0]
    ranges = parse_media_ranges(request.headers.get("accept"))
    boundary = new_boundary()
    is_pixel_data = path.strip("/").upper() == PIXEL_DATA_PATH
    if is_pixel_data and inst.is_encapsulated:
        media, syntax = _frame_encoding(inst)
        if not _accepts_bulk(ranges, {OCTET_STREAM, media}):
            raise _not_acceptable(f"encapsulated Pixel Data is available as {media} only")
        parts = (
            OutgoingPart(f"{media}; transfer-syntax={syntax}", _frame_chunks(rt, inst, n))
            for n in range(1, frame_count(inst) + 1)
        )
        return StreamingResponse(
            write_parts(parts, boundary), media_type=multipart_content_type(media, boundary)
        )
    if not _accepts_bulk(ranges, {OCTET_STREAM}):
        raise _not_acceptable(f"bulk data is available as {OCTET_STREAM} only")
    chunks, span, full = _bulk_chunks(rt, inst, is_pixel_data, path, request.headers.get("range"))
    if wants_single_part(ranges, OCTET_STREAM):
        headers = {"Accept-Ranges": "bytes"}
        if span is None:
            return StreamingResponse(chunks, media_type=OCTET_STREAM, headers=headers)
        headers["Content-Range"] = f"bytes {span[0]}-{span[0] + span[1] - 1}/{full}"
        return StreamingResponse(chunks, status_code=206, media_type=OCTET_STREAM, headers=headers)
    part = OutgoingPart(OCTET_STREAM, chunks)
    return StreamingResponse(
        write_parts([part], boundary), media_type=multipart_content_type(OCTET_STREAM, boundary)
    )


def _bulk_chunks(
    rt: Runtime, inst: StoredInstance, is_pixel_data: bool, path: str, range_header: str | None
) -> tuple[Iterator[bytes], tuple[int, int] | None, int]:
    """The chunks of the value at ``path`` (within a requested range), the range served, and the full length."""
    if is_pixel_data:
        if inst.pixel_data_offset is None or inst.pixel_data_length is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"instance {inst.sop_uid} has no pixel data")
        if inst.transfer_syntax in (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN):
            full = inst.pixel_data_length
            span = _byte_range(range_header, full)
            start, length = span or (0, full)
            handle = rt.blobs.open(inst.blob_key)
            return file_chunks(handle, inst.pixel_data_offset + start, length), span, full
        value = b"".join(pixel_data_frames(rt.blobs, inst))
    else:
        try:
            value = bulk_value(rt.blobs, inst, path)
        except BulkDataNotFound as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, exc.reason) from exc
    span = _byte_range(range_header, len(value))
    start, length = span or (0, len(value))
    return iter([value[start : start + length]]), span, len(value)
