"""Area-average downsampling by two, the one resampling the pyramid engine uses for missing levels."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

from archipel.tiles.pyramid import Size

# Pillow modes whose C ``reduce`` gives the same means as the numpy form (RGB, grey).
_PIL_MODES = {3: "RGB", 1: "L"}


def halve(pixels: np.ndarray) -> np.ndarray:
    """Downsample an (h, w, c) ``uint8`` image by two with area averaging.

    Output pixel (i, j) is the mean of input pixels ``[2i, 2i+1] x [2j, 2j+1]`` that exist, rounded half up; an odd
    last row or column averages the pixels it has (edge replication gives exactly that mean). The output has
    ``ceil(h/2)`` x ``ceil(w/2)`` pixels.
    """
    channels = pixels.shape[2] if pixels.ndim == 3 else 0
    if pixels.dtype == np.uint8 and channels in _PIL_MODES:
        # Pillow's reduce computes exactly this mean, (sum + n/2) // n over the pixels of each block, in C with the
        # GIL released: ~3x faster than the numpy form below, and the level generation spends most of its
        # time here after decoding.
        mode = _PIL_MODES[channels]
        image = Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels, mode)
        out = np.array(image.reduce(2))
        return out[:, :, None] if channels == 1 else out
    return _halve_numpy(pixels)


def _halve_numpy(pixels: np.ndarray) -> np.ndarray:
    h, w = pixels.shape[:2]
    if h % 2 or w % 2:
        pixels = np.pad(pixels, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    p = pixels.astype(np.uint16)
    total = p[0::2, 0::2] + p[1::2, 0::2] + p[0::2, 1::2] + p[1::2, 1::2]
    return ((total + 2) >> 2).astype(np.uint8)


#: ``read(col, row)``: a decoded tile of the level above, padded to the tile size.
ReadTile = Callable[[int, int], np.ndarray]
#: ``seen(col, row, pixels)``: called with each tile of the level above as it is read.
SeenTile = Callable[[int, int, np.ndarray], None]


def halved_tile(
    read: ReadTile, above: Size, tile: Size, col: int, row: int, seen: SeenTile | None = None
) -> tuple[np.ndarray, int]:
    """Tile (``col``, ``row``) of the level below a level of size ``above`` whose tiles have the same, even size
    ``tile``: its 2 x 2 tiles above, each read once, halved alone and placed in its quarter (2 x 2 blocks never
    straddle two tiles, so this is the same average as halving the whole region). White where the level ends.

    Returns the tile and how many tiles above it read (1 to 4).
    """
    tw, th = tile.width, tile.height
    out = np.full((th, tw, 3), 255, np.uint8)
    grid = above.tiles(tile)
    read_count = 0
    for dy in (0, 1):
        arow = 2 * row + dy
        if arow >= grid.height:
            continue
        for dx in (0, 1):
            acol = 2 * col + dx
            if acol >= grid.width:
                continue
            pixels = read(acol, arow)
            read_count += 1
            if seen is not None:
                seen(acol, arow, pixels)
            # Only pixels inside the level above are averaged: the padding of its edge tiles must not bleed in.
            vw = min(tw, above.width - acol * tw)
            vh = min(th, above.height - arow * th)
            part = halve(pixels[:vh, :vw])
            x0, y0 = dx * tw // 2, dy * th // 2
            out[y0 : y0 + part.shape[0], x0 : x0 + part.shape[1]] = part
    return out, read_count
