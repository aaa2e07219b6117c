"""Area-average downsampling by two, the one resampling the pyramid engine uses for missing levels."""

from __future__ import annotations

import numpy as np


def halve(pixels: np.ndarray) -> np.ndarray:
    """Downsample an (h, w, c) ``uint8`` image by two with area averaging.

    Output pixel (i, j) is the mean of input pixels ``[2i, 2i+1] x [2j, 2j+1]`` that exist, rounded half up; an odd
    last row or column averages the pixels it has (edge replication gives exactly that mean). The output has
    ``ceil(h/2)`` x ``ceil(w/2)`` pixels.
    """
    h, w = pixels.shape[:2]
    if h % 2 or w % 2:
        pixels = np.pad(pixels, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    p = pixels.astype(np.uint16)
    total = p[0::2, 0::2] + p[1::2, 0::2] + p[0::2, 1::2] + p[1::2, 1::2]
    return ((total + 2) >> 2).astype(np.uint8)
