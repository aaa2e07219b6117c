"""IIIF Image API 3.0 (compliance level 1, plus the cheap parts of level 2): the parameters of an image request,
parsed and checked against the image, and the ``info.json`` document.

Errors follow the specification: a parameter that does not parse, or asks for an empty or out-of-image region,
is :class:`IiifBadRequest` (HTTP 400); a well-formed request for something this server does not do (a rotation
other than 0, a mirror, the ``bitonal`` quality, a format other than jpg/png) is :class:`IiifNotImplemented` (501).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from archipel.tiles.pyramid import Size
from archipel.tiles.render import DeepZoom

#: Largest output width and height (pixels): the cap announced as ``maxWidth`` / ``maxHeight``.
MAX_SIDE = 4096
FORMATS = {"jpg": "image/jpeg", "png": "image/png"}
_KNOWN_FORMATS = {"jpg", "png", "tif", "gif", "pdf", "jp2", "webp"}
_QUALITIES = ("default", "color", "gray")
_NUMBER = r"\d+(?:\.\d+)?"


class IiifBadRequest(ValueError):
    """The request is malformed or asks for pixels outside the image (HTTP 400)."""


class IiifNotImplemented(ValueError):
    """A valid request for a feature this server does not support (HTTP 501)."""


@dataclass(frozen=True)
class Region:
    """A rectangle of the full-resolution image, clipped to it."""

    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class ImageRequest:
    """A parsed, checked image request: the region, the output size, the quality and the format."""

    region: Region
    size: Size
    quality: str
    format: str


def parse_region(text: str, full: Size) -> Region:
    """``full``, ``square``, ``x,y,w,h`` or ``pct:x,y,w,h``, clipped to the image."""
    w, h = full.width, full.height
    if text == "full":
        return Region(0, 0, w, h)
    if text == "square":
        side = min(w, h)
        return Region((w - side) // 2, (h - side) // 2, side, side)
    pct = text.startswith("pct:")
    body = text[4:] if pct else text
    pattern = rf"({_NUMBER}),({_NUMBER}),({_NUMBER}),({_NUMBER})" if pct else r"(\d+),(\d+),(\d+),(\d+)"
    match = re.fullmatch(pattern, body)
    if match is None:
        raise IiifBadRequest(
            f"region {text!r} is not full, square, x,y,w,h (integers) or pct:x,y,w,h (numbers)"
        )
    x, y, rw, rh = (float(v) for v in match.groups())
    if pct:
        x, y, rw, rh = x * w / 100, y * h / 100, rw * w / 100, rh * h / 100
    if rw <= 0 or rh <= 0:
        raise IiifBadRequest(f"region {text!r} has a zero width or height")
    if x >= w or y >= h:
        raise IiifBadRequest(f"region {text!r} starts outside the {w}x{h} image")
    return Region(x, y, min(rw, w - x), min(rh, h - y))


def parse_size(text: str, region: Region) -> Size:
    """``max``, ``w,``, ``,h``, ``w,h``, ``!w,h`` or ``pct:n``, each optionally ``^``-prefixed to allow
    enlarging the region; the result must fit within :data:`MAX_SIDE`."""
    upscale = text.startswith("^")
    body = text[1:] if upscale else text
    rw, rh = region.width, region.height
    if body == "max":
        scale = min(1.0 if not upscale else math.inf, MAX_SIDE / rw, MAX_SIDE / rh)
        out = Size(max(1, round(rw * scale)), max(1, round(rh * scale)))
    elif body.startswith("pct:"):
        match = re.fullmatch(_NUMBER, body[4:])
        if match is None or float(body[4:]) <= 0:
            raise IiifBadRequest(f"size {text!r}: pct:n needs a positive number")
        n = float(body[4:])
        if n > 100 and not upscale:
            raise IiifBadRequest(f"size {text!r} enlarges the region; write ^pct:{body[4:]} to allow it")
        out = Size(max(1, round(rw * n / 100)), max(1, round(rh * n / 100)))
    else:
        match = re.fullmatch(r"(!?)(\d*),(\d*)", body)
        if match is None:
            raise IiifBadRequest(f"size {text!r} is not max, w,, ,h, w,h, !w,h or pct:n")
        bang, sw, sh = match.groups()
        if (bang and not (sw and sh)) or not (sw or sh):
            raise IiifBadRequest(f"size {text!r} gives neither width nor height")
        if (sw and int(sw) == 0) or (sh and int(sh) == 0):
            raise IiifBadRequest(f"size {text!r} has a zero width or height")
        if bang:
            scale = min(int(sw) / rw, int(sh) / rh)
            out = Size(max(1, round(rw * scale)), max(1, round(rh * scale)))
        elif sw and sh:
            out = Size(int(sw), int(sh))
        elif sw:
            out = Size(int(sw), max(1, round(rh * int(sw) / rw)))
        else:
            out = Size(max(1, round(rw * int(sh) / rh)), int(sh))
    if not upscale and (out.width > math.ceil(rw) or out.height > math.ceil(rh)):
        raise IiifBadRequest(
            f"size {text!r} ({out.width}x{out.height}) is larger than the region "
            f"({math.ceil(rw)}x{math.ceil(rh)}); prefix it with ^ to allow enlarging"
        )
    if out.width > MAX_SIDE or out.height > MAX_SIDE:
        raise IiifBadRequest(f"size {text!r} ({out.width}x{out.height}) exceeds the {MAX_SIDE}px limit")
    return out


def parse_rotation(text: str) -> None:
    """Only ``0`` is done here; other valid rotations and mirroring are not implemented."""
    if re.fullmatch(rf"!?{_NUMBER}", text) is None or float(text.lstrip("!")) > 360:
        raise IiifBadRequest(f"rotation {text!r} is not a number from 0 to 360, optionally prefixed with !")
    if text.startswith("!") or float(text) not in (0.0, 360.0):
        raise IiifNotImplemented(f"rotation {text!r} is not supported; only 0 is")


def parse_request(region: str, size: str, rotation: str, quality_format: str, full: Size) -> ImageRequest:
    """Parse and check the four path parameters of an image request (``quality.format`` is the last one)."""
    quality, dot, fmt = quality_format.rpartition(".")
    if not dot or not quality:
        raise IiifBadRequest(f"{quality_format!r} is not quality.format (e.g. default.jpg)")
    if quality not in (*_QUALITIES, "bitonal"):
        raise IiifBadRequest(f"quality {quality!r} is not default, color, gray or bitonal")
    if quality == "bitonal":
        raise IiifNotImplemented("quality 'bitonal' is not supported")
    if fmt not in _KNOWN_FORMATS:
        raise IiifBadRequest(f"format {fmt!r} is unknown; use jpg or png")
    if fmt not in FORMATS:
        raise IiifNotImplemented(f"format {fmt!r} is not supported; use jpg or png")
    parse_rotation(rotation)
    reg = parse_region(region, full)
    return ImageRequest(reg, parse_size(size, reg), quality, fmt)


def info(service_id: str, dz: DeepZoom) -> dict[str, Any]:
    """The ``info.json`` of an image of Deep Zoom geometry ``dz``: tiles of ``dz.tile`` at every power-of-two
    scale down to one tile, and a few whole-image sizes for thumbnails."""
    factors = [2**k for k in range(dz.max_level + 1) if 2**k <= 2 * max(dz.width, dz.height) / dz.tile]
    sizes = []
    for k in range(dz.max_level + 1):
        s = dz.level_size(dz.max_level - k)
        if max(s.width, s.height) <= 2048:
            sizes.append({"width": s.width, "height": s.height})
    sizes.sort(key=lambda item: item["width"])
    return {
        "@context": "http://iiif.io/api/image/3/context.json",
        "id": service_id,
        "type": "ImageService3",
        "protocol": "http://iiif.io/api/image",
        "profile": "level1",
        "width": dz.width,
        "height": dz.height,
        "maxWidth": MAX_SIDE,
        "maxHeight": MAX_SIDE,
        "tiles": [{"width": dz.tile, "height": dz.tile, "scaleFactors": factors or [1]}],
        "sizes": sizes[-6:],
        "extraQualities": ["color", "gray"],
        "extraFeatures": ["regionSquare", "sizeByPct", "sizeByConfinedWh", "sizeUpscaling"],
    }
