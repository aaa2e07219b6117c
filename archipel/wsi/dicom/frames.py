"""The frames of one DICOM level: source tiles passed through byte for byte, or re-encoded where they must be.

A level's frames share one transfer syntax and one Photometric Interpretation (PS3.5 8.2, PS3.3 C.7.6.3.1.2).
:func:`choose_format` picks them from the source's own tiles, so that as many as possible pass through; a tile
that does not fit (no raw tile, another codec or colour transform, an abbreviated JPEG, a size other than the
frame's) is decoded and encoded again in the level's format, and counted, so that the caller can say so.
Aperio's zero-length tiles become blank (white) frames.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import imagecodecs
import numpy as np
from pydicom.uid import JPEG2000, UID, JPEG2000Lossless, JPEGBaseline8Bit

from archipel.tiles import jpeg, jpeg2000
from archipel.tiles.codestream import CodestreamError, bare_codestream, inspect_codestream
from archipel.tiles.pyramid import Codec, Level, Pyramid, RawTile

log = logging.getLogger(__name__)

#: Photometric Interpretations each codec's transfer syntax can carry for RGB colour images.
_JPEG_PHOTOMETRICS = {"YBR_FULL_422", "YBR_FULL", "RGB"}
#: YBR_FULL JPEG 2000 (YCbCr coded without a transform, Aperio 33003) is not among the WSI IOD's values
#: (PS3.3 C.8.12.4, Whole Slide Microscopy Image module; dciodvfy refuses it): such tiles are re-encoded.
_J2K_PHOTOMETRICS = {"YBR_ICT", "YBR_RCT", "RGB"}


def _coded_as_ycbcr(raw: RawTile) -> bool:
    # Only the source knows that a JPEG 2000 tile without a colour transform holds YCbCr (Aperio 33003).
    return raw.codec == Codec.JPEG2000 and raw.photometric == "YBR_FULL"


@dataclass(frozen=True)
class FrameFormat:
    """How every frame of one instance is encoded."""

    codec: Codec
    photometric: str
    transfer_syntax: UID
    lossy: bool

    @property
    def compression_method(self) -> str:
        """Lossy Image Compression Method (CID 7300)."""
        return "ISO_10918_1" if self.codec == Codec.JPEG else "ISO_15444_1"


@dataclass(frozen=True)
class EncodeSettings:
    """How tiles that cannot pass through are encoded when the level has no passthrough format of its own."""

    codec: Codec = Codec.JPEG
    quality: int = 90
    photometric: str = "YBR_FULL_422"


def format_for(codec: Codec, photometric: str) -> FrameFormat:
    """The frame format for tiles of ``codec`` with ``photometric``; raise ``ValueError`` if DICOM has none."""
    if codec == Codec.JPEG and photometric in _JPEG_PHOTOMETRICS:
        return FrameFormat(codec, photometric, JPEGBaseline8Bit, lossy=True)
    if codec == Codec.JPEG2000 and photometric in _J2K_PHOTOMETRICS:
        # 4.91 admits lossless and lossy alike; a source tile's history is unknown, so it never claims 4.90.
        return FrameFormat(codec, photometric, JPEG2000, lossy=True)
    raise ValueError(f"no DICOM frame format for {codec} tiles with photometric {photometric}")


def choose_format(pyramid: Pyramid, level: Level, settings: EncodeSettings, probe: int = 16) -> FrameFormat:
    """The format of a level's frames: that of its first usable raw tiles, else ``settings``'."""
    grid = level.grid
    for index in range(min(probe, level.tile_count)):
        raw = pyramid.read_raw_tile(level.index, index % grid.width, index // grid.width)
        if raw is None or not raw.data or raw.codec not in (Codec.JPEG, Codec.JPEG2000):
            continue
        try:
            info = inspect_codestream(raw.data, raw.codec, _coded_as_ycbcr(raw))
        except CodestreamError:
            continue
        if info.complete and info.baseline and info.components == 3:
            try:
                return format_for(raw.codec, info.photometric)
            except ValueError:
                continue
    if settings.codec == Codec.JPEG2000:
        return FrameFormat(Codec.JPEG2000, settings.photometric, JPEG2000, lossy=True)
    return format_for(settings.codec, settings.photometric)


def estimate_ratio(
    pyramid: Pyramid, level: Level, fmt: FrameFormat, quality: int = 90, probe: int = 16
) -> float:
    """The approximate compression ratio of a level's frames, from a sample of its first tiles."""
    grid = level.grid
    sizes = []
    for index in range(min(probe, level.tile_count)):
        raw = pyramid.read_raw_tile(level.index, index % grid.width, index // grid.width)
        if raw is not None and raw.data and raw.codec == fmt.codec:
            sizes.append(len(raw.data))
    if not sizes:
        sizes.append(len(encode_frame(pyramid.read_tile(level.index, 0, 0), fmt, quality)))
    return level.tile.width * level.tile.height * 3 / (sum(sizes) / len(sizes))


def encode_frame(pixels: np.ndarray, fmt: FrameFormat, quality: int = 90) -> bytes:
    """Encode an RGB ``uint8`` tile in ``fmt`` so that its codestream matches ``fmt.photometric``."""
    pixels = np.ascontiguousarray(pixels[..., :3])
    if fmt.codec == Codec.JPEG:
        return jpeg.encode(pixels, quality, fmt.photometric)
    if fmt.codec == Codec.JPEG2000:
        reversible = fmt.photometric != "YBR_ICT" or fmt.transfer_syntax == JPEG2000Lossless
        mct = fmt.photometric in ("YBR_ICT", "YBR_RCT")
        level = None if reversible else max(1, 100 - quality) + 30
        data = imagecodecs.jpeg2k_encode(
            pixels, level=level, codecformat="J2K", reversible=reversible, mct=mct, numthreads=1
        )
        return jpeg2000.codestream(bytes(data))
    raise ValueError(f"cannot encode DICOM frames as {fmt.codec}")


@dataclass
class FrameStats:
    """What happened to a level's tiles: how many passed through, how many were encoded and why."""

    passed: int = 0
    encoded: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        """Frames produced."""
        return self.passed + sum(self.encoded.values())


class LevelFrames:
    """The frames of one level, in TILED_FULL order, each a complete codestream in ``fmt``."""

    def __init__(
        self, pyramid: Pyramid, level: Level, fmt: FrameFormat, quality: int = 90, workers: int = 1
    ) -> None:
        self.pyramid = pyramid
        self.level = level
        self.fmt = fmt
        self.quality = quality
        self.workers = max(1, workers)
        self.stats = FrameStats()
        self._blank: bytes | None = None
        self._lock = threading.Lock()

    def _count(self, reason: str | None) -> None:
        with self._lock:
            if reason is None:
                self.stats.passed += 1
            else:
                self.stats.encoded[reason] += 1

    def _passable(self, raw: RawTile) -> str | None:
        """Why ``raw`` cannot be the frame as is, or ``None`` if it can."""
        if raw.codec != self.fmt.codec:
            return f"codec-{raw.codec}"
        try:
            info = inspect_codestream(raw.data, raw.codec, _coded_as_ycbcr(raw))
        except CodestreamError:
            return "unreadable"
        if not info.complete:
            return "abbreviated"
        if not info.baseline or info.bits != 8 or info.components != 3:
            return "not-baseline"
        if (info.width, info.height) != (self.level.tile.width, self.level.tile.height):
            return "size"
        if info.photometric != self.fmt.photometric:
            return "photometric"
        return None

    def blank_frame(self) -> bytes:
        """A white frame in the level's format (encoded once)."""
        with self._lock:
            return self._blank_locked()

    def _blank_locked(self) -> bytes:
        if self._blank is None:
            white = np.full((self.level.tile.height, self.level.tile.width, 3), 255, np.uint8)
            self._blank = encode_frame(white, self.fmt, self.quality)
        return self._blank

    def _frame(self, index: int) -> bytes:
        col, row = index % self.level.grid.width, index // self.level.grid.width
        raw = self.pyramid.read_raw_tile(self.level.index, col, row)
        if raw is not None and not raw.data:
            self._count("blank")
            return self.blank_frame()
        reason = "no-raw" if raw is None else self._passable(raw)
        self._count(reason)
        if reason is None and raw is not None:
            return bare_codestream(raw.data, raw.codec)
        tile = self.pyramid.read_tile(self.level.index, col, row)
        return encode_frame(tile, self.fmt, self.quality)

    def _passes_through(self) -> bool:
        """Whether the level's first tile passes through, as all its tiles then do but for a few odd ones."""
        raw = self.pyramid.read_raw_tile(self.level.index, 0, 0)
        return raw is not None and bool(raw.data) and self._passable(raw) is None

    def __iter__(self) -> Iterator[bytes]:
        count = self.level.tile_count
        # Passing a tile through is a read and a header check, Python work that threads only slow down (the GIL);
        # threads pay off when the level's tiles are decoded and encoded (the codecs release the GIL).
        if self.workers == 1 or self._passes_through():
            yield from map(self._frame, range(count))
            return
        # Bounded batches: tiles are read and encoded in parallel, written in order, and memory stays small.
        batch = 8 * self.workers
        with ThreadPoolExecutor(self.workers, thread_name_prefix="dicom-frames") as pool:
            for start in range(0, count, batch):
                yield from pool.map(self._frame, range(start, min(count, start + batch)))
