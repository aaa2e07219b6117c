"""The tile route's fast path: who asks (a credential verified a moment ago), and a Deep Zoom tile answered without
the thread pool, or even ahead of the framework, when everything it needs is at hand.

Profiled under load (docs/performance.md, "Tile service"), a cached tile cost about 0.1 ms of our code and ten
times that in the framework (route matching, dependency solving, the thread-pool hops, and the bearer token's
full check: signature, then the session row in the database). So:

- :func:`tile_principal` remembers for a couple of seconds who a credential (bearer token or session cookie) is,
  once it passed :func:`~archipel.platform.credentials.current_principal`'s full check;
- :func:`reply` gives a tile from memory (the LRU, or a matching ETag) or reads a stored JPEG tile as it is (one
  small file read, no decode), provided the slide's view is fresh and the session's grant is cached and allowed:
  the same checks as the route's, so both give the same bytes, headers and refusals;
- :func:`answered_ahead`, called by the application before anything else (``ArchipelApp.__call__``), calls
  :func:`reply` for a credential in that short memory, and sends the answer as two raw ASGI messages. Anything
  else (a first request, a refusal, which the route audits, a tile to encode, a test's override of
  ``current_principal``) goes on to the application.

Under a steady stream of tiles, the credential, the grant and the slide's description are each checked again in
the background after half of their period (:class:`~archipel.tiles.cache.FreshMap`), one thread-pool call at a
time, rather than found expired by every tile in flight at once: that pile-up (dozens of full checks together
every couple of seconds) was what made the route's p99 fifteen times its p50 under 32 connections.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, status
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request, cookie_parser
from starlette.responses import Response
from starlette.types import Scope, Send

from archipel.platform import access, access_facts
from archipel.platform.authn import Principal
from archipel.platform.credentials import cookie_names, current_principal
from archipel.platform.runtime import Runtime, get_runtime
from archipel.tiles import render
from archipel.tiles.cache import CachedTile
from archipel.tiles.service import (
    IMMUTABLE,
    REVALIDATE,
    TileService,
    grant_key,
    service,
    tags_match,
    tile_etag,
    tile_key,
)
from archipel.tiles.views import SlideRef

log = logging.getLogger("archipel.tiles")

TILE_PATH = re.compile(
    r"^/tiles/(?P<slide>[^/]+)_files/(?P<level>[0-9]+)/(?P<col>[0-9]+)_(?P<row>[0-9]+)\.jpeg$"
)

Headers = list[tuple[bytes, bytes]]
_IMMUTABLE, _REVALIDATE = IMMUTABLE.encode(), REVALIDATE.encode()
_HIT, _MISS = b"hit", b"miss"

#: Background re-checks in flight, held so that the loop does not drop them before they end.
_background: set[asyncio.Task[None]] = set()


def _in_background(make: Callable[[], Coroutine[Any, Any, None]]) -> None:
    task = asyncio.get_running_loop().create_task(make())
    _background.add(task)
    task.add_done_callback(_background.discard)


def credential(request: Request, rt: Runtime) -> tuple[str, str] | None:
    """What the request authenticates with: ``("bearer", token)``, ``("cookie", session)`` or ``None``."""
    return _credential(
        request.headers.get("authorization", ""),
        request.headers.get("cookie", ""),
        cookie_names(rt.settings)[0],
    )


def _credential(authorization: str, cookies: str, cookie_name: str) -> tuple[str, str] | None:
    if authorization[:7].lower() == "bearer " and authorization[7:].strip():
        return ("bearer", authorization[7:].strip())
    cookie = cookie_parser(cookies).get(cookie_name) if cookies else None
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


async def _verify_again(rt: Runtime, scope: Scope, key: tuple[str, str]) -> None:
    """The credential's full check again, ahead of its memory's end: remembered anew, or forgotten (then the
    next tile goes through the route, which refuses and audits it)."""
    recent = service(rt).principals
    token = key[1] if key[0] == "bearer" else None
    try:
        who = await run_in_threadpool(current_principal, Request(scope), rt, token)
    except HTTPException:
        recent.drop(key)
        return
    except Exception:
        recent.drop(key)
        log.exception("event=tile_credential_recheck_failed")
        return
    recent.put(key, who)


async def _grant_again(rt: Runtime, principal: Principal, slide_id: str, ref: SlideRef) -> None:
    """The access policy asked again for a cached grant, ahead of its end: kept when still allowed, else
    forgotten, so that the next tile goes through the route (which audits the refusal and caches it)."""
    grants = service(rt).grants
    key = grant_key(principal, slide_id)

    def ask() -> bool:
        resource, facts = access_facts.load(rt.db, principal, ref.resource)
        return access.allow(principal, access.READ, resource, facts).allowed

    try:
        allowed = await run_in_threadpool(ask)
    except Exception:
        grants.drop(key)
        log.exception("event=tile_grant_recheck_failed slide=%s", slide_id)
        return
    if allowed:
        grants.put(key, True)
    else:
        grants.drop(key)


async def _describe_again(rt: Runtime, slide_id: str) -> None:
    """The slide described again (a switch to its converted pyramid, or its deletion) ahead of its view's end."""
    try:
        await run_in_threadpool(lambda: service(rt).views.get(rt, slide_id, refresh=True))
    except Exception:  # the view ends in its time and the route then reports what is wrong
        log.exception("event=tile_view_recheck_failed slide=%s", slide_id)


