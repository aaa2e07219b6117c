"""Write a slide's Deep Zoom tiles to a folder, for a web server to send as static files (the signed fast path).

The tree is the one ``/tiles`` serves: ``{name}.dzi`` and ``{name}_files/{level}/{col}_{row}.jpeg``, each tile
made by :func:`archipel.tiles.render.dzi_tile` (stored JPEG tiles copied unchanged, the others rendered), so a
viewer gets the same bytes from nginx as from the tile route. The tree is written beside its final place and
renamed into it at the end: a web server never sees half a slide.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from archipel.tiles import render
from archipel.tiles.pyramid import Pyramid

log = logging.getLogger("archipel.tiles")


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote: the tree's folder, tiles written, of which stored tiles sent unchanged, bytes."""

    folder: Path
    tiles: int
    passed_through: int
    bytes: int
    seconds: float


def tile_count(pyramid: Pyramid) -> int:
    """How many tiles the Deep Zoom tree of ``pyramid`` has, over every level."""
    dz = render.deep_zoom(pyramid)
    return sum(dz.grid(level).width * dz.grid(level).height for level in range(dz.max_level + 1))


def export_deep_zoom(
    pyramid: Pyramid, root: Path, name: str, progress: Callable[[int], None] | None = None
) -> ExportSummary:
    """Write ``root/{name}.dzi`` and every tile under ``root/{name}_files``, replacing a previous export of
    ``name`` only once the new one is complete. ``progress`` is called with the number of tiles written so far
    (every 256 tiles and at the end)."""
    started = time.perf_counter()
    dz = render.deep_zoom(pyramid)
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".{name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    tiles = stored = size = 0
    for level in range(dz.max_level + 1):
        folder = staging / f"{name}_files" / str(level)
        folder.mkdir(parents=True)
        grid = dz.grid(level)
        for row in range(grid.height):
            for col in range(grid.width):
                tile = render.dzi_tile(pyramid, dz, level, col, row)
                (folder / f"{col}_{row}.jpeg").write_bytes(tile.data)
                tiles += 1
                stored += tile.passed_through
                size += len(tile.data)
                if progress is not None and tiles % 256 == 0:
                    progress(tiles)
    (staging / f"{name}.dzi").write_text(dz.xml())
    final_files, final_dzi = root / f"{name}_files", root / f"{name}.dzi"
    retired = root / f".{name}.old"
    shutil.rmtree(retired, ignore_errors=True)
    if final_files.exists():
        os.replace(final_files, retired)
    os.replace(staging / f"{name}_files", final_files)
    os.replace(staging / f"{name}.dzi", final_dzi)
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(retired, ignore_errors=True)
    if progress is not None:
        progress(tiles)
    seconds = time.perf_counter() - started
    log.info(
        "event=tiles_exported slide=%s tiles=%d stored=%d bytes=%d seconds=%.1f",
        name,
        tiles,
        stored,
        size,
        seconds,
    )
    return ExportSummary(final_files, tiles, stored, size, seconds)
