"""Write a pyramid as DICOM VL Whole Slide Microscopy Image instances: one per level (or one concatenation).

``write_dicom_wsi`` is the entry point. Each level becomes a TILED_FULL instance whose frames are the source
tiles, byte for byte where they can be (see :mod:`archipel.wsi.dicom.frames`), streamed to disk with an offset
table. A level whose pixel data could pass 4 GiB gets an Extended Offset Table; with an instance size limit, a
level larger than the limit is split into a concatenation instead.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO

from archipel.tiles.pyramid import Level, Pyramid
from archipel.wsi.dicom.associated import AssociatedImage, write_associated
from archipel.wsi.dicom.encapsulated import BOT_LIMIT, EncapsulatedFile, OffsetOverflow, OffsetTable, fragment
from archipel.wsi.dicom.frames import EncodeSettings, FrameStats, LevelFrames, choose_format, estimate_ratio
from archipel.wsi.dicom.image import Concatenation, ImageFlavor, ImageSpec, image_dataset
from archipel.wsi.dicom.metadata import SlideMetadata

log = logging.getLogger(__name__)

#: Progress callback: frames written so far, frames in all.
Progress = Callable[[int, int], None]


class TablePolicy(StrEnum):
    """Which offset table a level gets: ``auto`` picks the Basic one unless the level may pass 4 GiB."""

    AUTO = "auto"
    BASIC = "basic"
    EXTENDED = "extended"


@dataclass(frozen=True)
class WriteOptions:
    """How the slide is written.

    ``max_instance_bytes`` caps the pixel data of one instance; a larger level becomes a concatenation.
    ``include_label`` leaves the label image out when false (exports), and any overview that shows it.
    """

    table: TablePolicy = TablePolicy.AUTO
    max_instance_bytes: int | None = None
    encode: EncodeSettings = field(default_factory=EncodeSettings)
    include_label: bool = True
    workers: int = 1


@dataclass
class WriteReport:
    """What was written: the files, and per level how many frames passed through or were encoded."""

    files: list[Path] = field(default_factory=list)
    levels: dict[int, FrameStats] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def frames(self) -> int:
        """Frames written over all levels."""
        return sum(stats.total for stats in self.levels.values())


def _size_bound(level: Level) -> int:
    """A generous upper bound of a level's encoded size: raw pixels plus a margin per tile."""
    return level.tile_count * (level.tile.width * level.tile.height * 3 * 5 // 4 + 4096)


def write_dicom_wsi(
    pyramid: Pyramid,
    meta: SlideMetadata,
    out_dir: Path,
    associated: Sequence[AssociatedImage] = (),
    options: WriteOptions | None = None,
    progress: Progress | None = None,
) -> WriteReport:
    """Write ``pyramid`` (and its label, overview and thumbnail) as DICOM WSI files in ``out_dir``.

    Returns the files written, levels first. Instances are named ``level-N.dcm`` (``level-N-pK.dcm`` for the parts
    of a concatenation) and ``label.dcm``, ``overview.dcm``, ``thumbnail.dcm``; each appears only once complete.
    """
    options = options or WriteOptions()
    mpp = pyramid.mpp
    if mpp is None:
        raise ValueError("the pyramid has no pixel size (mpp); DICOM WSI requires Pixel Spacing")
    if not pyramid.levels:
        raise ValueError("the pyramid has no levels")
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*.dcm.partial"):
        # Left by a run that was killed mid-instance; complete instances only ever have their final name.
        stale.unlink()
    report = WriteReport()
    started = time.perf_counter()
    now = dt.datetime.now()
    pyramid_uid = meta.derived_uid("pyramid")
    total = sum(level.tile_count for level in pyramid.levels)
    done = 0

    def advance(count: int) -> None:
        nonlocal done
        done += count
        if progress is not None:
            progress(done, total)

    base = pyramid.levels[0]
    for level in pyramid.levels:
        spacing = (mpp[0] * level.downsample / 1000, mpp[1] * level.downsample / 1000)
        writer = _LevelWriter(pyramid, level, meta, options, pyramid_uid, now, spacing, out_dir)
        report.files.extend(writer.write(advance))
        report.levels[level.index] = writer.stats
        log.info(
            "dicom_wsi.level level=%d frames=%d passed=%d encoded=%s",
            level.index,
            level.tile_count,
            writer.stats.passed,
            dict(writer.stats.encoded) or "{}",
        )
    for image in associated:
        path = write_associated(
            image, meta, out_dir, pyramid_uid, now, options.include_label, base.size, mpp, options.encode
        )
        if path is not None:
            report.files.append(path)
    report.seconds = time.perf_counter() - started
    log.info(
        "dicom_wsi.written files=%d frames=%d seconds=%.2f", len(report.files), report.frames, report.seconds
    )
    return report


class _LevelWriter:
    """Writes one level: one instance, or the parts of a concatenation."""

    def __init__(
        self,
        pyramid: Pyramid,
        level: Level,
        meta: SlideMetadata,
        options: WriteOptions,
        pyramid_uid: str,
        now: dt.datetime,
        spacing: tuple[float, float],
        out_dir: Path,
    ) -> None:
        self.pyramid = pyramid
        self.level = level
        self.meta = meta
        self.options = options
        self.pyramid_uid = pyramid_uid
        self.now = now
        self.spacing = spacing
        self.out_dir = out_dir
        self.fmt = choose_format(pyramid, level, options.encode)
        self.ratio = estimate_ratio(pyramid, level, self.fmt, options.encode.quality)
        self.stats = FrameStats()

    def _spec(self, frames: int, uid: str, number: int, part: Concatenation | None = None) -> ImageSpec:
        return ImageSpec(
            sop_instance_uid=uid,
            instance_number=number,
            flavor=ImageFlavor.VOLUME,
            size=self.level.size,
            tile=self.level.tile,
            frames=frames,
            fmt=self.fmt,
            original=self.level.index == 0,
            pixel_spacing=self.spacing,
            concatenation=part,
            compression_ratio=self.ratio,
        )

    def _frames(self) -> LevelFrames:
        frames = LevelFrames(
            self.pyramid, self.level, self.fmt, self.options.encode.quality, workers=self.options.workers
        )
        self.stats = frames.stats
        return frames

    def write(self, advance: Callable[[int], None]) -> list[Path]:
        bound = _size_bound(self.level)
        limit = self.options.max_instance_bytes
        if limit is not None and bound > limit:
            return self._write_concatenation(limit, advance)
        table = {
            TablePolicy.BASIC: OffsetTable.BASIC,
            TablePolicy.EXTENDED: OffsetTable.EXTENDED,
            TablePolicy.AUTO: OffsetTable.EXTENDED if bound > BOT_LIMIT else OffsetTable.BASIC,
        }[self.options.table]
        try:
            return [self._write_single(table, advance)]
        except OffsetOverflow:
            # Tiles larger than the bound assumed: rare enough that writing the level again is the simple way.
            log.warning("dicom_wsi.offset_overflow level=%d rewriting=extended", self.level.index)
            return [self._write_single(OffsetTable.EXTENDED, advance)]

    def _write_single(self, table: OffsetTable, advance: Callable[[int], None]) -> Path:
        count = self.level.tile_count
        uid = self.meta.derived_uid("level", self.level.index)
        dataset = image_dataset(
            self.meta, self._spec(count, uid, self.level.index + 1), self.pyramid_uid, self.now
        )
        path = self.out_dir / f"level-{self.level.index}.dcm"
        reported = 0
        try:
            with EncapsulatedFile(path, dataset, self.fmt.transfer_syntax, count, table) as out:
                for n, frame in enumerate(self._frames(), 1):
                    out.write_frame(frame)
                    if n % 64 == 0 or n == count:
                        advance(n - reported)
                        reported = n
                return out.close()
        except OffsetOverflow:
            advance(-reported)  # the level starts again; progress says so rather than overshoot
            raise

    def _write_concatenation(self, limit: int, advance: Callable[[int], None]) -> list[Path]:
        """Split the level into parts of at most ``limit`` bytes of pixel data each.

        A part's frame count is known only once it is full, and the header (Number of Frames, offset table)
        precedes the frames, so each part's fragments are spilled to a temporary file first and copied after
        the header: twice the writes, for this level only.
        """
        source_uid = self.meta.derived_uid("level", self.level.index)
        concat_uid = self.meta.derived_uid("concatenation", self.level.index)
        paths: list[Path] = []
        offsets: list[int] = []
        lengths: list[int] = []
        first_frame = 0

        def flush(spill: BinaryIO, last: bool) -> None:
            nonlocal first_frame
            number = len(paths) + 1
            if last and number == 1:
                # It all fitted after all: one plain instance, no concatenation.
                part, uid, name = None, source_uid, f"level-{self.level.index}.dcm"
            else:
                part = Concatenation(concat_uid, source_uid, number, first_frame)
                uid = self.meta.derived_uid("level", self.level.index, "part", number)
                name = f"level-{self.level.index}-p{number}.dcm"
            spec = self._spec(len(offsets), uid, self.level.index + 1, part)
            dataset = image_dataset(self.meta, spec, self.pyramid_uid, self.now)
            path = self.out_dir / name
            table = OffsetTable.BASIC if spill.tell() <= BOT_LIMIT else OffsetTable.EXTENDED
            with EncapsulatedFile(path, dataset, self.fmt.transfer_syntax, len(offsets), table) as out:
                out.copy_fragments(spill, offsets, lengths)
                paths.append(out.close())
            spill.seek(0)
            spill.truncate()
            advance(len(offsets))
            first_frame += len(offsets)
            offsets.clear()
            lengths.clear()

        with tempfile.TemporaryFile(dir=self.out_dir) as spill:
            for frame in self._frames():
                item = fragment(frame)
                if offsets and spill.tell() + len(item) > limit:
                    flush(spill, last=False)
                offsets.append(spill.tell())
                lengths.append(len(item) - 8)
                spill.write(item)
            flush(spill, last=True)
        return paths
