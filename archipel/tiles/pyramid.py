"""The pyramid contract that the tile engine, the writers and the tile service share.

A :class:`Pyramid` is a stack of tiled levels, the full resolution first. It offers each tile two ways:
decoded (``read_tile``, RGB ``uint8``) and, where the source stores it in a codec a target can keep,
compressed (``read_raw_tile``), so that writers pass tiles through without recompressing them.

``tiles`` defines the contract; ``wsi`` provides the implementations (vendor sources, DICOM WSI, OME-Zarr),
so that imports go one way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable

import numpy as np


class Codec(StrEnum):
    """How a stored tile is compressed."""

    JPEG = "jpeg"
    JPEG2000 = "jpeg2000"
    JPEGXL = "jpegxl"
    WEBP = "webp"
    PNG = "png"
    DEFLATE = "deflate"
    LZW = "lzw"
    NONE = "none"
    OTHER = "other"


@dataclass(frozen=True)
class Size:
    """A width and a height, in pixels."""

    width: int
    height: int

    def tiles(self, tile: Size) -> Size:
        """How many tiles of ``tile`` cover this size (edge tiles partly filled)."""
        return Size(math.ceil(self.width / tile.width), math.ceil(self.height / tile.height))


@dataclass(frozen=True)
class Level:
    """One level of a pyramid.

    ``downsample`` is the level's scale relative to level 0 (1.0 for level 0). ``codec`` and ``photometric``
    describe the stored tiles (``"YBR_FULL_422"``, ``"RGB"``, ``"YBR_ICT"``, ``"YBR_RCT"``), so that a writer knows
    whether they can pass through.
    """

    index: int
    size: Size
    tile: Size
    downsample: float
    codec: Codec = Codec.NONE
    photometric: str = "RGB"

    @property
    def grid(self) -> Size:
        """Columns and rows of tiles."""
        return self.size.tiles(self.tile)

    @property
    def tile_count(self) -> int:
        """Number of tiles in the level."""
        return self.grid.width * self.grid.height


@dataclass(frozen=True)
class RawTile:
    """A compressed tile, ready to be written as is.

    ``data`` is a complete, self-contained codestream (for JPEG: with its tables and, for RGB tiles, the APP14
    marker), so that any decoder reads it alone. ``photometric`` is the DICOM Photometric Interpretation that
    matches it.
    """

    data: bytes
    codec: Codec
    photometric: str


@runtime_checkable
class Pyramid(Protocol):
    """A tiled multi-resolution image, level 0 first."""

    @property
    def levels(self) -> Sequence[Level]:
        """The stored levels, full resolution first."""
        ...

    @property
    def mpp(self) -> tuple[float, float] | None:
        """Microns per pixel of level 0, (x, y), when known."""
        ...

    def read_tile(self, level: int, col: int, row: int) -> np.ndarray:
        """The decoded tile as ``uint8`` RGB of shape (tile height, tile width, 3).

        Edge tiles are padded to the full tile size; the padding is white.
        """
        ...

    def read_raw_tile(self, level: int, col: int, row: int) -> RawTile | None:
        """The stored tile, compressed, when it can pass through unchanged; else ``None``."""
        ...
