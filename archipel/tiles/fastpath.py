"""The tile route's fast path: who asks (a credential verified a moment ago), and a Deep Zoom tile answered without
the thread pool, or even ahead of the framework, when everything it needs is at hand.

Profiled under load (docs/performance.md, "Tile service"), a cached tile cost about 0.1 ms of our code and ten
times that in the framework (route matching, dependency solving, the thread-pool hops, and the bearer token's
full check: signature, then the session row in the database). So:

- :func:`tile_principal` remembers for a couple of seconds who a credential (bearer token or session cookie) is,
  once it passed :func:`~archipel.platform.credentials.current_principal`'s full check;
- :func:`answer` gives a tile from memory (the LRU, or a matching ETag) or reads a stored JPEG tile as it is (one
  small file read, no decode), provided the slide's view is fresh and the session's grant is cached and allowed:
  the same checks as the route's, so both give the same bytes, headers and refusals;
- :class:`TileFastPath`, an ASGI middleware, calls :func:`answer` before the framework for a credential in that
  short memory. Anything else (a first request, a refusal, which the route audits, a tile to encode, a test's
  override of ``current_principal``) goes on to the application.
"""

from __future__ import annotations

import re

from fastapi import HTTPException, status
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from archipel.platform.authn import Principal
from archipel.platform.credentials import cookie_names, current_principal
from archipel.platform.runtime import Runtime, get_runtime
from archipel.tiles import render
from archipel.tiles.cache import CachedTile
from archipel.tiles.service import IMMUTABLE, REVALIDATE, grant_key, matches, service, tile_etag, tile_key

TILE_PATH = re.compile(
    r"^/tiles/(?P<slide>[^/]+)_files/(?P<level>[0-9]+)/(?P<col>[0-9]+)_(?P<row>[0-9]+)\.jpeg$"
)


def credential(request: Request, rt: Runtime) -> tuple[str, str] | None:
    """What the request authenticates with: ``("bearer", token)``, ``("cookie", session)`` or ``None``."""
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer " and header[7:].strip():
        return ("bearer", header[7:].strip())
    cookie = request.cookies.get(cookie_names(rt.settings)[0])
    return ("cookie", cookie) if cookie else None


async def tile_principal(request: Request) -> Principal:
    """Dependency of the tile route: :func:`current_principal`, remembered for a couple of seconds per
    credential (:class:`~archipel.tiles.cache.RecentPrincipals`). An override of ``current_principal`` (as
    tests install) is honoured."""
    override = request.app.dependency_overrides.get(current_principal)
    if override is not None:
        return override()  # type: ignore[no-any-return]
    rt = get_runtime()
    recent = service(rt).principals
    key = credential(request, rt)
    if key is not None:
        found = recent.get(key)
        if isinstance(found, Principal):
            return found
    token = key[1] if key is not None and key[0] == "bearer" else None
    who: Principal = await run_in_threadpool(current_principal, request, rt, token)
    if key is not None:
        recent.put(key, who)
    return who


def answer(
    rt: Runtime, principal: Principal, slide_id: str, level: int, col: int, row: int, request: Request
) -> Response | None:
    """The answer to a Deep Zoom tile when the slide's view is fresh and the session's grant cached: from the
    tile cache, a 304 for a matching ETag, or the stored JPEG tile read as it is (interior tiles of a stored
    level). ``None`` when the route's full path must run (the policy, the database, a tile to encode); 403 for a
    cached refusal. Safe on the event loop: no database, at most one small file read."""
    svc = service(rt)
    found = svc.views.peek(slide_id)
    if found is None:
        return None
    ref, pyramid = found
    grant = svc.grants.get(grant_key(principal, slide_id))
    if grant is None:
        return None
    if not grant[0]:
        raise HTTPException(status.HTTP_403_FORBIDDEN, grant[1])
    etag = tile_etag(ref, level, col, row)
    headers = {"ETag": etag, "Cache-Control": IMMUTABLE if ref.final else REVALIDATE}
    if matches(request, etag):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    key = tile_key(slide_id, ref, level, col, row)
    item = svc.tiles.get(key)
    headers["X-Tile-Cache"] = "hit" if item is not None else "miss"
    if item is None:
        dz = render.deep_zoom(pyramid)
        if not 0 <= level <= dz.max_level:
            return None
        size, x, y = dz.level_size(level), col * dz.tile, row * dz.tile
        if x + dz.tile > size.width or y + dz.tile > size.height:
            return None  # an edge tile (cropped, encoded) or outside the grid: the route's
        stored = render.stored_level(pyramid, dz.downsample(level))
        data = render.passthrough(pyramid, stored, x, y, dz.tile) if stored is not None else None
        if data is None:
            return None
        item = CachedTile(data, "image/jpeg", "stored")
        svc.tiles.put(key, item)
        svc.passed_through += 1
    headers["X-Tile-Source"] = item.origin
    return Response(item.data, media_type=item.media_type, headers=headers)


class TileFastPath:
    """ASGI middleware: Deep Zoom tiles of recently verified credentials, answered before the framework."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            found = TILE_PATH.match(scope["path"])
            if found is not None:
                response = _ahead(Request(scope), found)
                if response is not None:
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def _ahead(request: Request, found: re.Match[str]) -> Response | None:
    rt = get_runtime()
    key = credential(request, rt)
    if key is None:
        return None
    principal = service(rt).principals.get(key)
    if not isinstance(principal, Principal):
        return None
    try:
        return answer(
            rt, principal, found["slide"], int(found["level"]), int(found["col"]), int(found["row"]), request
        )
    except HTTPException:
        return None  # a refusal is the route's to answer (and, once per grant period, to audit)
