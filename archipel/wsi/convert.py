"""Convert a slide: probe the source, plan the levels, generate only the missing ones, write DICOM WSI and OME-Zarr.

Stored tiles pass through unchanged (JPEG, JPEG 2000); only generated levels are encoded. Output goes to ``out``:
``out/dicom/`` (one instance per level, plus label, overview and thumbnail) and ``out/slide.zarr``.

Restartable: each output is written into a ``.partial`` sibling and renamed into place only once complete, so an
output that exists is whole, and a run after a crash redoes only what was not finished (a half-written
``.partial`` is wiped first). UIDs derive from the series UID, so the redone instances are the same ones.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from archipel.tiles.plan import PyramidMode
from archipel.tiles.planned import PlannedPyramid, complete
from archipel.tiles.pyramid import Pyramid
from archipel.wsi import dicom
from archipel.wsi.sources import AssociatedKind, SlideError, SlideSource, open_slide
from archipel.wsi.zarr_writer import OmeZarrWriter

log = logging.getLogger("archipel.wsi")

#: ``progress(done, total)`` in tiles; called from the converting thread only.
ProgressFn = Callable[[int, int], None]

DICOM_DIR, ZARR_DIR = "dicom", "slide.zarr"
_FLAVORS = {
    AssociatedKind.LABEL: dicom.ImageFlavor.LABEL,
    AssociatedKind.MACRO: dicom.ImageFlavor.OVERVIEW,
    AssociatedKind.THUMBNAIL: dicom.ImageFlavor.THUMBNAIL,
}


class OutputFormat(StrEnum):
    """What a conversion writes."""

    DICOM = "dicom"
    ZARR = "zarr"
    BOTH = "both"

    @property
    def dicom(self) -> bool:
        """Whether DICOM WSI is written."""
        return self in (OutputFormat.DICOM, OutputFormat.BOTH)

    @property
    def zarr(self) -> bool:
        """Whether OME-Zarr is written."""
        return self in (OutputFormat.ZARR, OutputFormat.BOTH)


@dataclass(frozen=True)
class ConvertOptions:
    """How to convert: formats, which levels, workers, the instance size cap, and whether the label image is kept.

    ``pyramid``: ``full`` writes every factor-2 level (what the platform's job does: a viewer gets every step);
    ``stored`` keeps the source's levels as they are and generates only the levels below its smallest one.
    """

    formats: OutputFormat = OutputFormat.BOTH
    pyramid: PyramidMode = PyramidMode.FULL
    workers: int | None = None
    max_instance_bytes: int | None = None
    include_label: bool = True
    quality: int = 90


@dataclass
class ConvertReport:
    """What a conversion found and wrote."""

    vendor: str = ""
    format_name: str = ""
    levels: int = 0
    generated_levels: int = 0
    tiles: int = 0
    passed_through: int = 0
    encoded: int = 0
    dicom_files: list[Path] = field(default_factory=list)
    zarr_path: Path | None = None
    #: Outputs found complete from an earlier run and kept.
    reused: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        """The report as a job result."""
        return {
            "vendor": self.vendor,
            "format": self.format_name,
            "levels": self.levels,
            "generated_levels": self.generated_levels,
            "tiles": self.tiles,
            "passed_through": self.passed_through,
            "encoded": self.encoded,
            "dicom_instances": len(self.dicom_files),
            "zarr": self.zarr_path is not None,
            "reused": self.reused,
            "seconds": round(self.seconds, 2),
        }


class ConversionError(Exception):
    """The slide could not be converted; ``reason`` is a sentence for the user."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _fresh(path: Path) -> Path:
    """``path``'s ``.partial`` sibling, emptied (what a crashed run left there is not trusted)."""
    partial = path.with_name(path.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    return partial


def _publish(partial: Path, final: Path) -> None:
    """Rename a finished ``partial`` into place, durably."""
    for root, _dirs, files in os.walk(partial):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    os.replace(partial, final)
    fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def associated_images(source: SlideSource) -> list[dicom.AssociatedImage]:
    """The source's label, macro and thumbnail as DICOM associated images (stored codestream kept when whole)."""
    images = []
    for kind, image in source.associated.items():
        flavor = _FLAVORS.get(kind)
        if flavor is None:
            continue
        try:
            raw = image.read_raw()
            pixels = None if raw is not None else image.read()
        except Exception as exc:  # a damaged associated image must not cost the slide
            log.warning("event=associated_unreadable kind=%s reason=%s", kind.value, exc)
            continue
        images.append(dicom.AssociatedImage(flavor=flavor, pixels=pixels, raw=raw))
    return images


def convert(
    src: Path,
    out: Path,
    meta: dicom.SlideMetadata | Callable[[SlideSource], dicom.SlideMetadata],
    options: ConvertOptions | None = None,
    progress: ProgressFn | None = None,
) -> ConvertReport:
    """Convert the slide at ``src`` into ``out`` (see the module docstring); raises :class:`ConversionError`.

    ``meta`` is the DICOM metadata, or a function that makes it from the opened source (optics, vendor).
    """
    options = options or ConvertOptions()
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    report = ConvertReport()
    dicom_dir, zarr_dir = out / DICOM_DIR, out / ZARR_DIR
    want_dicom = options.formats.dicom and not dicom_dir.exists()
    want_zarr = options.formats.zarr and not zarr_dir.exists()
    if options.formats.dicom and not want_dicom:
        report.reused.append("dicom")
    if options.formats.zarr and not want_zarr:
        report.reused.append("zarr")
    try:
        source = open_slide(src)
    except SlideError as exc:
        raise ConversionError(exc.reason) from exc
    try:
        with (
            source,
            complete(
                source,
                mode=options.pyramid,
                workers=options.workers,
                quality=options.quality,
                # Worker processes open the file themselves to generate the levels below stored ones.
                reopen=functools.partial(open_slide, src),
            ) as pyramid,
        ):
            _describe(report, source, pyramid)
            metadata = meta(source) if callable(meta) else meta
            total = pyramid.plan.tiles_to_generate * (want_dicom or want_zarr)
            total += report.tiles * (int(want_dicom) + int(want_zarr))
            done = 0

            def advance(n: int) -> None:
                nonlocal done
                done += n
                if progress is not None:
                    progress(min(done, total), total)

            if progress is not None:
                progress(0, total)
            # The zarr store takes the tiles that generation decodes as they come (the largest levels), so that
            # no level is decoded twice; it builds ``slide.zarr.partial`` and renames it into place itself.
            zarr_out = OmeZarrWriter(pyramid, zarr_dir) if want_zarr else None
            covered: frozenset[int] = frozenset()
            if want_dicom or want_zarr:
                covered = pyramid.generate(advance, sink=zarr_out)
            if want_dicom:
                _convert_dicom(source, pyramid, metadata, dicom_dir, options, advance, report)
            if zarr_out is not None:
                rest = [lv.index for lv in pyramid.levels if lv.index not in covered]
                zarr_out.write_levels(rest, options.workers, advance)
                zarr_out.finish()
            if progress is not None:
                progress(total, total)
    except SlideError as exc:
        raise ConversionError(exc.reason) from exc
    except ConversionError:
        raise
    except (OSError, ValueError, IndexError, RuntimeError) as exc:
        # A tile that does not decode, a truncated strip, a codec that refuses: the source is damaged.
        raise ConversionError(f"the slide could not be read or written: {exc}") from exc
    if options.formats.dicom:
        report.dicom_files = sorted(dicom_dir.glob("*.dcm"))
    if options.formats.zarr:
        report.zarr_path = zarr_dir
    report.seconds = time.perf_counter() - started
    log.info(
        "event=slide_converted vendor=%s levels=%d generated=%d tiles=%d passed=%d encoded=%d seconds=%.2f",
        report.vendor,
        report.levels,
        report.generated_levels,
        report.tiles,
        report.passed_through,
        report.encoded,
        report.seconds,
    )
    return report


def _describe(report: ConvertReport, source: SlideSource, pyramid: PlannedPyramid) -> None:
    if not source.levels:
        raise ConversionError("no tissue levels: the file holds no tiled image to convert")
    report.vendor, report.format_name = source.vendor, source.format_name
    report.levels = len(pyramid.levels)
    report.generated_levels = len(pyramid.plan.generated)
    report.tiles = sum(level.tile_count for level in pyramid.levels)


def _convert_dicom(
    source: SlideSource,
    pyramid: PlannedPyramid,
    meta: dicom.SlideMetadata,
    final: Path,
    options: ConvertOptions,
    advance: Callable[[int], None],
    report: ConvertReport,
) -> None:
    partial = _fresh(final)
    written = 0

    def on_frames(done: int, _total: int) -> None:
        nonlocal written
        advance(done - written)
        written = done

    write = dicom.WriteOptions(
        max_instance_bytes=options.max_instance_bytes,
        include_label=options.include_label,
        workers=options.workers or 1,
        encode=dicom.EncodeSettings(quality=options.quality),
    )
    result = dicom.write_dicom_wsi(pyramid, meta, partial, associated_images(source), write, on_frames)
    report.passed_through = sum(stats.passed for stats in result.levels.values())
    report.encoded = sum(sum(stats.encoded.values()) for stats in result.levels.values())
    _publish(partial, final)


def level_summary(pyramid: Pyramid) -> Sequence[str]:
    """One line per level (size, tile, codec), for logs and the CLI."""
    return [
        f"level {lv.index}: {lv.size.width}x{lv.size.height}, tiles {lv.tile.width}x{lv.tile.height}, {lv.codec}"
        for lv in pyramid.levels
    ]
