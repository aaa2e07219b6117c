"""A source pyramid completed to its plan: stored levels read from the source, missing levels generated.

Generated levels are computed level by level from the planned level just above (2x2 area average), band by
band in parallel with dask (:mod:`archipel.tiles.bands`), and encoded once (JPEG by default). Their encoded tiles
go to a scratch file, not memory, so a generated level costs a few MB of RAM whatever its size; the next level
reads them back. Writers then get raw tiles for every level: passed through for stored ones, the encoded
generated ones for the rest.

Generating a level decodes every tile of the level above, which is most of a conversion's work (the full
resolution level is the largest). A writer that needs those decoded tiles too (OME-Zarr stores every level
decoded) passes a ``sink`` to :meth:`PlannedPyramid.generate` and gets each of them once, as it is decoded, instead
of decoding the level a second time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from archipel.tiles import codecs
from archipel.tiles.bands import Progress, default_workers, run_in_bands
from archipel.tiles.downsample import halve, halved_tile
from archipel.tiles.plan import PlannedLevel, PyramidMode, PyramidPlan, plan_pyramid
from archipel.tiles.processes import LevelJob, LevelPool, Reopen, SharedSink, processes_allowed
from archipel.tiles.pyramid import Codec, Level, Pyramid, RawTile, Size
from archipel.tiles.region import read_region
from archipel.tiles.scratch import TileScratch

log = logging.getLogger(__name__)

#: Below this many tiles in the level above, starting worker processes costs more than it saves.
PROCESS_MIN_TILES = 1024

#: ``sink(level, col, row, pixels)``: a decoded tile, as :meth:`PlannedPyramid.read_tile` gives it. Called from
#: worker threads, once per tile.
TileSink = Callable[[int, int, int, np.ndarray], None]


class PlannedPyramid:
    """A :class:`~archipel.tiles.pyramid.Pyramid` with every level of ``plan``.

    Stored levels delegate to ``source`` (raw tiles pass through unchanged). Generated levels are encoded in
    ``codec``/``photometric`` at ``quality``. Call :meth:`generate` to compute them up front with progress;
    otherwise the first read of a generated level computes it (and the levels it depends on). Thread-safe.

    With ``reopen`` (a picklable callable that opens the same source again) and more than one worker,
    :meth:`generate` makes each level below a stored level of at least ``process_min_tiles`` tiles in worker
    processes (:mod:`archipel.tiles.processes`), unless a sink wants that level's decoded tiles; other levels use
    threads.
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
        reopen: Reopen | None = None,
        process_min_tiles: int = PROCESS_MIN_TILES,
    ) -> None:
        if not 1 <= quality <= 100:
            raise ValueError(f"quality must be 1-100, got {quality}")
        self.source = source
        self.plan = plan or plan_pyramid(source.levels)
        self.quality = quality
        self.codec = codec
        self.photometric = photometric
        self.workers = workers
        self.reopen = reopen
        self.process_min_tiles = process_min_tiles
        self._pool: LevelPool | None = None
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

    def generate(self, progress: Progress | None = None, sink: TileSink | None = None) -> frozenset[int]:
        """Compute every generated level now, calling ``progress(n)`` as tiles are done.

        With ``sink``, each level that generation reads whole (the level above a generated one, when their tiles
        have the same even size) has every one of its decoded tiles handed to ``sink`` once, and counted in
        ``progress`` too. Returns the indexes of those levels (none when the levels were generated before).
        """
        covered: set[int] = set()
        workers = self.workers or default_workers()
        if self.reopen is not None and workers > 1 and self._wants_processes(sink) and processes_allowed():
            shared = sink.worker() if isinstance(sink, SharedSink) else None
            self._pool = LevelPool(self.reopen, workers, shared)
        try:
            for planned in self.plan.generated:
                self._ensure(planned.index, progress, sink, covered)
        finally:
            if self._pool is not None:
                self._pool.close()
                self._pool = None
        return frozenset(covered)

    def _wants_processes(self, sink: TileSink | None) -> bool:
        """Whether some level to generate is made from a large enough stored level (and a sink, if any, can do its
        work in worker processes)."""
        return (sink is None or isinstance(sink, SharedSink)) and any(
            self._from_stored(planned) is not None and not self._done[planned.index]
            for planned in self.plan.generated
        )

    def _from_stored(self, planned: PlannedLevel) -> PlannedLevel | None:
        """The stored level above ``planned`` when worker processes can make it: aligned tiles, enough of them."""
        above = self.plan.levels[planned.index - 1]
        if above.source_level is None or not self._aligned(above, planned):
            return None
        return above if above.grid.width * above.grid.height >= self.process_min_tiles else None

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

    def _ensure(
        self,
        level: int,
        progress: Progress | None = None,
        sink: TileSink | None = None,
        covered: set[int] | None = None,
    ) -> None:
        if self._done[level]:
            return
        with self._locks[level]:
            if self._done[level]:
                return
            self._ensure(level - 1, progress, sink, covered)
            planned = self.plan.levels[level]
            above = self.plan.levels[level - 1]
            work: Callable[[int, int], int | None]
            stored = self._from_stored(planned) if self._pool is not None else None
            if stored is not None and self._pool is not None:
                self._log_level(planned, "processes")
                feed = sink is not None and covered is not None
                job = LevelJob(
                    stored.source_level or 0,
                    stored.index,
                    feed,
                    stored.size,
                    planned.tile,
                    self.codec,
                    self.photometric,
                    self.quality,
                )
                for result in self._pool.generate(job, planned.grid, progress):
                    for col, row, data in result.tiles:
                        self._scratch.put((planned.index, col, row), data)
                    if feed and result.counts:
                        assert isinstance(sink, SharedSink)
                        sink.merge(result.counts)
                if feed and covered is not None:
                    covered.add(stored.index)
                self._done[level] = True
                return
            if self._aligned(above, planned):
                work = self._quadrant_work(planned, sink if covered is not None else None)
                if sink is not None and covered is not None:
                    covered.add(above.index)
            else:
                work = self._region_work(planned)
            self._log_level(planned, "threads")
            run_in_bands(planned.grid, work, workers=self.workers, progress=progress)
            self._done[level] = True

    @staticmethod
    def _log_level(planned: PlannedLevel, how: str) -> None:
        log.info(
            "event=level_generate level=%d width=%d height=%d tiles=%d in=%s",
            planned.index,
            planned.size.width,
            planned.size.height,
            planned.grid.width * planned.grid.height,
            how,
        )

    @staticmethod
    def _aligned(above: PlannedLevel, planned: PlannedLevel) -> bool:
        """Whether each tile of ``planned`` is exactly 2 x 2 tiles of ``above`` (same, even tile size)."""
        return above.tile == planned.tile and planned.tile.width % 2 == 0 and planned.tile.height % 2 == 0

    def _quadrant_work(self, planned: PlannedLevel, sink: TileSink | None) -> Callable[[int, int], int]:
        """Tile work when tiles align (:func:`~archipel.tiles.downsample.halved_tile`): each tile of the level
        above is decoded once and handed to ``sink``."""
        above = self.plan.levels[planned.index - 1]

        def read(col: int, row: int) -> np.ndarray:
            return self.read_tile(above.index, col, row)

        def seen(col: int, row: int, pixels: np.ndarray) -> None:
            assert sink is not None
            sink(above.index, col, row, pixels)

        def work(col: int, row: int) -> int:
            tile, read_count = halved_tile(read, above.size, planned.tile, col, row, seen if sink else None)
            self._store(planned, col, row, tile)
            return 1 + (read_count if sink is not None else 0)

        return work

    def _region_work(self, planned: PlannedLevel) -> Callable[[int, int], None]:
        """Tile work when tile sizes differ: read the 2x region from the level above, halve it."""
        above = self.plan.levels[planned.index - 1]
        tw, th = planned.tile.width, planned.tile.height

        def work(col: int, row: int) -> None:
            x, y = 2 * col * tw, 2 * row * th
            # Only pixels inside the level above are averaged: the padding of its edge tiles must not bleed in.
            w = min(2 * tw, above.size.width - x)
            h = min(2 * th, above.size.height - y)
            pixels = halve(read_region(self, above.index, x, y, w, h))
            self._store(planned, col, row, codecs.fit(pixels, planned.tile))

        return work

    def _store(self, planned: PlannedLevel, col: int, row: int, tile: np.ndarray) -> None:
        raw = codecs.encode(tile, self.codec, self.photometric, self.quality)
        self._scratch.put((planned.index, col, row), raw.data)


def complete(
    source: Pyramid, tile: Size | None = None, mode: PyramidMode = PyramidMode.FULL, **options: object
) -> PlannedPyramid:
    """``source`` completed to the plan of ``mode`` (every factor-2 level, or the stored ones and those below them;
    see :mod:`archipel.tiles.plan`). :class:`PlannedPyramid` takes ``options``."""
    return PlannedPyramid(source, plan_pyramid(source.levels, tile, mode), **options)  # type: ignore[arg-type]
