"""Generate a level from a stored source level in worker processes, so that every core decodes.

Generating the level below a stored one (1/2 from the full resolution, most of a conversion's work) decodes every
tile above it. JPEG decode, Pillow's reduce and JPEG encode release the GIL, but the Python around them (array
conversions, tile bookkeeping, the scheduler) holds it, and on two cores two threads got little more than one.
Worker processes each open the source themselves (``reopen``, a picklable callable, e.g.
``functools.partial(open_slide, path)``), read the tiles above for a run of output tiles, halve them and encode
the result; only the encoded tiles (tens of KB) come back, and the parent stores them. At most two runs per worker
are in flight, so memory stays bounded whatever the level's size: each worker holds a source handle and a few
tiles.

Processes are not used where they cannot be: in a daemonic process (a Celery prefork child may not have children).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass

import numpy as np

from archipel.tiles import codecs
from archipel.tiles.downsample import halved_tile
from archipel.tiles.pyramid import Codec, Pyramid, Size

#: A picklable callable that opens the same source again, in a worker process.
Reopen = Callable[[], Pyramid]
#: ``(col, row, encoded tile)`` of the level being generated.
EncodedTile = tuple[int, int, bytes]

#: Output tiles per task: one run along a row (it reads two rows of tiles above, neighbours in the file).
RUN_TILES = 16

_worker_source: Pyramid | None = None


@dataclass(frozen=True)
class LevelJob:
    """What a worker needs to make tiles of one level: the source level above, geometry and encoding."""

    source_level: int
    above: Size
    tile: Size
    codec: Codec
    photometric: str
    quality: int


def processes_allowed() -> bool:
    """Whether this process may start worker processes (not a daemon, e.g. a Celery prefork child)."""
    return not multiprocessing.current_process().daemon


class LevelPool:
    """Worker processes, each with the source open, for the lifetime of one :meth:`generate` run."""

    def __init__(self, reopen: Reopen, workers: int) -> None:
        # fork: a worker starts at once, with every module already imported. spawn and forkserver would run the
        # main module again in each worker (the whole CLI, or whatever embeds the conversion). The workers only
        # run this module's functions on a source they open themselves, so the parent's other threads (progress
        # bar, thread pools) and open files do not matter to them.
        context = multiprocessing.get_context("fork")
        self.workers = workers
        self._pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_open, initargs=(reopen,))

    def generate(
        self, job: LevelJob, grid: Size, progress: Callable[[int], None] | None
    ) -> Iterator[EncodedTile]:
        """Every tile of the level ``grid``, encoded, in completion order; ``progress(n)`` as runs finish."""
        runs = _runs(grid)
        pending: set[Future[list[EncodedTile]]] = set()
        try:
            while True:
                while len(pending) < 2 * self.workers:
                    run = next(runs, None)
                    if run is None:
                        break
                    pending.add(self._pool.submit(_make_run, job, run))
                if not pending:
                    return
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    tiles = future.result()  # a worker's exception is raised here
                    yield from tiles
                    if progress is not None:
                        progress(len(tiles))
        finally:
            for future in pending:
                future.cancel()

    def close(self) -> None:
        """Stop the workers."""
        self._pool.shutdown(wait=True, cancel_futures=True)


def _runs(grid: Size) -> Iterator[list[tuple[int, int]]]:
    for row in range(grid.height):
        for start in range(0, grid.width, RUN_TILES):
            yield [(col, row) for col in range(start, min(start + RUN_TILES, grid.width))]


def _open(reopen: Reopen) -> None:
    global _worker_source
    _worker_source = reopen()


def _make_run(job: LevelJob, tiles: list[tuple[int, int]]) -> list[EncodedTile]:
    source = _worker_source
    assert source is not None, "the pool's initializer opened the source"

    def read(col: int, row: int) -> np.ndarray:
        return source.read_tile(job.source_level, col, row)

    out = []
    for col, row in tiles:
        pixels, _ = halved_tile(read, job.above, job.tile, col, row)
        out.append((col, row, codecs.encode(pixels, job.codec, job.photometric, job.quality).data))
    return out
