"""Aperio SVS, OME-TIFF and generic pyramidal TIFF through tifffile, with direct access to the stored tiles.

Tile bytes are read with ``pread`` on a descriptor of our own, so threads read concurrently without a lock, and
JPEG / JPEG 2000 tiles come out as complete codestreams (:mod:`archipel.tiles.jpeg`): tables re-injected, APP14
added to RGB tiles, Aperio's zero-length tiles replaced by a blank tile encoded like the level's others.
"""

from __future__ import annotations

import functools
import os
import struct
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from archipel.tiles import codecs, jpeg, jpeg2000
from archipel.tiles.pyramid import Codec, Level, RawTile, Size
from archipel.wsi.sources.base import AssociatedImage, AssociatedKind, SlideError, SlideSource
from archipel.wsi.sources.tiff_metadata import (
    SlideMetadata,
    ome_metadata,
    resolution_metadata,
    svs_metadata,
)

_CODECS = {
    1: Codec.NONE,
    5: Codec.LZW,
    7: Codec.JPEG,
    8: Codec.DEFLATE,
    32946: Codec.DEFLATE,
    33003: Codec.JPEG2000,  # Aperio, YCbCr components
    33004: Codec.JPEG2000,
    33005: Codec.JPEG2000,  # Aperio, RGB components
    34712: Codec.JPEG2000,
    50001: Codec.WEBP,
    50002: Codec.JPEGXL,
    52546: Codec.JPEGXL,
}
_PASS_THROUGH = (Codec.JPEG, Codec.JPEG2000)
_PHOTOMETRIC_RGB, _PHOTOMETRIC_YCBCR = 2, 6


@dataclass(frozen=True)
class _TiffLevel:
    """A tiled page read as one pyramid level."""

    level: Level
    page: tifffile.TiffPage
    offsets: tuple[int, ...]
    counts: tuple[int, ...]
    tables: bytes | None
    compression: int

    @property
    def rgb_jpeg(self) -> bool:
        return self.level.codec is Codec.JPEG and int(self.page.photometric) == _PHOTOMETRIC_RGB

    @property
    def ycbcr_j2k(self) -> bool:
        return self.compression == 33003


def _codec(page: tifffile.TiffPage) -> Codec:
    return _CODECS.get(int(page.compression), Codec.OTHER)


def _check_ifd_chain(fd: int, name: str) -> None:
    """Follow the chain of image file directories; raise when one lies past the end of the file.

    tifffile logs a broken chain and carries on with the pages it found, which would silently drop levels and
    associated images of a truncated file.
    """
    size = os.fstat(fd).st_size
    head = os.pread(fd, 16, 0)
    order = "<" if head[:2] == b"II" else ">"
    (version,) = struct.unpack_from(order + "H", head, 2)
    big = version == 43
    count_fmt, entry_size, offset_fmt = ("Q", 20, "Q") if big else ("H", 12, "I")
    (offset,) = struct.unpack_from(order + offset_fmt, head, 8 if big else 4)
    seen: set[int] = set()
    while offset:
        if offset in seen or len(seen) > 100_000:
            raise SlideError("corrupt TIFF: its directories loop", name)
        seen.add(offset)
        count_size = struct.calcsize(count_fmt)
        if offset + count_size > size:
            raise SlideError(f"truncated file: a directory starts at byte {offset} of {size}", name)
        (count,) = struct.unpack(order + count_fmt, os.pread(fd, count_size, offset))
        next_at = offset + count_size + count * entry_size
        next_size = struct.calcsize(offset_fmt)
        if next_at + next_size > size:
            raise SlideError(f"truncated file: a directory runs past byte {size}", name)
        (offset,) = struct.unpack(order + offset_fmt, os.pread(fd, next_size, next_at))


