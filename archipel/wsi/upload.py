"""Resumable slide upload: the tus 1.0.0 protocol (core, creation, termination, checksum) under
``/api/slides/uploads``.

``POST`` creates an upload from ``Upload-Length`` and ``Upload-Metadata`` (the slide metadata, validated now, so a
bad one is refused before any byte is sent); ``HEAD`` gives the offset reached; ``PATCH`` appends from
``Upload-Offset`` (``Upload-Checksum`` optionally checks the piece); ``DELETE`` abandons it. The bytes go to a
spool file whose size *is* the offset, so an interrupted request keeps what arrived and a restarted server
resumes where the disk says. When the last byte lands, the slide is registered like a form upload and the final
``PATCH`` answers with ``Archipel-Slide-Id`` and ``Archipel-Job-Id`` (``HEAD`` repeats them). See decision 0018.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, HTTPException, Request, Response, status
from starlette.requests import ClientDisconnect

from archipel.platform.authn import Principal
from archipel.platform.http import PrincipalDep, RuntimeDep
from archipel.platform.runtime import Runtime
from archipel.wsi.intake import SlideMetadata, UnsupportedSlide, parse_metadata, sniff_container
from archipel.wsi.models import Slide, SlideUpload
from archipel.wsi.slide_access import guard_new_slide, precheck_producer, validated_metadata
from archipel.wsi.slides import hash_file, register_slide, uploads_dir

log = logging.getLogger("archipel.wsi")

TUS_VERSION = "1.0.0"
EXTENSIONS = "creation,termination,checksum"
CHECKSUMS = {"sha1": hashlib.sha1, "md5": hashlib.md5, "sha256": hashlib.sha256}
#: tus' status for a piece whose checksum does not match.
CHECKSUM_MISMATCH = 460

router = APIRouter(prefix="/uploads", tags=["slides"])


def _tus(headers: dict[str, str] | None = None) -> dict[str, str]:
    return {"Tus-Resumable": TUS_VERSION, **(headers or {})}


def _error(code: int, reason: str, headers: dict[str, str] | None = None) -> HTTPException:
    return HTTPException(code, reason, headers=_tus(headers))


def _require_version(request: Request) -> None:
    sent = request.headers.get("tus-resumable")
    if sent != TUS_VERSION:
        raise _error(
            status.HTTP_412_PRECONDITION_FAILED,
            f"Tus-Resumable {sent or '(missing)'} is not supported; this server speaks tus {TUS_VERSION}",
            {"Tus-Version": TUS_VERSION},
        )


def parse_upload_metadata(header: str) -> dict[str, str]:
    """Decode tus ``Upload-Metadata``: comma-separated ``key base64value`` pairs (the value may be absent)."""
    values: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in header.split(","))):
        key, _, encoded = pair.partition(" ")
        try:
            values[key] = base64.b64decode(encoded.strip(), validate=True).decode("utf-8") if encoded else ""
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise ValueError(f"Upload-Metadata value of {key!r} is not base64 of UTF-8 text") from exc
    return values


def metadata_from_tus(values: dict[str, str]) -> dict[str, Any] | str:
    """The slide metadata: the JSON of the ``metadata`` key, else the individual keys (``urgent`` as true/1)."""
    if "metadata" in values:
        return values["metadata"]
    fields = {k: v for k, v in values.items() if k not in ("filename", "filetype", "name", "type")}
    if "urgent" in fields:
        return {**fields, "urgent": fields["urgent"].strip().lower() in ("1", "true", "yes")}
    return fields


def _spool(rt: Runtime, upload_id: str) -> Path:
    return uploads_dir(rt.settings) / f"tus-{upload_id}.part"


def _offset(rt: Runtime, upload: SlideUpload) -> int:
    if upload.slide_id:
        return upload.length
    try:
        return _spool(rt, upload.id).stat().st_size
    except FileNotFoundError as exc:
        raise _error(status.HTTP_410_GONE, f"upload {upload.id} lost its data; start a new upload") from exc


def _own_upload(rt: Runtime, upload_id: str, principal: Principal) -> SlideUpload:
    with rt.db.sessions() as s:
        upload = s.get(SlideUpload, upload_id)
    if upload is None:
        raise _error(status.HTTP_404_NOT_FOUND, f"no upload {upload_id}")
    if upload.created_by != principal.subject:
        raise _error(status.HTTP_403_FORBIDDEN, "this upload belongs to another user")
    return upload


@router.options("", status_code=status.HTTP_204_NO_CONTENT)
def tus_options(rt: RuntimeDep, principal: PrincipalDep) -> Response:
    """tus discovery: version, extensions, checksum algorithms and the largest slide accepted."""
    return Response(
        status_code=status.HTTP_204_NO_CONTENT,
        headers=_tus(
            {
                "Tus-Version": TUS_VERSION,
                "Tus-Extension": EXTENSIONS,
                "Tus-Checksum-Algorithm": ",".join(CHECKSUMS),
                "Tus-Max-Size": str(rt.settings.wsi_max_upload_gb << 30),
            }
        ),
    )


@router.post("", status_code=status.HTTP_201_CREATED)
def tus_create(request: Request, rt: RuntimeDep, principal: PrincipalDep) -> Response:
    """Create a resumable upload (tus creation). ``Upload-Metadata`` carries the slide metadata; answers
    ``201`` with the upload's ``Location``."""
    _require_version(request)
    precheck_producer(rt, principal, request)
    if "upload-defer-length" in request.headers:
        raise _error(status.HTTP_400_BAD_REQUEST, "Upload-Defer-Length is not supported: send Upload-Length")
    try:
        length = int(request.headers.get("upload-length", ""))
    except ValueError as exc:
        raise _error(
            status.HTTP_400_BAD_REQUEST, "Upload-Length (a non-negative integer) is required"
        ) from exc
    limit = rt.settings.wsi_max_upload_gb << 30
    if length <= 0:
        raise _error(status.HTTP_400_BAD_REQUEST, "Upload-Length must be positive: a slide is not empty")
    if length > limit:
        raise _error(
            status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, f"the slide is larger than the {limit >> 30} GiB limit"
        )
    try:
        values = parse_upload_metadata(request.headers.get("upload-metadata", ""))
    except ValueError as exc:
        raise _error(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
    try:
        meta: SlideMetadata = validated_metadata(rt, metadata_from_tus(values))
    except HTTPException as exc:
        raise _error(exc.status_code, str(exc.detail)) from exc
    guard_new_slide(rt, principal, meta, request)
    upload_id = uuid.uuid4().hex
    _spool(rt, upload_id).touch()
    with rt.db.write() as s:
        s.add(
            SlideUpload(
                id=upload_id,
                length=length,
                meta=meta.model_dump_json(),
                filename=values.get("filename", "")[:255],
                created_by=principal.subject,
            )
        )
    log.info("event=tus_created upload=%s length=%d", upload_id, length)
    return Response(
        status_code=status.HTTP_201_CREATED,
        headers=_tus({"Location": f"/api/slides/uploads/{upload_id}", "Upload-Offset": "0"}),
    )


def _done_headers(rt: Runtime, upload: SlideUpload) -> dict[str, str]:
    if not upload.slide_id:
        return {}
    with rt.db.sessions() as s:
        slide = s.get(Slide, upload.slide_id)
        job_id = slide.job_id if slide is not None else ""
    return {"Archipel-Slide-Id": upload.slide_id, "Archipel-Job-Id": job_id}


@router.head("/{upload_id}")
def tus_head(upload_id: str, request: Request, rt: RuntimeDep, principal: PrincipalDep) -> Response:
    """The offset reached (tus core): where a ``PATCH`` resumes."""
    _require_version(request)
    upload = _own_upload(rt, upload_id, principal)
    headers = {
        "Upload-Offset": str(_offset(rt, upload)),
        "Upload-Length": str(upload.length),
        "Cache-Control": "no-store",
        **_done_headers(rt, upload),
    }
    return Response(status_code=status.HTTP_200_OK, headers=_tus(headers))


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[int]:
    """An fd on the spool, appending, held by one request at a time (a second one gets 409)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise _error(status.HTTP_409_CONFLICT, "another request is writing to this upload") from exc
        yield fd
    finally:
        os.close(fd)


def _checksum(header: str | None) -> tuple[Any, bytes] | None:
    if not header:
        return None
    algorithm, _, encoded = header.strip().partition(" ")
    if algorithm not in CHECKSUMS:
        raise _error(
            status.HTTP_400_BAD_REQUEST,
            f"checksum algorithm {algorithm!r} is not supported ({', '.join(CHECKSUMS)})",
        )
    try:
        return CHECKSUMS[algorithm](), base64.b64decode(encoded, validate=True)
    except binascii.Error as exc:
        raise _error(status.HTTP_400_BAD_REQUEST, "Upload-Checksum value is not base64") from exc


@router.patch("/{upload_id}", status_code=status.HTTP_204_NO_CONTENT)
async def tus_patch(upload_id: str, request: Request, rt: RuntimeDep, principal: PrincipalDep) -> Response:
    """Append the body at ``Upload-Offset`` (tus core). An interrupted request keeps the bytes that arrived."""
    _require_version(request)
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/offset+octet-stream":
        raise _error(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            "PATCH needs Content-Type: application/offset+octet-stream",
        )
    upload = await anyio.to_thread.run_sync(_own_upload, rt, upload_id, principal)
    if upload.slide_id:
        raise _error(
            status.HTTP_409_CONFLICT, "the upload is complete", {"Upload-Offset": str(upload.length)}
        )
    try:
        claimed = int(request.headers.get("upload-offset", ""))
    except ValueError as exc:
        raise _error(
            status.HTTP_400_BAD_REQUEST, "Upload-Offset (a non-negative integer) is required"
        ) from exc
    check = _checksum(request.headers.get("upload-checksum"))
    spool = _spool(rt, upload_id)
    if not spool.exists():
        raise _error(status.HTTP_410_GONE, f"upload {upload_id} lost its data; start a new upload")
    with _exclusive(spool) as fd:
        offset = os.fstat(fd).st_size
        if claimed != offset:
            raise _error(
                status.HTTP_409_CONFLICT,
                f"Upload-Offset {claimed} does not match the {offset} bytes received",
                {"Upload-Offset": str(offset)},
            )
        written = 0
        try:
            async for chunk in request.stream():
                if offset + written + len(chunk) > upload.length:
                    os.ftruncate(fd, offset)
                    raise _error(status.HTTP_400_BAD_REQUEST, "the body runs past Upload-Length")
                await anyio.to_thread.run_sync(os.write, fd, chunk)
                written += len(chunk)
                if check is not None:
                    check[0].update(chunk)
        except ClientDisconnect:
            # What arrived stays: the client asks HEAD for the offset and resumes from there.
            log.info("event=tus_interrupted upload=%s offset=%d", upload_id, offset + written)
        await anyio.to_thread.run_sync(os.fsync, fd)
        if check is not None and check[0].digest() != check[1]:
            os.ftruncate(fd, offset)
            raise _error(CHECKSUM_MISMATCH, "Upload-Checksum does not match the piece; it was discarded")
        new_offset = offset + written
    headers = {"Upload-Offset": str(new_offset)}
    if new_offset == upload.length:
        headers.update(await anyio.to_thread.run_sync(_complete, rt, upload, spool, principal))
    return Response(status_code=status.HTTP_204_NO_CONTENT, headers=_tus(headers))


def _complete(rt: Runtime, upload: SlideUpload, spool: Path, principal: Principal) -> dict[str, str]:
    """Register the finished upload as a slide (the spool file becomes the stored source)."""
    with spool.open("rb") as f:
        head = f.read(132)
    try:
        sniff_container(head)
    except UnsupportedSlide as exc:
        spool.unlink(missing_ok=True)
        with rt.db.write() as s:
            row = s.get(SlideUpload, upload.id)
            if row is not None:
                s.delete(row)
        raise _error(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, str(exc)) from exc
    sha256, size = hash_file(spool)
    meta = parse_metadata(json.loads(upload.meta))
    registered = register_slide(
        rt,
        spool,
        sha256,
        size,
        meta,
        filename=upload.filename,
        origin="tus",
        created_by=principal.subject,
        role=principal.role,
        upload_id=upload.id,
    )
    return {"Archipel-Slide-Id": registered.slide_id, "Archipel-Job-Id": registered.job_id}


@router.delete("/{upload_id}", status_code=status.HTTP_204_NO_CONTENT)
def tus_delete(upload_id: str, request: Request, rt: RuntimeDep, principal: PrincipalDep) -> Response:
    """Abandon an upload (tus termination): its bytes are removed. A completed upload's slide stays."""
    _require_version(request)
    upload = _own_upload(rt, upload_id, principal)
    _spool(rt, upload_id).unlink(missing_ok=True)
    with rt.db.write() as s:
        row = s.get(SlideUpload, upload_id)
        if row is not None:
            s.delete(row)
    log.info("event=tus_terminated upload=%s completed=%s", upload_id, bool(upload.slide_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT, headers=_tus())
