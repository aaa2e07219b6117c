"""Tissue-like pixels for synthetic slides, cheap enough to fill 80,000 x 60,000 levels.

The slide is white glass with a few elliptic pieces of tissue: pink stroma with a slow texture and purple
nuclei on a jittered grid. Pixels are a pure function of the level-0 position, so every level shows the same
tissue. Large levels reuse a pool of encoded tissue tiles instead of computing each one (see ``TilePainter``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

BACKGROUND = 244
_STROMA = np.array([228, 148, 186], np.float32)
_NUCLEUS = np.array([92, 58, 140], np.float32)
_NUCLEUS_CELL = 14.0  # level-0 pixels between nuclei


@dataclass(frozen=True)
class TissueField:
    """Where tissue lies on a ``width`` x ``height`` slide, as ellipses in relative coordinates."""

    width: int
    height: int
    seed: int = 0

    def ellipses(self) -> np.ndarray:
        """(n, 4): centre x, centre y, radius x, radius y, all relative to the slide size."""
        rng = np.random.default_rng(self.seed)
        n = 3
        cx = rng.uniform(0.25, 0.75, n)
        cy = rng.uniform(0.3, 0.7, n)
        rx = rng.uniform(0.12, 0.25, n)
        ry = rng.uniform(0.15, 0.3, n)
        return np.stack([cx, cy, rx, ry], axis=1)

    def mask(self, x0: float, y0: float, step: float, w: int, h: int) -> np.ndarray:
        """Tissue mask of a ``w`` x ``h`` block whose pixels are ``step`` level-0 pixels apart from (x0, y0)."""
        xs = (x0 + step * (np.arange(w, dtype=np.float32) + 0.5)) / self.width
        ys = (y0 + step * (np.arange(h, dtype=np.float32) + 0.5)) / self.height
        inside = np.zeros((h, w), bool)
        for cx, cy, rx, ry in self.ellipses():
            inside |= ((xs[None, :] - cx) / rx) ** 2 + ((ys[:, None] - cy) / ry) ** 2 <= 1.0
        return inside

    def has_tissue(self, x0: float, y0: float, w: float, h: float) -> bool:
        """Whether a level-0 rectangle touches tissue (tested on a coarse 8 x 8 grid)."""
        return bool(self.mask(x0, y0, max(w, h) / 8, 8, 8).any())


def _hash01(ix: np.ndarray, iy: np.ndarray, salt: int) -> np.ndarray:
    """A deterministic pseudo-random value in [0, 1) per integer cell."""
    v = (ix.astype(np.uint64) * np.uint64(73856093)) ^ (iy.astype(np.uint64) * np.uint64(19349663))
    v ^= np.uint64(salt * 83492791 + 1)
    v = (v * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)
    return (v.astype(np.float64) / 2**32).astype(np.float32)


_NOISE = np.random.default_rng(12345).normal(0.0, 6.0, (256, 256)).astype(np.float32)


def paint(field: TissueField, x0: float, y0: float, step: float, w: int, h: int) -> np.ndarray:
    """RGB ``uint8`` pixels of a ``w`` x ``h`` block sampled every ``step`` level-0 pixels from (x0, y0).

    Everything is separable or computed per nucleus cell, then broadcast: about 3 ms for a 256 x 256 tile.
    """
    xs = x0 + step * (np.arange(w, dtype=np.float32) + 0.5)
    ys = y0 + step * (np.arange(h, dtype=np.float32) + 0.5)
    # Slow stroma texture: sin(x/37)cos(y/29) + sin((x+y)/11), both as outer products.
    texture = 0.5 + 0.25 * np.outer(np.cos(ys / 29.0), np.sin(xs / 37.0))
    texture += 0.25 * (
        np.outer(np.cos(ys / 11.0), np.sin(xs / 11.0)) + np.outer(np.sin(ys / 11.0), np.cos(xs / 11.0))
    )
    # Nuclei: one per grid cell at a jittered centre, radius 3-5 level-0 pixels (a blur when step is large).
    cx, cy = np.floor(xs / _NUCLEUS_CELL), np.floor(ys / _NUCLEUS_CELL)
    ux, ix = np.unique(cx, return_inverse=True)
    uy, iy = np.unique(cy, return_inverse=True)
    gx_cells, gy_cells = np.meshgrid(ux, uy)
    jx = ((gx_cells + 0.2 + 0.6 * _hash01(gx_cells, gy_cells, field.seed)) * _NUCLEUS_CELL)[np.ix_(iy, ix)]
    jy = ((gy_cells + 0.2 + 0.6 * _hash01(gx_cells, gy_cells, field.seed + 1)) * _NUCLEUS_CELL)[
        np.ix_(iy, ix)
    ]
    radius = (3.0 + 2.0 * _hash01(gx_cells, gy_cells, field.seed + 2))[np.ix_(iy, ix)]
    present = (_hash01(gx_cells, gy_cells, field.seed + 3) < 0.55)[np.ix_(iy, ix)]
    if step > 4:  # far out, nuclei average into a darker stroma
        cover = np.full((h, w), 0.55 * 0.35 * min(1.0, 16.0 / step) + 0.1, np.float32)
    else:
        dist = np.hypot(xs[None, :] - jx, ys[:, None] - jy)
        cover = np.clip((radius + 0.5 * step - dist) / max(step, 1.0), 0.0, 1.0) * present
    shade = (0.88 + 0.12 * texture) * (1 - cover)
    noise = _NOISE[np.ix_(ys.astype(np.int64) % 256, xs.astype(np.int64) % 256)]
    tissue = shade[..., None] * _STROMA + cover[..., None] * _NUCLEUS + noise[..., None]
    inside = field.mask(x0, y0, step, w, h)
    out = np.where(inside[..., None], tissue, np.float32(BACKGROUND))
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


TileEncoder = Callable[[np.ndarray], bytes]


class TilePainter:
    """Encoded tiles of one level, computed per tile for small levels, from a pool of variants for large ones.

    Below ``unique_limit`` tiles every tile is painted from the field (pixel-exact tests need that). Above it,
    interior tiles take one of ``variants`` pre-encoded tissue tiles (or the pre-encoded background tile),
    picked by a hash of the tile position; edge tiles, which need white padding, are still painted.
    """

    def __init__(
        self,
        field: TissueField,
        downsample: float,
        size: tuple[int, int],
        tile: int,
        encode: TileEncoder,
        unique_limit: int = 4096,
        variants: int = 24,
    ) -> None:
        self.field, self.downsample, self.tile, self.encode = field, downsample, tile, encode
        self.width, self.height = size
        self.cols, self.rows = -(-self.width // tile), -(-self.height // tile)
        self._pool: list[bytes] = []
        self._background = b""
        if self.cols * self.rows > unique_limit:
            rng = np.random.default_rng(field.seed + 7)
            for _ in range(variants):
                # Paint tissue from deep inside an ellipse, at a random offset, at this level's scale.
                cx, cy, _, _ = field.ellipses()[0]
                x0 = cx * field.width + rng.uniform(-2000, 2000)
                y0 = cy * field.height + rng.uniform(-2000, 2000)
                self._pool.append(encode(paint(field, x0, y0, downsample, tile, tile)))
            self._background = encode(np.full((tile, tile, 3), BACKGROUND, np.uint8))

    def pixels(self, col: int, row: int) -> np.ndarray:
        """The painted tile, white beyond the level's edge."""
        t, ds = self.tile, self.downsample
        block = paint(self.field, col * t * ds, row * t * ds, ds, t, t)
        vw, vh = self.width - col * t, self.height - row * t
        if vw < t:
            block[:, vw:] = 255
        if vh < t:
            block[vh:, :] = 255
        return block

    def encoded(self, col: int, row: int) -> bytes:
        """The tile's encoded bytes."""
        edge = col == self.cols - 1 or row == self.rows - 1
        if not self._pool or edge:
            return self.encode(self.pixels(col, row))
        t, ds = self.tile, self.downsample
        if not self.field.has_tissue(col * t * ds, row * t * ds, t * ds, t * ds):
            return self._background
        pick = int(_hash01(np.array([col]), np.array([row]), self.field.seed)[0] * len(self._pool))
        return self._pool[pick]
