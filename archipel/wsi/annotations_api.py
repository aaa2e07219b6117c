"""The annotations API: a slide's annotations as GeoJSON (level-0 pixels), and their DICOM instance.

Reading them is a read of the slide (audited as a patient-record read). Adding or deleting one needs both read
access to the slide and the right to add patient data (a new DICOM instance); a refusal is audited, and so is each
change once its input is found valid (a refused body or an unknown annotation changes nothing and is no change).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, HTTPException, Request, Response, status

from archipel.platform import access, access_facts, audit
from archipel.platform.authn import Principal
from archipel.platform.http import PrincipalDep, RuntimeDep, guard
from archipel.platform.runtime import Runtime
from archipel.wsi import annotation_dicom
from archipel.wsi import annotations as store
from archipel.wsi.annotations import InvalidAnnotation
from archipel.wsi.models import Slide
from archipel.wsi.slide_access import slide_resource
from archipel.wsi.viewer_api import load_slide, open_pyramid

log = logging.getLogger("archipel.wsi")

router = APIRouter(prefix="/api/slides", tags=["annotations"])

#: A body larger than this is refused before it is parsed (5,000 vertices fit in well under it).
MAX_BODY = 512 * 1024

_FEATURE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "description": "A GeoJSON Feature: Point, LineString or Polygon (one closed ring) in level-0 "
                    "pixels, with properties.label (1-64 characters).",
                }
            }
        },
    }
}


def _resource(slide: Slide, what: str = "") -> access.Resource:
    return slide_resource(slide.issuer, slide.patient_id, f"slide:{slide.id}{what}")


def _read(rt: Runtime, principal: Principal, slide: Slide, request: Request, what: str = "") -> None:
    guard(
        rt, principal, access.READ, _resource(slide, what), event_type=audit.PATIENT_RECORD, request=request
    )


def _check_change(
    rt: Runtime, principal: Principal, slide: Slide, request: Request
) -> tuple[access.Resource, access.Facts]:
    """Refuse (audited, 403) unless the principal may read the slide and add patient data to it."""
    resource, facts = access_facts.load(rt.db, principal, _resource(slide, "/annotations"))
    for action in (access.READ, access.CREATE):
        if not access.allow(principal, action, resource, facts).allowed:
            guard(
                rt, principal, action, resource, event_type=audit.PATIENT_RECORD, request=request, facts=facts
            )
    return resource, facts


def _audit_change(
    rt: Runtime, principal: Principal, checked: tuple[access.Resource, access.Facts], request: Request
) -> None:
    """Record the change about to be made (after its input was found valid, so a refused body is no change)."""
    resource, facts = checked
    guard(
        rt, principal, access.CREATE, resource, event_type=audit.PATIENT_RECORD, request=request, facts=facts
    )


async def _feature(request: Request) -> Any:
    body = await request.body()
    if len(body) > MAX_BODY:
        raise HTTPException(
            status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, f"an annotation is at most {MAX_BODY} bytes"
        )
    try:
        return json.loads(body)
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, f"the body is not JSON: {exc}") from exc


@router.get("/{slide_id}/annotations")
def list_annotations(
    slide_id: str, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """The slide's annotations: a GeoJSON FeatureCollection in level-0 pixels, each feature's properties giving
    ``id``, ``label``, ``author`` and ``created_at``; ``dicom`` says which DICOM instance holds the set."""
    slide = load_slide(rt, slide_id)
    _read(rt, principal, slide, request, "/annotations")
    body = store.collection(rt.db, slide_id)
    state = store.annotation_set(rt.db, slide_id)
    body["dicom"] = {
        "series_uid": state.series_uid if state else "",
        "sop_uid": state.sop_uid if state else "",
        "instance_number": state.version if state else 0,
        "pending": bool(state and state.pending),
    }
    return body


@router.post("/{slide_id}/annotations", status_code=status.HTTP_201_CREATED, openapi_extra=_FEATURE_BODY)
async def add_annotation(
    slide_id: str, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Add an annotation (a GeoJSON Feature); 201 with the stored feature and its ``id``. 422 with the reason
    for a geometry that is not a Point, LineString or one-ring Polygon, a position outside the slide, or a
    missing or too long label. Writes the slide's new DICOM annotation instance when the slide is converted."""
    slide = load_slide(rt, slide_id)
    checked = await anyio.to_thread.run_sync(lambda: _check_change(rt, principal, slide, request))
    feature = await _feature(request)
    pyramid = await anyio.to_thread.run_sync(lambda: open_pyramid(rt, slide_id))
    size = pyramid.levels[0].size
    try:
        new = store.validate_feature(feature, size.width, size.height)
    except InvalidAnnotation as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, str(exc)) from exc
    await anyio.to_thread.run_sync(lambda: _audit_change(rt, principal, checked, request))
    row = store.add(rt.db, slide_id, new, principal.subject)
    await anyio.to_thread.run_sync(lambda: annotation_dicom.write_pending(rt, slide_id))
    log.info("event=annotation_added slide=%s annotation=%s type=%s", slide_id, row.id, row.geometry_type)
    return {"id": row.id, **row.feature()}


@router.delete("/{slide_id}/annotations/{annotation_id}")
def delete_annotation(
    slide_id: str, annotation_id: str, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Delete an annotation of the slide; its earlier DICOM instances keep it (a new one is written without)."""
    slide = load_slide(rt, slide_id)
    checked = _check_change(rt, principal, slide, request)
    if not store.is_live(rt.db, slide_id, annotation_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"slide {slide_id} has no annotation {annotation_id}")
    _audit_change(rt, principal, checked, request)
    if not store.remove(rt.db, slide_id, annotation_id, principal.subject):  # deleted meanwhile by another
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"slide {slide_id} has no annotation {annotation_id}")
    annotation_dicom.write_pending(rt, slide_id)
    log.info("event=annotation_deleted slide=%s annotation=%s", slide_id, annotation_id)
    return {"deleted": annotation_id}


@router.get("/{slide_id}/annotations.dcm", response_class=Response)
def annotations_dicom(slide_id: str, request: Request, rt: RuntimeDep, principal: PrincipalDep) -> Response:
    """The slide's current annotation set as a DICOM Microscopy Bulk Simple Annotations file
    (``application/dicom``); 404 while there is none (no annotation, or the slide is not converted yet)."""
    slide = load_slide(rt, slide_id)
    guard(
        rt,
        principal,
        access.READ,
        _resource(slide, "/annotations.dcm"),
        event_type=audit.INSTANCES_ACCESSED,
        request=request,
    )
    annotation_dicom.write_pending(rt, slide_id)  # a set kept while the slide was converting
    data = annotation_dicom.current_instance(rt, slide_id)
    if data is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"slide {slide_id} has no DICOM annotation instance (no annotation, or the slide is not converted yet)",
        )
    return Response(
        data,
        media_type="application/dicom",
        headers={"Content-Disposition": f'attachment; filename="{slide_id}-annotations.dcm"'},
    )
