"""A source pyramid completed to its plan: stored levels read from the source, missing levels generated.

Generated levels are computed level by level from the planned level just above (2x2 area average), band by
band in parallel with dask (:mod:`archipel.tiles.bands`), and encoded once (JPEG by default). Their encoded tiles
go to a scratch file, not memory, so a generated level costs a few MB of RAM whatever its size; the next level
reads them back. Writers then get raw tiles for every level: passed through for stored ones, the encoded
generated ones for the rest.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from archipel.tiles import codecs
from archipel.tiles.bands import Progress, run_in_bands
from archipel.tiles.downsample import halve
from archipel.tiles.plan import PlannedLevel, PyramidPlan, plan_pyramid
from archipel.tiles.pyramid import Codec, Level, Pyramid, RawTile, Size
from archipel.tiles.region import read_region
from archipel.tiles.scratch import TileScratch

log = logging.getLogger(__name__)


class PlannedPyramid:
    """A :class:`~archipel.tiles.pyramid.Pyramid` with every level of ``plan``.

    Stored levels delegate to ``source`` (raw tiles pass through unchanged). Generated levels are encoded in
    ``codec``/``photometric`` at ``quality``. Call :meth:`generate` to compute them up front with progress;
    otherwise the first read of a generated level computes it (and the levels it depends on). Thread-safe.
    """

    def __init__(
        self,
        source: Pyramid,
        plan: PyramidPlan | None = None,
        *,
        quality: int = 90,
        codec: Codec = Codec.JPEG,
        photometric: str = "YBR_FULL_422",
        workers: int | None = None,
        scratch_dir: Path | None = None,
    ) -> None:
        if not 1 <= quality <= 100:
            raise ValueError(f"quality must be 1-100, got {quality}")
        self.source = source
        self.plan = plan or plan_pyramid(source.levels)
        self.quality = quality
        self.codec = codec
        self.photometric = photometric
        self.workers = workers
        self._scratch = TileScratch(scratch_dir)
        self._done = [not lv.generated for lv in self.plan.levels]
        self._locks = [threading.Lock() for _ in self.plan.levels]
        self._levels = tuple(self._as_level(p) for p in self.plan.levels)

    def _as_level(self, p: PlannedLevel) -> Level:
        if p.source_level is not None:
            src = self.source.levels[p.source_level]
            return Level(p.index, p.size, p.tile, p.downsample, src.codec, src.photometric)
        return Level(p.index, p.size, p.tile, p.downsample, self.codec, self.photometric)

    @property
    def levels(self) -> Sequence[Level]:
        """Every planned level, full resolution first."""
        return self._levels

    @property
    def mpp(self) -> tuple[float, float] | None:
        """The source's microns per pixel at level 0."""
        return self.source.mpp

    def read_tile(self, level: int, col: int, row: int) -> np.ndarray:
        """The decoded tile, padded white to the tile size."""
        planned = self.plan.levels[level]
        if planned.source_level is not None:
            return self.source.read_tile(planned.source_level, col, row)
        raw = self._generated_raw(level, col, row)
        return codecs.fit(codecs.decode_raw(raw), planned.tile)

    def read_raw_tile(self, level: int, col: int, row: int) -> RawTile | None:
        """The stored tile as is for source levels; the encoded tile for generated levels."""
        planned = self.plan.levels[level]
        if planned.source_level is not None:
            return self.source.read_raw_tile(planned.source_level, col, row)
        return self._generated_raw(level, col, row)

    def generate(self, progress: Progress | None = None) -> None:
        """Compute every generated level now, calling ``progress(n)`` as tiles are done."""
        for planned in self.plan.generated:
            self._ensure(planned.index, progress)

    def close(self) -> None:
        """Drop the generated tiles."""
        self._scratch.close()

    def __enter__(self) -> PlannedPyramid:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _generated_raw(self, level: int, col: int, row: int) -> RawTile:
        self._ensure(level)
        grid = self.plan.levels[level].grid
        if not (0 <= col < grid.width and 0 <= row < grid.height):
            raise IndexError(f"tile ({col}, {row}) outside level {level}'s {grid.width}x{grid.height} grid")
        data = self._scratch.get((level, col, row))
        assert data is not None, "a generated level has every tile"
        return RawTile(data, self.codec, self.photometric)

    def _ensure(self, level: int, progress: Progress | None = None) -> None:
        if self._done[level]:
            return
        with self._locks[level]:
            if self._done[level]:
                return
            self._ensure(level - 1, progress)
            planned = self.plan.levels[level]
            log.info(
                "event=level_generate level=%d width=%d height=%d tiles=%d",
                level,
                planned.size.width,
                planned.size.height,
                planned.grid.width * planned.grid.height,
            )
            run_in_bands(
                planned.grid,
                lambda col, row: self._generate_tile(planned, col, row),
                workers=self.workers,
                progress=progress,
            )
            self._done[level] = True

    def _generate_tile(self, planned: PlannedLevel, col: int, row: int) -> None:
        above = self.plan.levels[planned.index - 1]
        tw, th = planned.tile.width, planned.tile.height
        x, y = 2 * col * tw, 2 * row * th
        # Only pixels inside the level above are averaged: the padding of its edge tiles must not bleed in.
        w = min(2 * tw, above.size.width - x)
        h = min(2 * th, above.size.height - y)
        region = read_region(self, above.index, x, y, w, h)
        pixels = halve(region)
        tile = codecs.fit(pixels, planned.tile)
        raw = codecs.encode(tile, self.codec, self.photometric, self.quality)
        self._scratch.put((planned.index, col, row), raw.data)


def complete(source: Pyramid, tile: Size | None = None, **options: object) -> PlannedPyramid:
    """``source`` completed with its missing factor-2 levels (see :class:`PlannedPyramid` for ``options``)."""
    return PlannedPyramid(source, plan_pyramid(source.levels, tile), **options)  # type: ignore[arg-type]
