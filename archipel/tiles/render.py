"""Produce viewer tiles from a pyramid: the Deep Zoom geometry, stored levels matched to requested scales, and
the fast path that sends a stored JPEG tile as it is.

A request asks for a rectangle of the full-resolution image at some scale. When a stored level has that scale,
its tile grid matches the requested one, its tiles are JPEG and the tile lies wholly inside the image, the stored
bytes are the answer (no decode, no encode). Otherwise the rectangle is read from the finest stored level at or
below the requested resolution, scaled with an area average, and encoded.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from archipel.tiles import jpeg
from archipel.tiles.plan import default_tile
from archipel.tiles.pyramid import Codec, Level, Pyramid, Size
from archipel.tiles.region import read_region

#: JPEG quality of tiles the service encodes itself (stored tiles keep theirs).
QUALITY = 90
#: How far (in pixels) a stored level's size may be from the exact ``ceil(full / 2**k)`` and still count as
#: that scale: scanners round their levels' sizes either way.
SIZE_SLACK = 1


@dataclass(frozen=True)
class DeepZoom:
    """The Deep Zoom geometry of a slide: full size and square tile side. Level ``max_level`` is the full
    resolution; each level below halves it (rounding up), down to level 0 of 1x1 pixel."""

    width: int
    height: int
    tile: int

    @property
    def max_level(self) -> int:
        """The full-resolution level's number."""
        return max(0, math.ceil(math.log2(max(self.width, self.height))))

    def downsample(self, level: int) -> int:
        """How many full-resolution pixels one pixel of ``level`` covers, along each axis."""
        return 2 ** (self.max_level - level)

    def level_size(self, level: int) -> Size:
        """The pixel size of ``level``."""
        d = self.downsample(level)
        return Size(math.ceil(self.width / d), math.ceil(self.height / d))

    def grid(self, level: int) -> Size:
        """Columns and rows of tiles of ``level``."""
        return self.level_size(level).tiles(Size(self.tile, self.tile))

    def xml(self) -> str:
        """The ``.dzi`` descriptor."""
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" '
            f'TileSize="{self.tile}" Overlap="0" Format="jpeg">'
            f'<Size Width="{self.width}" Height="{self.height}"/></Image>\n'
        )


def deep_zoom(pyramid: Pyramid) -> DeepZoom:
    """The slide's Deep Zoom geometry. The tile side follows level 0's tiles (the rule conversion uses for the
    levels it writes), so the source and the converted pyramid of a slide give the same geometry."""
    base = pyramid.levels[0]
    return DeepZoom(base.size.width, base.size.height, default_tile(base).width)


def _at_scale(level: Level, full: Size, downsample: int) -> bool:
    want = Size(math.ceil(full.width / downsample), math.ceil(full.height / downsample))
    return (
        abs(level.size.width - want.width) <= SIZE_SLACK
        and abs(level.size.height - want.height) <= SIZE_SLACK
    )


def stored_level(pyramid: Pyramid, downsample: float) -> int | None:
    """The stored level at exactly ``downsample`` (a power of two), when there is one."""
    if downsample != int(downsample) or int(downsample) & (int(downsample) - 1):
        return None
    full = pyramid.levels[0].size
    for lv in pyramid.levels:
        if _at_scale(lv, full, int(downsample)):
            return lv.index
    return None


def source_level(pyramid: Pyramid, downsample: float) -> int:
    """The coarsest stored level that is at least as fine as ``downsample`` (level 0 when none is)."""
    best = 0
    for lv in pyramid.levels:
        if lv.downsample <= downsample * 1.001 and lv.downsample >= pyramid.levels[best].downsample:
            best = lv.index
    return best


