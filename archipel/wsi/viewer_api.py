"""What the slide viewer needs besides tiles: the slide's geometry and optics, its case's slides, and its
label, overview (macro) and thumbnail images.

``GET /api/slides/{id}/viewer`` is read like the slide itself (audited as a patient-record read); the images are
slide pixels and are audited as *Instances Accessed*, like opening the slide in the tile service.
"""

from __future__ import annotations

import io
import logging
from typing import Any

import numpy as np
from fastapi import APIRouter, HTTPException, Request, Response, status
from PIL import Image
from sqlalchemy import select

from archipel.platform import access, audit
from archipel.platform.http import PrincipalDep, RuntimeDep
from archipel.platform.runtime import Runtime
from archipel.tiles import api as tiles_api
from archipel.tiles.pyramid import Codec, Pyramid
from archipel.tiles.views import SlideUnavailable
from archipel.wsi.annotation_dicom import level0_image
from archipel.wsi.models import READY, Slide
from archipel.wsi.slide_access import guard_slide
from archipel.wsi.sources import AssociatedKind

log = logging.getLogger("archipel.wsi")

router = APIRouter(prefix="/api/slides", tags=["viewer"])

#: The API's names of the associated images (DICOM calls the macro image OVERVIEW).
KINDS = {
    "label": AssociatedKind.LABEL,
    "overview": AssociatedKind.MACRO,
    "thumbnail": AssociatedKind.THUMBNAIL,
}
THUMBNAIL_LONGEST = 512
#: A thumbnail made from the smallest level reads at most this many of its tiles.
_THUMBNAIL_TILES = 64


def load_slide(rt: Runtime, slide_id: str) -> Slide:
    """The slide row, or 404."""
    with rt.db.sessions() as s:
        slide = s.get(Slide, slide_id)
    if slide is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no slide {slide_id}")
    return slide


def open_pyramid(rt: Runtime, slide_id: str) -> Pyramid:
    """The slide's pyramid as the tile service serves it (its source until converted, then its DICOM WSI)."""
    try:
        found = tiles_api.service(rt).views.get(rt, slide_id)
    except SlideUnavailable as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, f"slide {slide_id}: {exc}") from exc
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no slide {slide_id}")
    return found[1]


def _case_slides(rt: Runtime, slide: Slide) -> list[dict[str, Any]]:
    with rt.db.sessions() as s:
        query = select(Slide).where(Slide.issuer == slide.issuer, Slide.patient_id == slide.patient_id)
        if slide.case_id is not None:
            query = query.where(Slide.case_id == slide.case_id)
        else:
            query = query.where(Slide.accession == slide.accession)
        rows = list(s.execute(query.order_by(Slide.created_at, Slide.id)).scalars())
    if slide.case_id is None and not slide.accession:
        rows = [slide]
    return [
        {"slide_id": r.id, "stain": r.stain, "container_id": r.container_id, "status": r.status} for r in rows
    ]


def _objective_power(rt: Runtime, slide: Slide, pyramid: Pyramid) -> float | None:
    """The scanning objective: from the source, else from the converted slide's optical path."""
    power = getattr(pyramid, "objective_power", None)
    if power is None and slide.status == READY and slide.series_uid:
        header = level0_image(rt, slide.series_uid)
        paths = header.get("OpticalPathSequence", []) if header is not None else []
        if paths and "ObjectiveLensPower" in paths[0]:
            power = float(paths[0].ObjectiveLensPower)
    return power


@router.get("/{slide_id}/viewer")
def viewer_info(slide_id: str, request: Request, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """The slide for the viewer: level-0 size, tile size, microns per pixel (x, y; null when unknown), scanning
    objective, stain, the associated images it has, and the slides of its case in order (for the strip)."""
    slide = load_slide(rt, slide_id)
    guard_slide(rt, principal, access.READ, slide, request)
    pyramid = open_pyramid(rt, slide_id)
    level0 = pyramid.levels[0]
    stored = getattr(pyramid, "associated", {})
    associated = [name for name, kind in KINDS.items() if kind in stored]
    if "thumbnail" not in associated:
        associated.append("thumbnail")  # made from the smallest level
    return {
        "slide_id": slide.id,
        "status": slide.status,
        "accession": slide.accession,
        "stain": slide.stain,
        "container_id": slide.container_id,
        "width": level0.size.width,
        "height": level0.size.height,
        "tile_size": level0.tile.width,
        "levels": len(pyramid.levels),
        "mpp": list(pyramid.mpp) if pyramid.mpp else None,
        "objective_power": _objective_power(rt, slide, pyramid),
        "associated": associated,
        "dzi": f"/tiles/{slide.id}.dzi",
        "case_slides": _case_slides(rt, slide),
    }


def _smallest_level_image(pyramid: Pyramid) -> np.ndarray:
    index = len(pyramid.levels) - 1
    level = pyramid.levels[index]
    grid = level.grid
    if grid.width * grid.height > _THUMBNAIL_TILES:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "the slide has no thumbnail and no small level")
    tw, th = level.tile.width, level.tile.height
    canvas = np.full((grid.height * th, grid.width * tw, 3), 255, np.uint8)
    for row in range(grid.height):
        for col in range(grid.width):
            canvas[row * th : (row + 1) * th, col * tw : (col + 1) * tw] = pyramid.read_tile(index, col, row)
    return canvas[: level.size.height, : level.size.width]


def _encode(pixels: np.ndarray, longest: int | None = None) -> tuple[bytes, str]:
    image = Image.fromarray(pixels)
    if longest is not None and max(image.size) > longest:
        image.thumbnail((longest, longest))
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False)
    return out.getvalue(), "image/png"


@router.get("/{slide_id}/associated/{kind}", response_class=Response)
def associated_image(
    slide_id: str, kind: str, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> Response:
    """The slide's ``label``, ``overview`` (macro) or ``thumbnail`` image: the stored JPEG as is when it is one,
    else PNG. A slide without a stored thumbnail gets one made from its smallest level. Audited as an open."""
    if kind not in KINDS:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"no associated image {kind!r}; use {', '.join(KINDS)}"
        )
    slide = load_slide(rt, slide_id)
    guard_slide(rt, principal, access.READ, slide, request, event_type=audit.INSTANCES_ACCESSED, part=kind)
    pyramid = open_pyramid(rt, slide_id)
    image = getattr(pyramid, "associated", {}).get(KINDS[kind])
    headers = {"Cache-Control": "private, max-age=300"}
    if image is None:
        if kind != "thumbnail":
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"slide {slide_id} has no {kind} image")
        data, media = _encode(_smallest_level_image(pyramid), THUMBNAIL_LONGEST)
        return Response(data, media_type=media, headers=headers)
    raw = image.read_raw()
    if raw is not None and raw.codec == Codec.JPEG:
        return Response(raw.data, media_type="image/jpeg", headers=headers)
    data, media = _encode(image.read(), THUMBNAIL_LONGEST if kind == "thumbnail" else None)
    return Response(data, media_type=media, headers=headers)
