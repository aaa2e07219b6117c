"""The tile service over HTTP: Deep Zoom (``/tiles``) and IIIF Image API 3.0 (``/iiif``) for every slide.

Opening a slide (its ``.dzi`` or ``info.json``) asks the access policy and is audited (DICOM *Instances
Accessed*). Each tile asks again, but through a per-session grant cached for ``tiles_grant_seconds``, and is not
audited. Tiles carry an ETag (the slide's pyramid version and the tile's address) and answer ``304`` to a
matching ``If-None-Match``; tiles of a converted pyramid never change and are marked immutable, tiles read from the
source while the conversion runs are revalidated (the ETag changes when the slide switches).
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from archipel.platform import access, access_facts, audit
from archipel.platform.authn import Principal
from archipel.platform.http import PrincipalDep, RuntimeDep, guard
from archipel.platform.runtime import Runtime, get_runtime
from archipel.tiles import hooks, iiif, render, signed
from archipel.tiles.cache import CachedTile
from archipel.tiles.fastpath import answer, tile_principal
from archipel.tiles.pyramid import Pyramid, Size
from archipel.tiles.service import (
    IMMUTABLE,
    REVALIDATE,
    TileService,
    grant_key,
    matches,
    service,
    tile_etag,
    tile_key,
)
from archipel.tiles.views import SlideRef, SlideUnavailable

log = logging.getLogger("archipel.tiles")

router = APIRouter(tags=["tiles"])


def _view(rt: Runtime, slide_id: str) -> tuple[SlideRef, Pyramid]:
    try:
        found = service(rt).views.get(rt, slide_id)
    except SlideUnavailable as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, f"slide {slide_id}: {exc.reason}") from exc
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no slide {slide_id}")
    return found


def _open(rt: Runtime, principal: Principal, slide_id: str, request: Request) -> tuple[SlideRef, Pyramid]:
    """The slide for an open: the policy is asked and the decision audited; a grant is cached for its tiles."""
    ref, pyramid = _view(rt, slide_id)
    guard(rt, principal, access.READ, ref.resource, event_type=audit.INSTANCES_ACCESSED, request=request)
    service(rt).grants.put(grant_key(principal, slide_id), True)
    hooks.slide_opened(rt, principal, slide_id)
    return ref, pyramid


def _tile_access(
    rt: Runtime, principal: Principal, slide_id: str, request: Request
) -> tuple[SlideRef, Pyramid]:
    """The slide for a tile: the cached grant, else the policy (a refusal is audited once, then cached too)."""
    ref, pyramid = _view(rt, slide_id)
    grants = service(rt).grants
    key = grant_key(principal, slide_id)
    cached = grants.get(key)
    if cached is None:
        resource, facts = access_facts.load(rt.db, principal, ref.resource)
        decision = access.allow(principal, access.READ, resource, facts)
        if not decision.allowed:
            try:  # audits the refusal
                guard(
                    rt,
                    principal,
                    access.READ,
                    resource,
                    event_type=audit.INSTANCES_ACCESSED,
                    request=request,
                    facts=facts,
                )
            finally:
                grants.put(key, False, decision.reason)
        grants.put(key, True)
        cached = (True, "")
    if not cached[0]:
        raise HTTPException(status.HTTP_403_FORBIDDEN, cached[1])
    return ref, pyramid


def _send(
    svc: TileService, request: Request, ref: SlideRef, etag: str, produce: Any, key: tuple[Any, ...]
) -> Response:
    """Answer 304 when the client holds ``etag``, else the cached or freshly produced image."""
    headers = {"ETag": etag, "Cache-Control": IMMUTABLE if ref.final else REVALIDATE}
    if matches(request, etag):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    item = svc.tiles.get(key)
    headers["X-Tile-Cache"] = "hit" if item is not None else "miss"
    if item is None:
        rendered: render.RenderedTile = produce()
        if rendered.passed_through:
            svc.passed_through += 1
        else:
            svc.encoded += 1
        item = CachedTile(
            rendered.data, rendered.media_type, "stored" if rendered.passed_through else "encoded"
        )
        svc.tiles.put(key, item)
    headers["X-Tile-Source"] = item.origin
    return Response(item.data, media_type=item.media_type, headers=headers)


@router.get("/tiles/{slide_id}.dzi", response_class=Response)
def dzi(slide_id: str, request: Request, rt: RuntimeDep, principal: PrincipalDep) -> Response:
    """The slide's Deep Zoom descriptor (tile size, no overlap, JPEG, full size); opening a slide is audited."""
    _, pyramid = _open(rt, principal, slide_id, request)
    return Response(
        render.deep_zoom(pyramid).xml(), media_type="application/xml", headers={"Cache-Control": "no-store"}
    )


def _tile(
    rt: Runtime, principal: Principal, slide_id: str, level: int, col: int, row: int, request: Request
) -> Response:
    ref, pyramid = _tile_access(rt, principal, slide_id, request)
    dz = render.deep_zoom(pyramid)
    if not 0 <= level <= dz.max_level:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"level {level} is outside 0-{dz.max_level}")
    grid = dz.grid(level)
    if not (0 <= col < grid.width and 0 <= row < grid.height):
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"tile {col}_{row} is outside level {level}'s {grid.width}x{grid.height} grid",
        )
    etag = tile_etag(ref, level, col, row)
    return _send(
        service(rt),
        request,
        ref,
        etag,
        lambda: render.dzi_tile(pyramid, dz, level, col, row),
        tile_key(slide_id, ref, level, col, row),
    )