def passthrough(pyramid: Pyramid, level: int, x: int, y: int, tile: int) -> bytes | None:
    """The stored JPEG tile of ``level`` at (``x``, ``y``) (that level's pixels) when it is exactly the
    ``tile`` x ``tile`` square asked for, wholly inside the level; else ``None``."""
    lv = pyramid.levels[level]
    if lv.codec is not Codec.JPEG or lv.tile != Size(tile, tile) or x % tile or y % tile:
        return None
    if x + tile > lv.size.width or y + tile > lv.size.height:
        return None  # an edge tile is stored padded; the viewer expects it cropped
    raw = pyramid.read_raw_tile(level, x // tile, y // tile)
    if raw is None or raw.codec is not Codec.JPEG:
        return None
    return raw.data


def read_scaled(pyramid: Pyramid, x: float, y: float, width: float, height: float, out: Size) -> np.ndarray:
    """The full-resolution rectangle (``x``, ``y``, ``width``, ``height``) as ``out`` pixels, read from the
    coarsest stored level still at least as fine as the output, and area-averaged (or, when enlarging,
    bilinearly interpolated) to ``out``."""
    scale = min(width / out.width, height / out.height)
    level = source_level(pyramid, scale)
    lv = pyramid.levels[level]
    sx = lv.size.width / pyramid.levels[0].size.width
    sy = lv.size.height / pyramid.levels[0].size.height
    x0, y0 = math.floor(x * sx), math.floor(y * sy)
    x1 = max(x0 + 1, math.ceil((x + width) * sx))
    y1 = max(y0 + 1, math.ceil((y + height) * sy))
    pixels = read_region(pyramid, level, x0, y0, x1 - x0, y1 - y0)
    if (x1 - x0, y1 - y0) == (out.width, out.height):
        return pixels
    shrinking = out.width <= x1 - x0 and out.height <= y1 - y0
    image = Image.fromarray(pixels).resize(
        (out.width, out.height), Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    )
    return np.asarray(image)


@dataclass(frozen=True)
class RenderedTile:
    """An encoded image and whether it is a stored tile sent unchanged."""

    data: bytes
    media_type: str
    passed_through: bool


def dzi_tile(pyramid: Pyramid, dz: DeepZoom, level: int, col: int, row: int) -> RenderedTile:
    """The JPEG of Deep Zoom tile (``col``, ``row``) of ``level``; ``IndexError`` outside the grid."""
    if not 0 <= level <= dz.max_level:
        raise IndexError(f"level {level} is outside 0-{dz.max_level}")
    grid = dz.grid(level)
    if not (0 <= col < grid.width and 0 <= row < grid.height):
        raise IndexError(f"tile {col}_{row} is outside level {level}'s {grid.width}x{grid.height} grid")
    size = dz.level_size(level)
    x, y = col * dz.tile, row * dz.tile
    out = Size(min(dz.tile, size.width - x), min(dz.tile, size.height - y))
    d = dz.downsample(level)
    stored = stored_level(pyramid, d)
    if stored is not None:
        data = passthrough(pyramid, stored, x, y, dz.tile) if out == Size(dz.tile, dz.tile) else None
        if data is not None:
            return RenderedTile(data, "image/jpeg", True)
        pixels = read_region(pyramid, stored, x, y, out.width, out.height)
    else:
        full = Size(dz.width, dz.height)
        pixels = read_scaled(
            pyramid,
            x * d,
            y * d,
            min(out.width * d, full.width - x * d),
            min(out.height * d, full.height - y * d),
            out,
        )
    return RenderedTile(jpeg.encode(np.ascontiguousarray(pixels), QUALITY), "image/jpeg", False)


def encode_image(pixels: np.ndarray, fmt: str, grey: bool = False) -> RenderedTile:
    """``pixels`` as ``jpg`` or ``png`` (converted to grey when asked)."""
    if grey:
        pixels = np.asarray(Image.fromarray(pixels).convert("L"))
    if fmt == "jpg":
        if grey:
            buf = io.BytesIO()
            Image.fromarray(pixels).save(buf, "JPEG", quality=QUALITY)
            return RenderedTile(buf.getvalue(), "image/jpeg", False)
        return RenderedTile(jpeg.encode(np.ascontiguousarray(pixels), QUALITY), "image/jpeg", False)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG", compress_level=1)
    return RenderedTile(buf.getvalue(), "image/png", False)
