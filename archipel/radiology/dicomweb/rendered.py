"""WADO-RS rendered resources and thumbnails (PS3.18 §10.4.1.1.3 and §10.4.1.1.4): consumer-ready JPEG or PNG.

Study and series thumbnails show a representative instance: the middle image of the first series with pixel
data.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import Response

from archipel.platform.http import PrincipalDep, RuntimeDep
from archipel.platform.runtime import Runtime
from archipel.radiology.dicomweb.frames import FrameRequestError, frame_count, parse_frame_list
from archipel.radiology.dicomweb.mediatypes import parse_media_ranges
from archipel.radiology.dicomweb.render import (
    THUMBNAIL_SIZE,
    RenderRequestError,
    Viewport,
    choose_rendered_type,
    parse_viewport,
    parse_window,
    render_frame,
)
from archipel.radiology.dicomweb.resources import Selection, StoredInstance, select_instances

log = logging.getLogger("archipel.dicomweb")

router = APIRouter()


def _representative(selection: Selection) -> StoredInstance:
    by_series: dict[str, list[StoredInstance]] = {}
    for inst in selection.instances:
        if frame_count(inst) > 0:
            by_series.setdefault(inst.series_uid, []).append(inst)
    if not by_series:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no instance with pixel data to render")
    first = next(iter(by_series.values()))
    return first[len(first) // 2]


def _render(
    rt: Runtime,
    request: Request,
    inst: StoredInstance,
    number: int,
    *,
    window: str | None,
    viewport: str | None,
    quality: int,
    default_viewport: Viewport | None = None,
) -> Response:
    """Render frame ``number`` of ``inst`` as the ``Accept`` header and query parameters ask."""
    if frame_count(inst) == 0:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"instance {inst.sop_uid} has no pixel data")
    media_type = choose_rendered_type(parse_media_ranges(request.headers.get("accept")))
    if media_type is None:
        raise HTTPException(status.HTTP_406_NOT_ACCEPTABLE, "rendered images are image/jpeg or image/png")
    if not 1 <= quality <= 100:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"quality {quality} must be between 1 and 100")
    try:
        parsed_window = parse_window(window)
        parsed_viewport = parse_viewport(viewport) or default_viewport
    except RenderRequestError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, exc.reason) from exc
    try:
        data = render_frame(
            rt.blobs,
            inst,
            number,
            media_type=media_type,
            window=parsed_window,
            viewport=parsed_viewport,
            quality=quality,
        )
    except Exception as exc:  # a decoder missing or failing on this object: say so, do not crash
        log.warning("event=render_failed sop_uid=%s error=%s", inst.sop_uid, type(exc).__name__)
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"instance {inst.sop_uid} cannot be rendered: {exc}"
        ) from exc
    return Response(data, media_type=media_type)


@router.get("/studies/{study}/series/{series}/instances/{instance}/rendered")
def rendered_instance(
    study: str,
    series: str,
    instance: str,
    request: Request,
    rt: RuntimeDep,
    principal: PrincipalDep,
    window: str | None = None,
    viewport: str | None = None,
    quality: int = 90,
) -> Response:
    """The instance (its first frame) rendered as JPEG (default) or PNG."""
    inst = select_instances(rt, principal, request, study, series, instance).instances[0]
    return _render(rt, request, inst, 1, window=window, viewport=viewport, quality=quality)


@router.get("/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/rendered")
def rendered_frame(
    study: str,
    series: str,
    instance: str,
    frames: str,
    request: Request,
    rt: RuntimeDep,
    principal: PrincipalDep,
    window: str | None = None,
    viewport: str | None = None,
    quality: int = 90,
) -> Response:
    """One frame rendered as JPEG (default) or PNG."""
    inst = select_instances(rt, principal, request, study, series, instance).instances[0]
    try:
        numbers = parse_frame_list(frames, frame_count(inst))
    except FrameRequestError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, exc.reason) from exc
    if len(numbers) != 1:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "a rendered frame request names exactly one frame")
    return _render(rt, request, inst, numbers[0], window=window, viewport=viewport, quality=quality)


def _thumbnail(rt: Runtime, request: Request, selection: Selection, viewport: str | None) -> Response:
    inst = _representative(selection)
    default = Viewport(THUMBNAIL_SIZE, THUMBNAIL_SIZE)
    return _render(rt, request, inst, 1, window=None, viewport=viewport, quality=80, default_viewport=default)


@router.get("/studies/{study}/thumbnail")
def study_thumbnail(
    study: str, request: Request, rt: RuntimeDep, principal: PrincipalDep, viewport: str | None = None
) -> Response:
    """A small image of a representative instance of the study."""
    return _thumbnail(rt, request, select_instances(rt, principal, request, study), viewport)


@router.get("/studies/{study}/series/{series}/thumbnail")
def series_thumbnail(
    study: str,
    series: str,
    request: Request,
    rt: RuntimeDep,
    principal: PrincipalDep,
    viewport: str | None = None,
) -> Response:
    """A small image of a representative instance of the series."""
    return _thumbnail(rt, request, select_instances(rt, principal, request, study, series), viewport)


@router.get("/studies/{study}/series/{series}/instances/{instance}/thumbnail")
def instance_thumbnail(
    study: str,
    series: str,
    instance: str,
    request: Request,
    rt: RuntimeDep,
    principal: PrincipalDep,
    viewport: str | None = None,
) -> Response:
    """A small image of the instance."""
    return _thumbnail(
        rt, request, select_instances(rt, principal, request, study, series, instance), viewport
    )
