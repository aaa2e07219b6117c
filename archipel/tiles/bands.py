"""Run per-tile work over a level in parallel with dask, band by band, so that memory stays bounded.

Tiles are visited in row-major bands (whole rows of tiles). Each band is cut into small tasks of consecutive
tiles and computed on dask's threaded scheduler; the next band starts when the band is done. Only a band's worth
of work is ever in flight, whatever the level's size, and reads stay local in the source (neighbouring tiles).
The work functions store their own results (scratch file, chunk files), so nothing accumulates here.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import dask

from archipel.tiles.pyramid import Size

#: ``work(col, row)``; it may return how many tiles it finished (more than one when it also hands on the tiles
#: it read, see :meth:`archipel.tiles.planned.PlannedPyramid.generate`), ``None`` meaning one.
TileWork = Callable[[int, int], int | None]
Progress = Callable[[int], None]


def default_workers() -> int:
    """One worker per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _run_chunk(work: TileWork, tiles: list[tuple[int, int]]) -> int:
    done = 0
    for col, row in tiles:
        counted = work(col, row)
        done += 1 if counted is None else counted
    return done


def run_in_bands(
    grid: Size,
    work: TileWork,
    *,
    workers: int | None = None,
    progress: Progress | None = None,
    tiles_per_task: int = 4,
    min_band_tiles: int = 64,
) -> None:
    """Call ``work(col, row)`` once for every tile of ``grid``, in parallel on ``workers`` threads.

        A band is as many whole rows as make at least ``min_band_tiles`` x ``workers`` tiles, so that the threads stay
        busy to the band's end. ``progress(n)`` is called after each band with the number of tiles it finished (the sum
    of what ``work`` returned, ``None`` counting one).
        Exceptions from ``work`` propagate (the band's other tasks finish first).
    """
    n_workers = workers or default_workers()
    rows_per_band = max(1, (min_band_tiles * n_workers) // max(grid.width, 1))
    for band_start in range(0, grid.height, rows_per_band):
        rows = range(band_start, min(band_start + rows_per_band, grid.height))
        tiles = [(col, row) for row in rows for col in range(grid.width)]
        if n_workers == 1:
            done = _run_chunk(work, tiles)
        else:
            tasks = [
                dask.delayed(_run_chunk, pure=False)(work, tiles[i : i + tiles_per_task])
                for i in range(0, len(tiles), tiles_per_task)
            ]
            done = sum(dask.compute(*tasks, scheduler="threads", num_workers=n_workers))
        if progress is not None:
            progress(done)
