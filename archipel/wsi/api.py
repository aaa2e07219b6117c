"""The slides API: upload a slide (multipart form), see a slide's state, retry a failed conversion.

``POST /api/slides`` takes a ``multipart/form-data`` body with a ``file`` part (the slide) and a ``metadata``
part (JSON, see :class:`archipel.wsi.intake.SlideMetadata`) and answers ``202`` with the slide and job ids once
the source is durable. Resumable uploads are in :mod:`archipel.wsi.upload` (tus).
"""

from __future__ import annotations

import logging
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, HTTPException, Request, status

from archipel.platform import access, audit, jobs
from archipel.platform.http import PrincipalDep, RuntimeDep
from archipel.platform.runtime import Runtime
from archipel.wsi import upload
from archipel.wsi.form import FormError, read_slide_form
from archipel.wsi.intake import UnsupportedSlide, sniff_container
from archipel.wsi.models import FAILED, RECEIVED, Slide
from archipel.wsi.slide_access import guard_new_slide, guard_slide, precheck_producer, validated_metadata
from archipel.wsi.slides import SourceTooLarge, enqueue, register_slide

log = logging.getLogger("archipel.wsi")

router = APIRouter(prefix="/api/slides", tags=["slides"])
router.include_router(upload.router)

_FORM_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "metadata"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "The slide file."},
                        "metadata": {
                            "type": "string",
                            "description": 'JSON: {"patient_id", "issuer", "accession"?, "container_id"?, '
                            '"stain"?, "urgent"?}',
                        },
                    },
                }
            }
        },
    }
}


@router.post("", status_code=status.HTTP_202_ACCEPTED, openapi_extra=_FORM_BODY)
async def upload_slide(request: Request, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """Upload a slide (``file``) with its ``metadata``; it is stored unchanged, then converted to DICOM WSI and
    OME-Zarr and indexed by a background job. Returns ``slide_id`` and ``job_id``."""
    precheck_producer(rt, principal, request)
    try:
        form = await read_slide_form(request.headers.get("content-type", ""), request.stream(), rt.settings)
    except SourceTooLarge as exc:
        raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, str(exc)) from exc
    except (FormError, ValueError) as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"malformed upload: {exc}") from exc
    assert form.spool is not None and form.metadata is not None
    try:
        meta = validated_metadata(rt, form.metadata)
        guard_new_slide(rt, principal, meta, request)
        with form.spool.path.open("rb") as f:
            sniff_container(f.read(132))
    except UnsupportedSlide as exc:
        form.discard()
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, str(exc)) from exc
    except BaseException:
        form.discard()
        raise
    spool = form.spool
    registered = await anyio.to_thread.run_sync(
        lambda: register_slide(
            rt,
            spool.path,
            spool.sha256,
            spool.size,
            meta,
            filename=form.filename,
            origin="upload",
            created_by=principal.subject,
            role=principal.role,
        )
    )
    return registered.as_dict()


def _load(rt: Runtime, slide_id: str) -> Slide:
    with rt.db.sessions() as s:
        slide = s.get(Slide, slide_id)
    if slide is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no slide {slide_id}")
    return slide


@router.get("/{slide_id}")
def get_slide(slide_id: str, request: Request, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """A slide's state (received, converting, indexing, ready, failed with its reason), its study and series,
    and its job's progress."""
    slide = _load(rt, slide_id)
    guard_slide(rt, principal, access.READ, slide, request)
    body = slide.as_dict()
    job = jobs.get_job(rt.db, slide.job_id) if slide.job_id else None
    body["job"] = job.as_dict() if job is not None else None
    return body


@router.post("/{slide_id}/retry", status_code=status.HTTP_202_ACCEPTED)
def retry_slide(slide_id: str, request: Request, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """Convert a failed slide again (after the cause was fixed), from its stored source, with a new job."""
    slide = _load(rt, slide_id)
    guard_slide(rt, principal, access.CREATE, slide, request, event_type=audit.IMPORT)
    if slide.status != FAILED:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"slide {slide_id} is {slide.status}; only a failed slide is retried"
        )
    job_id = jobs.create_job(
        rt.db, "wsi.convert", {"slide_id": slide_id, "role": principal.role, "retry": True}, principal.subject
    )
    with rt.db.write() as s:
        row = s.get(Slide, slide_id)
        assert row is not None
        row.status, row.job_id, row.error = RECEIVED, job_id, ""
    enqueue(job_id, slide.urgent)
    log.info("event=slide_retry slide=%s job=%s", slide_id, job_id)
    return {"slide_id": slide_id, "job_id": job_id, "status_url": f"/api/slides/{slide_id}"}
