"""Generate a level from a stored source level in worker processes, so that every core decodes.

Generating the level below a stored one (1/2 from the full resolution, most of a conversion's work) decodes every
tile above it. JPEG decode, Pillow's reduce and JPEG encode release the GIL, but the Python around them (array
conversions, tile bookkeeping, the scheduler) holds it, and on two cores two threads got little more than one.
Worker processes each open the source themselves (``reopen``, a picklable callable, e.g.
``functools.partial(open_slide, path)``), read the tiles above for a run of output tiles, halve them and encode
the result; only the encoded tiles (tens of KB) come back, and the parent stores them. At most two runs per
worker are in flight, so memory stays bounded whatever the level's size: each worker holds a source handle and a
few tiles.

A sink that wants the decoded tiles above (the OME-Zarr writer) does its work in the workers too when it is a
:class:`SharedSink`: its picklable worker part runs there (writing chunk files) and returns counts that the parent
merges.

Processes are not used where they cannot be: in a daemonic process (a Celery prefork child may not have children).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from archipel.tiles import codecs
from archipel.tiles.downsample import halved_tile
from archipel.tiles.pyramid import Codec, Pyramid, Size

#: A picklable callable that opens the same source again, in a worker process.
Reopen = Callable[[], Pyramid]
#: ``(col, row, encoded tile)`` of the level being generated.
EncodedTile = tuple[int, int, bytes]

#: A sink's work in a worker process, ``(level, col, row, pixels) -> counts``; picklable.
WorkerSink = Callable[[int, int, int, np.ndarray], tuple[int, ...]]


@runtime_checkable
class SharedSink(Protocol):
    """A tile sink whose work can also be done in worker processes.

    Called here like a :data:`~archipel.tiles.planned.TileSink`; :meth:`worker` gives the same work as a picklable
    callable that returns counts per tile, and :meth:`merge` takes their sums back from the workers.
    """

    def __call__(self, level: int, col: int, row: int, pixels: np.ndarray) -> None:
        """Take one decoded tile, here."""
        ...

    def worker(self) -> WorkerSink:
        """The same work for a worker process."""
        ...

    def merge(self, counts: tuple[int, ...]) -> None:
        """Add counts that the worker part returned (summed over tiles)."""
        ...


@dataclass(frozen=True)
class RunResult:
    """What a worker made for one run: the encoded tiles, how many tiles above it read, its sink's counts."""

    tiles: list[EncodedTile]
    reads: int
    counts: tuple[int, ...]


#: Output tiles per task: one run along a row (it reads two rows of tiles above, neighbours in the file).
RUN_TILES = 16

_worker_source: Pyramid | None = None
_worker_sink: WorkerSink | None = None


@dataclass(frozen=True)
class LevelJob:
    """What a worker needs to make tiles of one level: the source level above, geometry and encoding."""

    source_level: int
    #: The level above's index in the output pyramid (what the sink is told), and whether the sink gets its tiles.
    above_index: int
    feed_sink: bool
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

    def __init__(self, reopen: Reopen, workers: int, sink: WorkerSink | None = None) -> None:
        # fork: a worker starts at once, with every module already imported. spawn and forkserver would run the
        # main module again in each worker (the whole CLI, or whatever embeds the conversion). The workers only
        # run this module's functions on a source they open themselves, so the parent's other threads (progress
        # bar, thread pools) and open files do not matter to them.
        context = multiprocessing.get_context("fork")
        self.workers = workers
        self._pool = ProcessPoolExecutor(
            workers, mp_context=context, initializer=_open, initargs=(reopen, sink)
        )

    def generate(
        self, job: LevelJob, grid: Size, progress: Callable[[int], None] | None
    ) -> Iterator[RunResult]:
        """Every tile of the level ``grid``, by runs, in completion order; ``progress(n)`` as runs finish (the
        tiles made, plus the tiles above when the sink gets them)."""
        runs = _runs(grid)
        pending: set[Future[RunResult]] = set()
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
                    result = future.result()  # a worker's exception is raised here
                    yield result
                    if progress is not None:
                        progress(len(result.tiles) + (result.reads if job.feed_sink else 0))
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


def _open(reopen: Reopen, sink: WorkerSink | None) -> None:
    global _worker_source, _worker_sink
    _worker_source, _worker_sink = reopen(), sink


def _make_run(job: LevelJob, tiles: list[tuple[int, int]]) -> RunResult:
    source, sink = _worker_source, _worker_sink if job.feed_sink else None
    assert source is not None, "the pool's initializer opened the source"
    counts: list[int] = []

    def read(col: int, row: int) -> np.ndarray:
        return source.read_tile(job.source_level, col, row)

    def seen(col: int, row: int, pixels: np.ndarray) -> None:
        assert sink is not None
        got = sink(job.above_index, col, row, pixels)
        counts[:] = [a + b for a, b in zip(counts, got, strict=True)] if counts else list(got)

    out, reads = [], 0
    for col, row in tiles:
        pixels, n = halved_tile(read, job.above, job.tile, col, row, seen if sink is not None else None)
        reads += n
        out.append((col, row, codecs.encode(pixels, job.codec, job.photometric, job.quality).data))
    return RunResult(out, reads, tuple(counts))
