"""Area-average downsampling by two, the one resampling the pyramid engine uses for missing levels."""

from __future__ import annotations

import numpy as np
from PIL import Image

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
