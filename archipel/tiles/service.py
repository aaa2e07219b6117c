"""The tile service's per-process state (open pyramids, encoded tiles, access grants, recently verified
credentials) and the keys and header rules that the route and its in-memory fast path share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from archipel.platform.authn import Principal
from archipel.platform.runtime import Runtime
from archipel.tiles.cache import ByteLRU, GrantCache, RecentPrincipals
from archipel.tiles.views import SlideRef, ViewCache

#: Tiles of a converted pyramid never change; ``private``: a shared cache must not hand patient pixels around.
IMMUTABLE = "private, max-age=31536000, immutable"
#: Tiles read from the source while the conversion runs: revalidated, so that the switch is seen.
REVALIDATE = "private, no-cache"


@dataclass
class TileService:
    """The per-process state of the tile service: open pyramids, encoded tiles, access grants, and the
    credentials verified a moment ago."""

    views: ViewCache
    tiles: ByteLRU
    grants: GrantCache
    principals: RecentPrincipals = field(default_factory=RecentPrincipals)
    passed_through: int = 0
    encoded: int = 0
    runtime_id: int = field(default=0, repr=False)


_service: TileService | None = None


def service(rt: Runtime) -> TileService:
    """The tile service of this process's runtime (made anew when the runtime is replaced, as tests do)."""
    global _service
    if _service is None or _service.runtime_id != id(rt):
        if _service is not None:
            _service.views.clear()
        _service = TileService(
            ViewCache(),
            ByteLRU(rt.settings.tiles_cache_mb << 20),
            GrantCache(rt.settings.tiles_grant_seconds),
            runtime_id=id(rt),
        )
    return _service


def grant_key(principal: Principal, slide_id: str) -> tuple[str, ...]:
    """The key of a cached access decision: one per principal, session, role, site and slide."""
    return (principal.kind, principal.subject, principal.session, principal.role, principal.site, slide_id)


def tile_key(slide_id: str, ref: SlideRef, level: int, col: int, row: int) -> tuple[Any, ...]:
    """The cache key of a Deep Zoom tile of the pyramid ``ref`` names."""
    return (slide_id, ref.version, "dzi", level, col, row)


def tile_etag(ref: SlideRef, level: int, col: int, row: int) -> str:
    """A Deep Zoom tile's ETag: the pyramid version and the tile's address."""
    return f'"{ref.version}-{level}-{col}-{row}"'


def matches(request: Request, etag: str) -> bool:
    """Whether the request's ``If-None-Match`` names ``etag`` (or ``*``)."""
    return tags_match(request.headers.get("if-none-match", ""), etag)


def tags_match(if_none_match: str, etag: str) -> bool:
    """Whether an ``If-None-Match`` header's value names ``etag`` (or ``*``); weak tags compare equal."""
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags
