"""Short-lived signed tile URLs that nginx checks itself (``secure_link``), for a slide exported as static tiles.

After the access check (an audited open), the API hands the viewer a base URL
``{prefix}/{token}/{expires}/{slide}.dzi`` whose ``token`` is nginx's ``secure_link_md5`` of
``"{expires}{slide} {key}"`` (MD5, URL-safe base64, no padding). nginx recomputes it for every tile, refuses a
wrong token (403) or a past ``expires`` (410), and sends the exported file: no Python on the tile path. The grant a
signed URL carries lasts until ``expires``: that bounds how long a revoked relationship can still read tiles, as
the per-session grant cache does for ``/tiles``.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

#: What a slide id may be in a signed URL (the ids Archipel makes are hex): nginx captures it by this pattern.
SLIDE_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
#: File beside an exported tree naming the pyramid version it was made from (a stale export is not signed).
VERSION_SUFFIX = ".version"


def token(key: str, slide_id: str, expires: int) -> str:
    """The ``secure_link_md5 "$expires$slide $key"`` token nginx expects for ``slide_id`` until ``expires``."""
    digest = hashlib.md5(f"{expires}{slide_id} {key}".encode(), usedforsecurity=False).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


@dataclass(frozen=True)
class SignedSlide:
    """A viewer's signed addresses of one slide: its descriptor, its tiles' base, and when they stop working."""

    dzi: str
    tiles: str
    expires: int


def sign(prefix: str, key: str, slide_id: str, expires: int) -> SignedSlide:
    """The signed ``.dzi`` and tile base of ``slide_id`` under ``prefix`` (e.g. ``/static-tiles``), valid until
    ``expires`` (Unix seconds). ``ValueError`` for a slide id nginx's pattern would not capture."""
    if not SLIDE_ID.match(slide_id):
        raise ValueError(f"slide id {slide_id!r} cannot be signed (letters, digits and '-' only)")
    base = f"{prefix.rstrip('/')}/{token(key, slide_id, expires)}/{expires}/{slide_id}"
    return SignedSlide(f"{base}.dzi", f"{base}_files/", expires)


def export_root(data_dir: Path, configured: str) -> Path:
    """The folder exported slides live in: the ``tiles_export_dir`` setting, else ``DATA/tile-exports``."""
    return Path(configured) if configured else data_dir / "tile-exports"


def exported_version(root: Path, slide_id: str) -> str | None:
    """The pyramid version the export of ``slide_id`` under ``root`` was made from; ``None`` when not exported."""
    marker = root / f"{slide_id}{VERSION_SUFFIX}"
    if not (root / f"{slide_id}.dzi").is_file() or not marker.is_file():
        return None
    return marker.read_text().strip()


def nginx_location(prefix: str, key: str, root: Path) -> str:
    """An nginx ``location`` block (for a ``server``) that checks signed tile URLs and sends the exported files
    under ``root``. ``key`` is written into it: keep the file as secret as the key."""
    if not re.fullmatch(r"/[A-Za-z0-9/_-]*", prefix):
        raise ValueError(f"prefix {prefix!r} must be a path of letters, digits, '/', '_' and '-'")
    if any(c in key for c in "\"'\\;${}\n\r\t "):
        raise ValueError("the signing key must not contain quotes, spaces, '$', '{', '}', ';' or backslashes")
    pattern = (
        f"^{prefix.rstrip('/')}/(?<tile_token>[A-Za-z0-9_-]+)/(?<tile_expires>[0-9]+)/"
        r"(?<tile_slide>[A-Za-z0-9-]+)(?<tile_rest>\.dzi|_files/[0-9]+/[0-9]+_[0-9]+\.jpeg)$"
    )
    return f"""# Signed tile URLs of Archipel (archipel tiles nginx-config): nginx checks them, Python is not asked.
location ~ {pattern} {{
    secure_link $tile_token,$tile_expires;
    secure_link_md5 "$tile_expires$tile_slide {key}";
    if ($secure_link = "") {{ return 403; }}
    if ($secure_link = "0") {{ return 410; }}
    alias {root.resolve()}/$tile_slide$tile_rest;
    # Patient pixels: the browser may keep them, a shared cache must not.
    add_header Cache-Control "private, max-age=3600" always;
    types {{ image/jpeg jpeg; application/xml dzi; }}
    access_log off;
}}
"""
