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

from archipel.platform import audit
from archipel.platform.authn import Principal
from archipel.platform.runtime import Runtime
from archipel.tiles import render, signed
from archipel.tiles.pyramid import Pyramid
from archipel.tiles.views import SlideUnavailable, resolver

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


#: ``progress(done, total)``: tiles written so far, of how many.
Progress = Callable[[int, int], None]


def export_deep_zoom(
    pyramid: Pyramid, root: Path, name: str, progress: Progress | None = None
) -> ExportSummary:
    """Write ``root/{name}.dzi`` and every tile under ``root/{name}_files``, replacing a previous export of
    ``name`` only once the new one is complete. ``progress`` is called every 256 tiles and at the end."""
    started = time.perf_counter()
    dz = render.deep_zoom(pyramid)
    total = tile_count(pyramid)
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
                    progress(tiles, total)
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
        progress(tiles, total)
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


#: Who the audit trail names for an export (an operator's command, or a job).
EXPORTER = Principal(subject="tiles-export", role="system", kind="system")


class ExportRefused(Exception):
    """The slide cannot be exported now; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def export_slide(
    rt: Runtime, slide_id: str, root: Path | None = None, progress: Progress | None = None
) -> ExportSummary:
    """Export the converted pyramid serving ``slide_id`` under ``root`` (default: the ``tiles_export_dir``
    setting) with the version marker the signed URLs check, and audit it as an *Export*. Refused
    (:class:`ExportRefused`) for an unknown slide, one still being converted (its tiles would change) or one that
    cannot be read."""
    if not signed.SLIDE_ID.match(slide_id):
        raise ExportRefused(f"{slide_id!r} is not a slide id")
    ref = resolver().describe(rt, slide_id)
    if ref is None:
        raise ExportRefused(f"no slide {slide_id}")
    if not ref.final:
        raise ExportRefused(f"slide {slide_id} is still being converted; export it once ready")
    try:
        pyramid = resolver().open(rt, ref)
    except SlideUnavailable as exc:
        raise ExportRefused(f"slide {slide_id}: {exc.reason}") from exc
    folder = root or signed.export_root(rt.settings.data_dir, rt.settings.tiles_export_dir)
    try:
        summary = export_deep_zoom(pyramid, folder, slide_id, progress)
    finally:
        close = getattr(pyramid, "close", None)
        if close is not None:
            close()
    (folder / f"{slide_id}{signed.VERSION_SUFFIX}").write_text(ref.version + "\n")
    audit.record(
        rt.db,
        EXPORTER,
        audit.EXPORT,
        "export:tiles",
        patient=ref.resource.patient,
        master=ref.resource.master,
        obj=f"slide:{slide_id}",
        purpose=audit.OPERATIONS,
        detail=f"tiles={summary.tiles}",
    )
    return summary
