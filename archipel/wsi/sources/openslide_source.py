"""Every other vendor format through OpenSlide 4 (NDPI, MRXS, Philips TIFF, Ventana BIF, Leica SCN, DICOM...).

OpenSlide gives decoded pixels only, so tiles never pass through from here: writers re-encode them. OpenSlide
objects are safe to read from several threads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import openslide

from archipel.tiles.codecs import WHITE
from archipel.tiles.pyramid import Codec, Level, Size
from archipel.wsi.sources.base import AssociatedImage, AssociatedKind, SlideError, SlideSource

_FORMAT_NAMES = {
    "aperio": "Aperio SVS",
    "hamamatsu": "Hamamatsu NDPI/VMS",
    "mirax": "3DHISTECH MRXS",
    "philips": "Philips TIFF",
    "ventana": "Ventana BIF",
    "leica": "Leica SCN",
    "sakura": "Sakura SVSlide",
    "trestle": "Trestle TIFF",
    "generic-tiff": "generic tiled TIFF",
    "dicom": "DICOM WSI",
    "zeiss": "Zeiss CZI",
}
_DEFAULT_TILE = 512
_ASSOCIATED = {
    "label": AssociatedKind.LABEL,
    "macro": AssociatedKind.MACRO,
    "thumbnail": AssociatedKind.THUMBNAIL,
}


def over_white(rgba: np.ndarray) -> np.ndarray:
    """Composite OpenSlide's premultiplied RGBA over white: transparent areas (no tissue scanned) become white."""
    rgb = rgba[..., :3].astype(np.uint16)
    alpha = rgba[..., 3:4].astype(np.uint16)
    return (rgb + (WHITE * (255 - alpha) + 127) // 255).clip(0, 255).astype(np.uint8)


class OpenSlideSource(SlideSource):
    """A slide read through OpenSlide; tiles are ``tile`` x ``tile`` regions of each level."""

    def __init__(self, path: Path, tile: int | None = None) -> None:
        self.path = path
        try:
            self._slide = openslide.OpenSlide(str(path))
        except openslide.OpenSlideError as exc:
            raise SlideError(f"corrupt slide: OpenSlide cannot read it: {exc}", path.name) from exc
        props = self._slide.properties
        self.vendor = props.get(openslide.PROPERTY_NAME_VENDOR, "unknown")
        self.format_name = _FORMAT_NAMES.get(self.vendor, self.vendor)
        if self._slide.level_count == 0:
            raise SlideError("no tissue levels", path.name)
        base_w = self._slide.dimensions[0]
        levels = []
        for i, (w, h) in enumerate(self._slide.level_dimensions):
            tw = int(props.get(f"openslide.level[{i}].tile-width", 0)) or tile or _DEFAULT_TILE
            th = int(props.get(f"openslide.level[{i}].tile-height", 0)) or tile or _DEFAULT_TILE
            if tile:
                tw = th = tile
            levels.append(Level(i, Size(w, h), Size(tw, th), base_w / w, Codec.OTHER, "RGB"))
        self._levels = tuple(levels)

    @property
    def levels(self) -> Sequence[Level]:
        return self._levels

    @property
    def mpp(self) -> tuple[float, float] | None:
        props = self._slide.properties
        try:
            x = float(props[openslide.PROPERTY_NAME_MPP_X])
            y = float(props[openslide.PROPERTY_NAME_MPP_Y])
        except (KeyError, ValueError):
            return None
        return (x, y) if x > 0 and y > 0 else None

    @property
    def objective_power(self) -> float | None:
        try:
            return float(self._slide.properties[openslide.PROPERTY_NAME_OBJECTIVE_POWER])
        except (KeyError, ValueError):
            return None

    @property
    def properties(self) -> Mapping[str, str]:
        return dict(self._slide.properties)

    @property
    def associated(self) -> Mapping[AssociatedKind, AssociatedImage]:
        found: dict[AssociatedKind, AssociatedImage] = {}
        for name, image in self._slide.associated_images.items():
            kind = _ASSOCIATED.get(name)
            if kind is None:
                continue

            def read(name: str = name) -> np.ndarray:
                return over_white(np.asarray(self._slide.associated_images[name].convert("RGBA")))

            found[kind] = AssociatedImage(kind, Size(*image.size), Codec.OTHER, read)
        return found

    def read_tile(self, level: int, col: int, row: int) -> np.ndarray:
        lv = self._check_tile(level, col, row)
        # read_region takes level-0 coordinates for the top-left corner.
        x = round(col * lv.tile.width * lv.downsample)
        y = round(row * lv.tile.height * lv.downsample)
        try:
            region = self._slide.read_region((x, y), level, (lv.tile.width, lv.tile.height))
        except openslide.OpenSlideError as exc:
            raise SlideError(
                f"corrupt tile: level {level} tile ({col}, {row}): {exc}", self.path.name
            ) from exc
        pixels = over_white(np.asarray(region))
        # OpenSlide is transparent beyond the level's edge already; whiten exactly the padding anyway.
        vw, vh = lv.size.width - col * lv.tile.width, lv.size.height - row * lv.tile.height
        if vw < lv.tile.width:
            pixels[:, vw:] = WHITE
        if vh < lv.tile.height:
            pixels[vh:, :] = WHITE
        return pixels

    def close(self) -> None:
        self._slide.close()