def reply(
    rt: Runtime,
    principal: Principal,
    slide_id: str,
    level: int,
    col: int,
    row: int,
    if_none_match: str,
) -> tuple[int, Headers, bytes] | None:
    """The answer to a Deep Zoom tile (status, raw headers, body) when the slide's view is fresh and the
    session's grant cached: from the tile cache, a 304 for a matching ETag, or the stored JPEG tile read as it is
    (interior tiles of a stored level). ``None`` when the route's full path must run (the policy, the database, a
    tile to encode); 403 for a cached refusal. Must run on the event loop (it may start background re-checks):
    no database, at most one small file read."""
    svc = service(rt)
    found, view_due = svc.views.peek_due(slide_id)
    if found is None:
        return None
    ref, pyramid = found
    if view_due:
        _in_background(lambda: _describe_again(rt, slide_id))
    grant, grant_due = svc.grants.decision(grant_key(principal, slide_id))
    if grant is None:
        return None
    if not grant[0]:
        raise HTTPException(status.HTTP_403_FORBIDDEN, grant[1])
    if grant_due:
        _in_background(lambda: _grant_again(rt, principal, slide_id, ref))
    etag = tile_etag(ref, level, col, row)
    common = [(b"etag", etag.encode()), (b"cache-control", _IMMUTABLE if ref.final else _REVALIDATE)]
    if if_none_match and tags_match(if_none_match, etag):
        return status.HTTP_304_NOT_MODIFIED, common, b""
    item = _tile(svc, pyramid, slide_id, ref, level, col, row)
    if item is None:
        return None
    data, hit = item
    head = [
        (b"content-length", str(len(data.data)).encode()),
        (b"content-type", data.media_type.encode()),
        *common,
        (b"x-tile-cache", _HIT if hit else _MISS),
        (b"x-tile-source", data.origin.encode()),
    ]
    return status.HTTP_200_OK, head, data.data


def _tile(
    svc: TileService, pyramid: Any, slide_id: str, ref: SlideRef, level: int, col: int, row: int
) -> tuple[CachedTile, bool] | None:
    """The cached tile (and ``True``), or the stored tile read now and cached (and ``False``); ``None`` for a
    tile the route must make (an edge tile, outside the grid, not stored as JPEG)."""
    key = tile_key(slide_id, ref, level, col, row)
    item = svc.tiles.get(key)
    if item is not None:
        return item, True
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
    return item, False


def answer(
    rt: Runtime, principal: Principal, slide_id: str, level: int, col: int, row: int, request: Request
) -> Response | None:
    """:func:`reply` as a response, for the route."""
    found = reply(rt, principal, slide_id, level, col, row, request.headers.get("if-none-match", ""))
    if found is None:
        return None
    code, head, body = found
    response = Response(body, status_code=code)
    response.raw_headers = head
    return response


async def answered_ahead(scope: Scope, send: Send) -> bool:
    """Answer a Deep Zoom tile of a recently verified credential before the application (its routing, its
    middleware, its telemetry) when :func:`reply` can, as two raw ASGI messages with the route's status, headers
    and body; ``False`` when the application must answer."""
    if scope["type"] != "http" or scope["method"] != "GET" or not scope["path"].startswith("/tiles/"):
        return False
    found = TILE_PATH.match(scope["path"])
    if found is None:
        return False
    answered = _ahead(scope, found)
    if answered is None:
        return False
    code, head, body = answered
    await send({"type": "http.response.start", "status": code, "headers": head})
    await send({"type": "http.response.body", "body": body})
    return True


def _ahead(scope: Scope, found: re.Match[str]) -> tuple[int, Headers, bytes] | None:
    rt = get_runtime()
    authorization = cookies = if_none_match = ""
    for name, value in scope["headers"]:
        if name == b"authorization":
            authorization = value.decode("latin-1")
        elif name == b"cookie":
            cookies = value.decode("latin-1")
        elif name == b"if-none-match":
            if_none_match = value.decode("latin-1")
    key = _credential(authorization, cookies, cookie_names(rt.settings)[0])
    if key is None:
        return None
    recent = service(rt).principals
    principal, due = recent.lookup(key)
    if not isinstance(principal, Principal):
        return None
    if due:
        _in_background(lambda: _verify_again(rt, scope, key))
    try:
        return reply(
            rt,
            principal,
            found["slide"],
            int(found["level"]),
            int(found["col"]),
            int(found["row"]),
            if_none_match,
        )
    except HTTPException:
        return None  # a refusal is the route's to answer (and, once per grant period, to audit)