@router.get("/tiles/{slide_id}_files/{level:int}/{col:int}_{row:int}.jpeg", response_class=Response)
async def dzi_tile(
    slide_id: str,
    level: int,
    col: int,
    row: int,
    request: Request,
    principal: Annotated[Principal, Depends(tile_principal)],
) -> Response:
    """One Deep Zoom tile: the stored JPEG tile when the level and tile grid match, else rendered. For an open
    slide and a granted session, a cached or stored tile is answered on the event loop
    (:func:`archipel.tiles.fastpath.answer`); anything else (the policy, the database, encoding) runs in the
    thread pool."""
    rt = get_runtime()
    found = answer(rt, principal, slide_id, level, col, row, request)
    if found is not None:
        return found
    return await run_in_threadpool(_tile, rt, principal, slide_id, level, col, row, request)


@router.get("/tiles/{slide_id}/signed-url")
def signed_url(slide_id: str, request: Request, rt: RuntimeDep, principal: PrincipalDep) -> JSONResponse:
    """Signed, short-lived addresses of the slide's exported tiles, served by nginx without asking Python
    (docs/tiles.md, "Signed tiles"). Opening a slide this way is audited like ``.dzi``. 501 when no signing key
    is configured, 409 when the slide has no export of its current pyramid (``archipel tiles export``)."""
    settings = rt.settings
    if not settings.tiles_signing_key:
        raise HTTPException(
            status.HTTP_501_NOT_IMPLEMENTED, "signed tile URLs are off: no ARCHIPEL_TILES_SIGNING_KEY is set"
        )
    ref, _ = _open(rt, principal, slide_id, request)
    root = signed.export_root(settings.data_dir, settings.tiles_export_dir)
    exported = signed.exported_version(root, slide_id)
    if exported != ref.version:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"slide {slide_id} has no static export of its current pyramid"
            + (f" (the export is of {exported}, the slide is now {ref.version})" if exported else "")
            + f"; use /tiles/{slide_id}.dzi",
        )
    expires = int(time.time()) + settings.tiles_signed_seconds
    urls = signed.sign(settings.tiles_signed_prefix, settings.tiles_signing_key, slide_id, expires)
    log.info("event=tiles_signed slide=%s expires=%d", slide_id, expires)
    return JSONResponse(
        {"dzi": urls.dzi, "tiles": urls.tiles, "expires": urls.expires}, headers={"Cache-Control": "no-store"}
    )


@router.get("/iiif/{slide_id}", include_in_schema=False)
def iiif_base(slide_id: str) -> RedirectResponse:
    """The image's base URI redirects to its ``info.json``, as the IIIF Image API asks."""
    return RedirectResponse(f"/iiif/{slide_id}/info.json", status_code=status.HTTP_303_SEE_OTHER)


@router.get("/iiif/{slide_id}/info.json")
def iiif_info(slide_id: str, request: Request, rt: RuntimeDep, principal: PrincipalDep) -> JSONResponse:
    """The IIIF Image 3.0 description of the slide (size, tiles, scale factors); opening a slide is audited."""
    _, pyramid = _open(rt, principal, slide_id, request)
    service_id = str(request.url_for("iiif_base", slide_id=slide_id))
    body: dict[str, Any] = iiif.info(service_id, render.deep_zoom(pyramid))
    return JSONResponse(
        body,
        media_type='application/ld+json;profile="http://iiif.io/api/image/3/context.json"',
        headers={"Cache-Control": "no-store"},
    )


def _iiif_image(pyramid: Pyramid, req: iiif.ImageRequest) -> render.RenderedTile:
    reg, out = req.region, req.size
    if req.format == "jpg" and req.quality != "gray":
        # A request for exactly one stored tile (what tiled viewers send) is the fast path.
        tile = render.deep_zoom(pyramid).tile
        scale = reg.width / out.width
        level = render.stored_level(pyramid, scale) if scale.is_integer() else None
        if level is not None and out == Size(tile, tile) and reg.width == reg.height == tile * scale:
            x, y = reg.x / scale, reg.y / scale
            if x.is_integer() and y.is_integer():
                data = render.passthrough(pyramid, level, int(x), int(y), tile)
                if data is not None:
                    return render.RenderedTile(data, "image/jpeg", True)
    pixels = render.read_scaled(pyramid, reg.x, reg.y, reg.width, reg.height, out)
    return render.encode_image(pixels, req.format, grey=req.quality == "gray")


@router.get("/iiif/{slide_id}/{region}/{size}/{rotation}/{quality_format}", response_class=Response)
def iiif_image(
    slide_id: str,
    region: str,
    size: str,
    rotation: str,
    quality_format: str,
    request: Request,
    rt: RuntimeDep,
    principal: PrincipalDep,
) -> Response:
    """An IIIF Image 3.0 image request: region (full, square, x,y,w,h, pct:), size (max, w,, ,h, w,h, !w,h,
    pct:n, with ^), rotation 0, quality default/color/gray, format jpg/png. 400 for a malformed request, 501 for
    a valid one this server does not do."""
    ref, pyramid = _tile_access(rt, principal, slide_id, request)
    base = pyramid.levels[0].size
    try:
        req = iiif.parse_request(region, size, rotation, quality_format, base)
    except iiif.IiifNotImplemented as exc:
        raise HTTPException(status.HTTP_501_NOT_IMPLEMENTED, str(exc)) from exc
    except iiif.IiifBadRequest as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
    canonical = f"{req.region}/{req.size.width},{req.size.height}/{req.quality}.{req.format}"
    digest = hashlib.sha1(canonical.encode(), usedforsecurity=False).hexdigest()[:16]
    return _send(
        service(rt),
        request,
        ref,
        f'"{ref.version}-iiif-{digest}"',
        lambda: _iiif_image(pyramid, req),
        (slide_id, ref.version, "iiif", canonical),
    )
