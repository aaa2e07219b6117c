"""Synthetic whole-slide images, written with tifffile, for tests and benchmarks.

Each writer streams its levels tile by tile (never a level in memory) and shapes the file like the real thing:

- :func:`write_svs`: Aperio SVS that OpenSlide opens as ``aperio``. JPEG tiles are abbreviated, with the tables in
  ``JPEGTables``; ``jpeg-rgb`` tiles are RGB without an APP14 marker and with component ids 1, 2, 3 (so a decoder
  that is not told guesses YCbCr); ``j2k-ycbcr`` / ``j2k-rgb`` use Aperio's compressions 33003 / 33005. Thumbnail
  (JPEG), label (LZW) and macro (JPEG) pages; optional zero-length tiles, as some Aperio scanners write.
- :func:`write_pyramidal_tiff`: a generic tiled TIFF with only some levels (by default 1 and 1/16).
- :func:`write_ome_tiff`: an OME-TIFF with its pyramid in SubIFDs and ``PhysicalSizeX/Y`` in the OME-XML.

Sizes are free (not multiples of the tile); large levels reuse a pool of encoded tiles (see
:class:`~archipel.wsi.synthetic_content.TilePainter`), so an 80,000 x 60,000 slide is written at disk speed.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import tifffile

from archipel.tiles import jpeg, jpeg2000
from archipel.wsi.synthetic_content import TilePainter, TissueField, paint

_APERIO_HEADER = "Aperio Image Library v12.0.15"
_BIGTIFF_ABOVE = 2**31  # raw bytes of level 0 above which we write BigTIFF, to be safe with 4 GB offsets


class SvsCompression(StrEnum):
    """How the tissue tiles of a synthetic SVS are compressed."""

    JPEG = "jpeg"  # YCbCr 4:2:0, abbreviated tiles + JPEGTables (the common case)
    JPEG_RGB = "jpeg-rgb"  # RGB, abbreviated, no APP14 marker
    J2K_YCBCR = "j2k-ycbcr"  # Aperio 33003: YCbCr components, no MCT
    J2K_RGB = "j2k-rgb"  # Aperio 33005: RGB with the irreversible colour transform


def _level_sizes(width: int, height: int, downsamples: Sequence[int]) -> list[tuple[int, int, int]]:
    return [(d, max(1, width // d), max(1, height // d)) for d in downsamples]


def _thumbnail(field: TissueField, longest: int = 768) -> np.ndarray:
    step = max(field.width, field.height) / longest
    w, h = max(1, round(field.width / step)), max(1, round(field.height / step))
    return paint(field, 0, 0, step, w, h)


def _label(seed: int) -> np.ndarray:
    """A white label with a bar code-like pattern and a dark frame (no text, no names)."""
    rng = np.random.default_rng(seed)
    label = np.full((300, 320, 3), 250, np.uint8)
    bars = rng.integers(0, 2, 60).repeat(4)
    label[40:140, 40:280][:, bars[:240] == 1] = 20
    label[:6], label[-6:], label[:, :6], label[:, -6:] = 30, 30, 30, 30
    return label


def _macro(field: TissueField, label: np.ndarray) -> np.ndarray:
    glass = _thumbnail(field, longest=900)
    h = glass.shape[0]
    lab = label[:: max(1, label.shape[0] // h + 1), :: max(1, label.shape[0] // h + 1)][:h]
    out = np.full((h, glass.shape[1] + lab.shape[1], 3), 235, np.uint8)
    out[: lab.shape[0], : lab.shape[1]] = lab
    out[:, lab.shape[1] :] = glass
    return out


class _SvsTileCodec:
    """Encodes tiles the way an Aperio scanner stores them, and keeps the shared JPEG tables."""

    def __init__(self, compression: SvsCompression, quality: int) -> None:
        self.compression, self.quality = compression, quality
        self.tables: bytes | None = None

    def __call__(self, pixels: np.ndarray) -> bytes:
        c = self.compression
        if c is SvsCompression.J2K_YCBCR:
            return jpeg2000.encode(pixels, "YBR_FULL", quality=self.quality // 2)
        if c is SvsCompression.J2K_RGB:
            return jpeg2000.encode(pixels, "YBR_ICT", quality=self.quality // 2)
        if c is SvsCompression.JPEG_RGB:
            full = bytes(
                imagecodecs.jpeg8_encode(pixels, level=self.quality, colorspace="RGB", outcolorspace="RGB")
            )
            tables, tile = jpeg.split_tables(full)
            tile = jpeg.renumber_components(tile, (1, 2, 3))
        else:
            full = bytes(imagecodecs.jpeg8_encode(pixels, level=self.quality, subsampling="420"))
            tables, tile = jpeg.split_tables(full)
        if self.tables is None:
            self.tables = tables
        elif tables != self.tables:
            raise AssertionError("JPEG tables differ between tiles; abbreviated tiles need one set")
        return tile

    def tiff_args(self) -> dict[str, Any]:
        c = self.compression
        if c is SvsCompression.J2K_YCBCR:
            return {"compression": 33003, "photometric": "rgb"}
        if c is SvsCompression.J2K_RGB:
            return {"compression": 33005, "photometric": "rgb"}
        args: dict[str, Any] = {"compression": 7, "photometric": "rgb", "jpegtables": self.tables}
        if c is SvsCompression.JPEG_RGB:
            return {**args, "subsampling": (1, 1), "compressionargs": {"outcolorspace": "RGB"}}
        return {**args, "subsampling": (2, 2)}

    @property
    def description_codec(self) -> str:
        if self.compression in (SvsCompression.J2K_YCBCR, SvsCompression.J2K_RGB):
            return (
                f"J2K/{'YUV16' if self.compression is SvsCompression.J2K_YCBCR else 'KDU'} Q={self.quality}"
            )
        return f"JPEG/RGB Q={self.quality}"


def _stream(painter: TilePainter, zero_length: Collection[tuple[int, int]] = ()) -> Iterator[bytes]:
    for row in range(painter.rows):
        for col in range(painter.cols):
            yield b"" if (col, row) in zero_length else painter.encoded(col, row)


def write_svs(
    path: Path,
    width: int = 1800,
    height: int = 1300,
    *,
    tile: int = 240,
    downsamples: Sequence[int] = (1, 4, 16),
    compression: SvsCompression | str = SvsCompression.JPEG,
    quality: int = 80,
    mpp: float = 0.499,
    app_mag: int = 20,
    zero_length_tiles: Collection[tuple[int, int]] = (),
    associated: bool = True,
    seed: int = 0,
    unique_limit: int = 4096,
) -> Path:
    """Write an Aperio-style SVS; ``zero_length_tiles`` are (col, row) of level 0 stored with 0 bytes."""
    comp = SvsCompression(compression)
    field = TissueField(width, height, seed)
    codec = _SvsTileCodec(comp, quality)
    codec(np.full((tile, tile, 3), 255, np.uint8))  # fixes the JPEG tables before any page is written
    bigtiff = width * height * 3 > _BIGTIFF_ABOVE
    label = _label(seed)
    common = (
        f"|AppMag = {app_mag}|StripeWidth = 2040|ScanScope ID = SYNTH01|Filename = synthetic"
        f"|Date = 01/02/25|Time = 10:00:00|MPP = {mpp:.4f}"
    )
    with tifffile.TiffWriter(path, bigtiff=bigtiff) as tw:
        for i, (d, w, h) in enumerate(_level_sizes(width, height, downsamples)):
            painter = TilePainter(field, width / w, (w, h), tile, codec, unique_limit)
            tiles = _stream(painter, zero_length_tiles if i == 0 else ())
            geometry = f"{width}x{height} [0,0 {width}x{height}] ({tile}x{tile})"
            desc = f"{_APERIO_HEADER} \r\n{geometry}"
            desc += (
                f" {codec.description_codec}{common}" if d == 1 else f" -> {w}x{h} {codec.description_codec}"
            )
            tw.write(
                tiles,
                shape=(h, w, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                description=desc,
                metadata=None,
                **codec.tiff_args(),
            )
            if i == 0 and associated:
                thumb = _thumbnail(field)
                tw.write(
                    thumb,
                    compression="jpeg",
                    compressionargs={"level": 90},
                    photometric="rgb",
                    rowsperstrip=thumb.shape[0],
                    description=f"{_APERIO_HEADER} \r\n{width}x{height} -> {thumb.shape[1]}x{thumb.shape[0]} -{common}",
                    metadata=None,
                )
        if associated:
            tw.write(
                label,
                compression="lzw",
                photometric="rgb",
                subfiletype=1,
                description=f"{_APERIO_HEADER}\r\nlabel {label.shape[1]}x{label.shape[0]}",
                metadata=None,
            )
            macro = _macro(field, label)
            tw.write(
                macro,
                compression="jpeg",
                compressionargs={"level": 90},
                photometric="rgb",
                rowsperstrip=macro.shape[0],
                subfiletype=9,
                description=f"{_APERIO_HEADER}\r\nmacro {macro.shape[1]}x{macro.shape[0]}",
                metadata=None,
            )
    return path


def _jpeg_tile(quality: int) -> Any:
    return lambda pixels: bytes(imagecodecs.jpeg8_encode(pixels, level=quality, subsampling="420"))


def write_pyramidal_tiff(
    path: Path,
    width: int = 2000,
    height: int = 1400,
    *,
    tile: int = 256,
    downsamples: Sequence[int] = (1, 16),
    quality: int = 85,
    mpp: float = 0.25,
    seed: int = 1,
    unique_limit: int = 4096,
) -> Path:
    """Write a generic tiled TIFF whose pyramid lacks levels: by default only 1 and 1/16, JPEG tiles (complete,
    YCbCr 4:2:0), resolution tags in pixels per centimetre."""
    field = TissueField(width, height, seed)
    res = 1e4 / mpp
    with tifffile.TiffWriter(path, bigtiff=width * height * 3 > _BIGTIFF_ABOVE) as tw:
        for i, (_, w, h) in enumerate(_level_sizes(width, height, downsamples)):
            painter = TilePainter(field, width / w, (w, h), tile, _jpeg_tile(quality), unique_limit)
            tw.write(
                _stream(painter),
                shape=(h, w, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                compression=7,
                photometric="rgb",
                subsampling=(2, 2),
                subfiletype=1 if i else 0,
                resolution=(res * w / width, res * h / height),
                resolutionunit="CENTIMETER",
                software="archipel synthetic",
                metadata=None,
            )
    return path


def write_ome_tiff(
    path: Path,
    width: int = 1500,
    height: int = 1100,
    *,
    tile: int = 256,
    levels: int = 3,
    compression: str = "jpeg",
    quality: int = 85,
    mpp: float = 0.25,
    seed: int = 2,
    unique_limit: int = 4096,
) -> Path:
    """Write an OME-TIFF: full resolution in the main IFD, ``levels - 1`` factor-2 levels in its SubIFDs.

    ``compression`` is ``jpeg`` (complete YCbCr tiles, passed through later) or ``zlib`` (lossless, decoded).
    """
    field = TissueField(width, height, seed)
    with tifffile.TiffWriter(path, ome=True, bigtiff=width * height * 3 > _BIGTIFF_ABOVE) as tw:
        for i in range(levels):
            w, h = max(1, width >> i), max(1, height >> i)
            painter = TilePainter(field, width / w, (w, h), tile, _jpeg_tile(quality), unique_limit)
            args: dict[str, Any] = {
                "shape": (h, w, 3),
                "dtype": np.uint8,
                "tile": (tile, tile),
                "photometric": "rgb",
            }
            if compression == "jpeg":
                data: Any = _stream(painter)
                args |= {"compression": 7, "subsampling": (2, 2)}
            else:
                data = (painter.pixels(c, r) for r in range(painter.rows) for c in range(painter.cols))
                args |= {"compression": "zlib"}
            if i == 0:
                args |= {
                    "subifds": levels - 1,
                    "metadata": {
                        "axes": "YXS",
                        "Name": "synthetic",
                        "PhysicalSizeX": mpp,
                        "PhysicalSizeXUnit": "µm",
                        "PhysicalSizeY": mpp,
                        "PhysicalSizeYUnit": "µm",
                    },
                }
            else:
                args |= {"subfiletype": 1, "metadata": None}
            tw.write(data, **args)
    return path
