"""Decode and encode whole tiles in the codecs a :class:`~archipel.tiles.pyramid.RawTile` can carry."""

from __future__ import annotations

import numpy as np

from archipel.tiles import jpeg, jpeg2000
from archipel.tiles.pyramid import Codec, RawTile, Size

WHITE = 255


class TileCodecError(ValueError):
    """A tile cannot be decoded or encoded in the codec it claims."""


def decode_raw(raw: RawTile) -> np.ndarray:
    """Decode a raw tile to ``uint8`` RGB of shape (h, w, 3)."""
    try:
        if raw.codec is Codec.JPEG:
            pixels = jpeg.decode(raw.data)
        elif raw.codec is Codec.JPEG2000:
            pixels = jpeg2000.decode(raw.data, components_are_ycbcr=raw.photometric.startswith("YBR_FULL"))
        else:
            raise TileCodecError(f"no decoder here for raw {raw.codec.value} tiles")
    except (ValueError, RuntimeError) as exc:  # imagecodecs raises subclasses of RuntimeError
        if isinstance(exc, TileCodecError):
            raise
        raise TileCodecError(f"cannot decode {raw.codec.value} tile: {exc}") from exc
    return as_rgb(pixels)


def encode(pixels: np.ndarray, codec: Codec, photometric: str, quality: int = 90) -> RawTile:
    """Encode an RGB tile as a complete codestream in ``codec`` matching ``photometric``."""
    if codec is Codec.JPEG:
        return RawTile(jpeg.encode(pixels, quality, photometric), codec, photometric)
    if codec is Codec.JPEG2000:
        # For JPEG 2000 ``quality`` maps to a target PSNR: 90 -> 45 dB, visually lossless for H&E.
        return RawTile(jpeg2000.encode(pixels, photometric, quality=quality // 2), codec, photometric)
    raise TileCodecError(f"cannot encode tiles as {codec.value}")


def as_rgb(pixels: np.ndarray) -> np.ndarray:
    """``pixels`` as ``uint8`` RGB (h, w, 3): grey is repeated, alpha dropped."""
    if pixels.dtype != np.uint8:
        raise TileCodecError(f"tile has {pixels.dtype} samples, expected uint8")
    if pixels.ndim == 2:
        return np.repeat(pixels[:, :, None], 3, axis=2)
    if pixels.shape[2] == 1:
        return np.repeat(pixels, 3, axis=2)
    if pixels.shape[2] >= 3:
        return np.ascontiguousarray(pixels[:, :, :3])
    raise TileCodecError(f"tile has {pixels.shape[2]} samples per pixel")


def blank(tile: Size) -> np.ndarray:
    """A white RGB tile."""
    return np.full((tile.height, tile.width, 3), WHITE, np.uint8)


def fit(pixels: np.ndarray, tile: Size, valid: Size | None = None) -> np.ndarray:
    """``pixels`` cropped or padded to exactly ``tile``, white outside; with ``valid``, pixels beyond the
    valid width/height (the level's edge) are whitened too."""
    h, w = pixels.shape[:2]
    vw = min(w, tile.width, valid.width if valid else tile.width)
    vh = min(h, tile.height, valid.height if valid else tile.height)
    if (h, w) == (tile.height, tile.width) and (vw, vh) == (tile.width, tile.height):
        return pixels
    out = blank(tile)
    out[:vh, :vw] = pixels[:vh, :vw]
    return out