class TiffSlide(SlideSource):
    """A tiled TIFF slide: ``kind`` is ``svs``, ``ome`` or ``generic``."""

    def __init__(self, path: Path, tif: tifffile.TiffFile, kind: str) -> None:
        self.path = path
        self._tif = tif
        self._kind = kind
        self._fd = os.open(path, os.O_RDONLY)
        self._read_lock = (
            threading.Lock()
        )  # tifffile's own file handle (associated images) is not thread-safe
        try:
            _check_ifd_chain(self._fd, path.name)
            pages = self._level_pages()
            if not pages:
                raise SlideError("no tissue levels: the TIFF has no tiled RGB image", path.name)
            self._meta = self._metadata(pages[0])
            self._tiff_levels = tuple(self._read_level(i, p, pages[0]) for i, p in enumerate(pages))
            # Computed once: every tile read checks its address against them.
            self._levels = tuple(tl.level for tl in self._tiff_levels)
            self._grids = tuple(lv.grid for lv in self._levels)
            self._associated = self._find_associated()
            self._check_extent()
        except BaseException:
            self.close()
            raise
        self.vendor = {"svs": "aperio", "ome": "ome", "generic": "generic-tiff"}[kind]
        self.format_name = {"svs": "Aperio SVS", "ome": "OME-TIFF", "generic": "pyramidal TIFF"}[kind]

    # -- structure -------------------------------------------------------------------------------------------

    def _level_pages(self) -> list[tifffile.TiffPage]:
        tif = self._tif
        if self._kind == "ome":
            series = tif.series[0]
            if series.axes not in ("YXS", "YX"):
                raise SlideError(
                    f"OME-TIFF image with axes {series.axes} is not a brightfield RGB slide", self.path.name
                )
            return [lv.keyframe for lv in series.levels]
        if self._kind == "generic" and tif.series and len(tif.series[0].levels) > 1:
            return [lv.keyframe for lv in tif.series[0].levels if lv.keyframe.is_tiled]
        tiled = [p for p in tif.pages if isinstance(p, tifffile.TiffPage) and p.is_tiled]
        if self._kind == "generic" and tiled:
            # Sub-resolution pages of the same image only: same aspect ratio as the largest, smaller each time.
            tiled.sort(key=lambda p: -p.imagewidth)
            base = tiled[0]
            ratio = base.imagelength / base.imagewidth
            tiled = [
                p
                for p in tiled
                if abs(p.imagelength / p.imagewidth - ratio) < 0.02 + 2 / max(p.imagewidth, 1)
            ]
        return tiled

    def _metadata(self, first: tifffile.TiffPage) -> SlideMetadata:
        if self._kind == "svs":
            return svs_metadata(first.description)
        if self._kind == "ome":
            return ome_metadata(self._tif.ome_metadata or "")
        return resolution_metadata(first)

    def _read_level(self, index: int, page: tifffile.TiffPage, first: tifffile.TiffPage) -> _TiffLevel:
        name = self.path.name
        if page.samplesperpixel not in (1, 3, 4) or page.dtype != np.uint8:
            raise SlideError(
                f"level {index} has {page.samplesperpixel} samples of {page.dtype}; expected 8-bit RGB", name
            )
        if page.planarconfig == 2 and page.samplesperpixel > 1:
            raise SlideError(f"level {index} stores colour planes separately, which is not supported", name)
        codec = _codec(page)
        level = Level(
            index=index,
            size=Size(page.imagewidth, page.imagelength),
            tile=Size(page.tilewidth, page.tilelength),
            downsample=first.imagewidth / page.imagewidth,
            codec=codec,
        )
        offsets, counts = tuple(int(o) for o in page.dataoffsets), tuple(int(c) for c in page.databytecounts)
        if len(offsets) != level.tile_count:
            raise SlideError(f"level {index} lists {len(offsets)} tiles for a {level.grid} grid", name)
        tables = page.jpegtables if codec is Codec.JPEG else None
        tl = _TiffLevel(
            level, page, offsets, counts, bytes(tables) if tables else None, int(page.compression)
        )
        return _TiffLevel(
            Level(index, level.size, level.tile, level.downsample, codec, self._photometric(tl)),
            page,
            offsets,
            counts,
            tl.tables,
            tl.compression,
        )

    def _photometric(self, tl: _TiffLevel) -> str:
        """The level's DICOM photometric, read from its first stored tile (the tags can disagree with it)."""
        if tl.level.codec not in _PASS_THROUGH:
            return "RGB"
        index = next((i for i, c in enumerate(tl.counts) if c > 0), None)
        if index is None:
            return "RGB" if tl.rgb_jpeg else "YBR_FULL_422"
        data = self._complete(tl, os.pread(self._fd, tl.counts[index], tl.offsets[index]))
        try:
            if tl.level.codec is Codec.JPEG:
                return jpeg.photometric(data)
            return jpeg2000.photometric(jpeg2000.header(data), components_are_ycbcr=tl.ycbcr_j2k)
        except ValueError as exc:
            raise SlideError(
                f"level {tl.level.index} has a corrupt first tile: {exc}", self.path.name
            ) from exc

    def _check_extent(self) -> None:
        size = os.fstat(self._fd).st_size
        for tl in self._tiff_levels:
            end = max((o + c for o, c in zip(tl.offsets, tl.counts, strict=True) if c > 0), default=0)
            if end > size:
                raise SlideError(
                    f"truncated file: level {tl.level.index} has tile data up to byte {end} "
                    f"but the file has {size} bytes",
                    self.path.name,
                )

    # -- associated images -----------------------------------------------------------------------------------

    def _find_associated(self) -> dict[AssociatedKind, AssociatedImage]:
        found: dict[AssociatedKind, AssociatedImage] = {}
        if self._kind == "svs":
            for i, page in enumerate(self._tif.pages):
                if not isinstance(page, tifffile.TiffPage) or page.is_tiled:
                    continue
                kind = self._svs_kind(i, page)
                if kind is not None and kind not in found:
                    found[kind] = self._associated_image(kind, page)
        elif self._kind == "ome":
            for series in self._tif.series[1:]:
                name = (series.name or "").lower()
                for kind in AssociatedKind:
                    if kind.value in name or (kind is AssociatedKind.MACRO and "overview" in name):
                        found.setdefault(kind, self._associated_image(kind, series.keyframe))
        return found

    @staticmethod
    def _svs_kind(index: int, page: tifffile.TiffPage) -> AssociatedKind | None:
        lines = page.description.splitlines()
        words = lines[1].split() if len(lines) > 1 else []
        if words and words[0].lower() in ("label", "macro"):
            return AssociatedKind(words[0].lower())
        if index == 1:
            return AssociatedKind.THUMBNAIL
        subfile = int(page.subfiletype)
        return {1: AssociatedKind.LABEL, 9: AssociatedKind.MACRO}.get(subfile)

    def _associated_image(self, kind: AssociatedKind, page: tifffile.TiffPage) -> AssociatedImage:
        def read() -> np.ndarray:
            with self._read_lock:
                return codecs.as_rgb(np.asarray(page.asarray()))

        def read_raw() -> RawTile | None:
            if _codec(page) is not Codec.JPEG or len(page.dataoffsets) != 1:
                return None
            strip = os.pread(self._fd, int(page.databytecounts[0]), int(page.dataoffsets[0]))
            rgb = int(page.photometric) == _PHOTOMETRIC_RGB
            data = jpeg.complete_tile(strip, bytes(page.jpegtables) if page.jpegtables else None, rgb)
            return RawTile(data, Codec.JPEG, jpeg.photometric(data))

        return AssociatedImage(kind, Size(page.imagewidth, page.imagelength), _codec(page), read, read_raw)

    # -- the Pyramid protocol --------------------------------------------------------------------------------

    @property
    def levels(self) -> Sequence[Level]:
        return self._levels

    @property
    def mpp(self) -> tuple[float, float] | None:
        return self._meta.mpp

    @property
    def objective_power(self) -> float | None:
        return self._meta.objective_power

    @property
    def associated(self) -> Mapping[AssociatedKind, AssociatedImage]:
        return self._associated

    @property
    def properties(self) -> Mapping[str, str]:
        return self._meta.properties

    def can_pass_through(self, level: int) -> bool:
        return self._tiff_levels[level].level.codec in _PASS_THROUGH

    def _tile_index(self, level: int, col: int, row: int) -> int:
        """The tile's index in its level's TIFF tile list; ``IndexError`` if the level or tile does not exist."""
        if 0 <= level < len(self._grids):
            grid = self._grids[level]
            if 0 <= col < grid.width and 0 <= row < grid.height:
                return row * grid.width + col
        self._check_tile(level, col, row)  # raises the IndexError that says what is out of range
        raise AssertionError("unreachable: the tile was out of range")

    def _stored(self, level: int, col: int, row: int) -> tuple[_TiffLevel, bytes]:
        index = self._tile_index(level, col, row)
        tl = self._tiff_levels[level]
        count = tl.counts[index]
        data = os.pread(self._fd, count, tl.offsets[index]) if count else b""
        if len(data) != count:
            raise SlideError(f"truncated tile: level {level} tile ({col}, {row})", self.path.name)
        return tl, data

    def _complete(self, tl: _TiffLevel, data: bytes) -> bytes:
        if tl.level.codec is Codec.JPEG:
            return jpeg.complete_tile(data, tl.tables, rgb=tl.rgb_jpeg)
        return data

    def read_raw_tile(self, level: int, col: int, row: int) -> RawTile | None:
        """The stored tile as a complete JPEG / JPEG 2000 codestream; a zero-length tile gives a blank tile."""
        tl, data = self._stored(level, col, row)
        if tl.level.codec not in _PASS_THROUGH:
            return None
        if not data:
            return self._blank_raw(level)
        return RawTile(self._complete(tl, data), tl.level.codec, tl.level.photometric)

    def read_tile(self, level: int, col: int, row: int) -> np.ndarray:
        tl, data = self._stored(level, col, row)
        lv = tl.level
        if not data:
            return codecs.blank(lv.tile)
        try:
            if lv.codec in _PASS_THROUGH:
                pixels = codecs.decode_raw(RawTile(self._complete(tl, data), lv.codec, lv.photometric))
            else:
                decoded, _, _ = tl.page.decode(data, self._tile_index(level, col, row), jpegtables=tl.tables)
                if decoded is None:
                    return codecs.blank(lv.tile)
                pixels = codecs.as_rgb(np.asarray(decoded).reshape(decoded.shape[-3:]))
        except (ValueError, RuntimeError) as exc:
            raise SlideError(
                f"corrupt tile: level {level} tile ({col}, {row}): {exc}", self.path.name
            ) from exc
        valid = Size(lv.size.width - col * lv.tile.width, lv.size.height - row * lv.tile.height)
        return codecs.fit(pixels, lv.tile, valid)

    @functools.cache  # noqa: B019 - one blank per level for the source's lifetime
    def _blank_raw(self, level: int) -> RawTile:
        lv = self.levels[level]
        if lv.codec is Codec.JPEG:
            return RawTile(jpeg.encode(codecs.blank(lv.tile), 95, lv.photometric), lv.codec, lv.photometric)
        return codecs.encode(codecs.blank(lv.tile), lv.codec, lv.photometric, 95)

    def close(self) -> None:
        if getattr(self, "_fd", -1) >= 0:
            os.close(self._fd)
            self._fd = -1
        self._tif.close()
