"""Read an arbitrary rectangle of a pyramid level, assembled from its tiles."""

from __future__ import annotations

import numpy as np

from archipel.tiles.codecs import WHITE
from archipel.tiles.pyramid import Pyramid


def read_region(pyramid: Pyramid, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
    """The ``width`` x ``height`` RGB rectangle at (``x``, ``y``) of ``level``, in that level's pixels.

    Parts outside the level are white. Each tile it touches is read once.
    """
    lv = pyramid.levels[level]
    out = np.full((height, width, 3), WHITE, np.uint8)
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + width, lv.size.width), min(y + height, lv.size.height)
    if x0 >= x1 or y0 >= y1:
        return out
    tw, th = lv.tile.width, lv.tile.height
    for row in range(y0 // th, (y1 - 1) // th + 1):
        for col in range(x0 // tw, (x1 - 1) // tw + 1):
            tile = pyramid.read_tile(level, col, row)
            # Intersection of the tile with the request, in level coordinates.
            ix0, iy0 = max(col * tw, x0), max(row * th, y0)
            ix1, iy1 = min((col + 1) * tw, x1), min((row + 1) * th, y1)
            out[iy0 - y : iy1 - y, ix0 - x : ix1 - x] = tile[
                iy0 - row * th : iy1 - row * th, ix0 - col * tw : ix1 - col * tw
            ]
    return out
