"""Small numpy-backed pyramids whose tiles are stored compressed, for the DICOM WSI writer's tests.

Each level's tiles are encoded once, at construction, the way a scanner stores them (full-size edge tiles padded
white), so that ``read_raw_tile`` returns stored bytes and ``read_tile`` their decoding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import imagecodecs
import numpy as np

from archipel.tiles.pyramid import Codec, Level, RawTile, Size

#: Encodes an RGB tile; returns the bytes and the DICOM photometric they carry.
Encoder = Callable[[np.ndarray], tuple[bytes, str]]


def jpeg_ycbcr(tile: np.ndarray) -> tuple[bytes, str]:
    """JPEG, YCbCr with 4:2:0 chroma (as Aperio stores it)."""
    data = imagecodecs.jpeg8_encode(
        tile, level=85, colorspace="RGB", outcolorspace="YCbCr", subsampling="420"
    )
    return bytes(data), "YBR_FULL_422"


def jpeg_rgb(tile: np.ndarray) -> tuple[bytes, str]:
    """JPEG without colour transform (APP14 Adobe marker, transform 0)."""
    return bytes(imagecodecs.jpeg8_encode(tile, level=85, colorspace="RGB", outcolorspace="RGB")), "RGB"


def j2k(mct: bool, reversible: bool) -> Encoder:
    """JPEG 2000 codestreams with or without the multiple component transform, reversible (5-3) or not (9-7)."""

    def encode(tile: np.ndarray) -> tuple[bytes, str]:
        level = None if reversible else 40
        data = imagecodecs.jpeg2k_encode(tile, level=level, codecformat="J2K", reversible=reversible, mct=mct)
        photometric = "RGB" if not mct else ("YBR_RCT" if reversible else "YBR_ICT")
        return bytes(data), photometric

    return encode


def slide_image(width: int, height: int, seed: int = 7) -> np.ndarray:
    """A smooth, tissue-like RGB image with some texture (compresses like a real slide, not like noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = 200 + 40 * np.sin(x / 37.0) * np.cos(y / 23.0)
    g = 150 + 60 * np.sin((x + y) / 51.0)
    b = 210 + 30 * np.cos(x / 19.0)
    image = np.stack([r, g, b], axis=-1) + rng.normal(0, 6, (height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


@dataclass
class ArrayPyramid:
    """A :class:`archipel.tiles.pyramid.Pyramid` over in-memory tiles.

    ``overrides`` replaces stored tiles: ``(level, col, row) -> RawTile | None`` (``None``: no raw tile).
    """

    image: np.ndarray
    tile: Size = field(default_factory=lambda: Size(128, 128))
    encoder: Encoder = jpeg_ycbcr
    codec: Codec = Codec.JPEG
    downsamples: Sequence[int] = (1, 2, 4)
    mpp_xy: tuple[float, float] | None = (0.25, 0.25)
    overrides: dict[tuple[int, int, int], RawTile | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._levels: list[Level] = []
        self._tiles: list[dict[tuple[int, int], RawTile]] = []
        for index, factor in enumerate(self.downsamples):
            pixels = self._downsample(factor)
            size = Size(pixels.shape[1], pixels.shape[0])
            tiles: dict[tuple[int, int], RawTile] = {}
            photometric = "RGB"
            grid = size.tiles(self.tile)
            for row in range(grid.height):
                for col in range(grid.width):
                    data, photometric = self.encoder(self._padded(pixels, col, row))
                    tiles[col, row] = RawTile(data, self.codec, photometric)
            self._levels.append(Level(index, size, self.tile, float(factor), self.codec, photometric))
            self._tiles.append(tiles)
        self.levels_pixels = [self._downsample(f) for f in self.downsamples]

    def _downsample(self, factor: int) -> np.ndarray:
        h, w = self.image.shape[0] // factor, self.image.shape[1] // factor
        cropped = self.image[: h * factor, : w * factor].astype(np.float32)
        return cropped.reshape(h, factor, w, factor, 3).mean(axis=(1, 3)).round().astype(np.uint8)

    def _padded(self, pixels: np.ndarray, col: int, row: int) -> np.ndarray:
        tw, th = self.tile.width, self.tile.height
        out = np.full((th, tw, 3), 255, np.uint8)
        part = pixels[row * th : (row + 1) * th, col * tw : (col + 1) * tw]
        out[: part.shape[0], : part.shape[1]] = part
        return out

    @property
    def levels(self) -> Sequence[Level]:
        """The levels, full resolution first."""
        return self._levels

    @property
    def mpp(self) -> tuple[float, float] | None:
        """Microns per pixel of level 0."""
        return self.mpp_xy

    def stored(self, level: int, col: int, row: int) -> RawTile:
        """The tile as stored (before overrides)."""
        return self._tiles[level][col, row]

    def read_raw_tile(self, level: int, col: int, row: int) -> RawTile | None:
        """The stored tile, or its override."""
        if (level, col, row) in self.overrides:
            return self.overrides[level, col, row]
        return self._tiles[level][col, row]

    def read_tile(self, level: int, col: int, row: int) -> np.ndarray:
        """The decoded stored tile (white where the override is a zero-length tile)."""
        raw = self._tiles[level][col, row]
        return np.asarray(imagecodecs.imread(raw.data))[..., :3]
