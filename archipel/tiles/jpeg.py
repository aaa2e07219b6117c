"""JPEG codestream surgery: make a stored tile a complete, self-contained JPEG without decoding it.

Whole-slide TIFFs often store *abbreviated* JPEG tiles: the quantisation and Huffman tables live once in the
TIFF's ``JPEGTables`` tag and each tile holds only its frame and scan. A tile that leaves the TIFF needs its
tables back. Tiles encoded straight from RGB (no YCbCr transform) need an Adobe APP14 marker saying so, or
decoders guess YCbCr from the component ids and show false colours. Everything here is byte-level marker work
on the entropy-coded stream, which stays untouched, so that a passed-through tile decodes to the same pixels.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

import imagecodecs
import numpy as np

SOI = b"\xff\xd8"
EOI = b"\xff\xd9"
_APP14 = 0xEE
_SOS = 0xDA
_DQT, _DHT = 0xDB, 0xC4
# Start-of-frame markers (baseline, extended, progressive, lossless...), not DHT (C4), JPG (C8) or DAC (CC).
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
# APP14 "Adobe", version 100, no flags, transform 0: the components are RGB, not YCbCr.
ADOBE_RGB_APP14 = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"


class JpegStreamError(ValueError):
    """The bytes are not a JPEG stream we can parse up to its scan."""


@dataclass(frozen=True)
class Segment:
    """One marker segment before the scan data: ``marker`` (the byte after 0xFF), where it starts, its length
    including the marker."""

    marker: int
    offset: int
    length: int


@dataclass(frozen=True)
class JpegFrame:
    """What the frame header says: image size, component ids and each component's sampling factors."""

    width: int
    height: int
    component_ids: tuple[int, ...]
    sampling: tuple[tuple[int, int], ...]

    @property
    def subsampled(self) -> bool:
        """Whether chroma is stored at a lower resolution than luma."""
        return len(set(self.sampling)) > 1


def segments(data: bytes) -> Iterator[Segment]:
    """The marker segments from just after SOI up to and including SOS (whose length runs to the end)."""
    if not data.startswith(SOI):
        raise JpegStreamError("no SOI marker at the start")
    i, n = 2, len(data)
    while i < n:
        if data[i] != 0xFF:
            raise JpegStreamError(f"expected a marker at byte {i}, found 0x{data[i]:02x}")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == _SOS:
            yield Segment(marker, i, n - i)
            return
        if i + 4 > n:
            raise JpegStreamError("stream ends inside a marker segment")
        (length,) = struct.unpack_from(">H", data, i + 2)
        yield Segment(marker, i, length + 2)
        i += length + 2
    raise JpegStreamError("no SOS marker: the stream has no scan")


def frame(data: bytes) -> JpegFrame:
    """Parse the start-of-frame header."""
    for seg in segments(data):
        if seg.marker in _SOF:
            o = seg.offset + 4
            height, width, count = struct.unpack_from(">HHB", data, o + 1)
            ids, sampling = [], []
            for k in range(count):
                cid, hv = data[o + 6 + 3 * k], data[o + 7 + 3 * k]
                ids.append(cid)
                sampling.append((hv >> 4, hv & 0x0F))
            return JpegFrame(width, height, tuple(ids), tuple(sampling))
    raise JpegStreamError("no start-of-frame marker")


def has_tables(data: bytes) -> bool:
    """Whether the stream carries its own quantisation tables (is not abbreviated)."""
    return any(seg.marker == _DQT for seg in segments(data))


def has_adobe_marker(data: bytes) -> bool:
    """Whether an APP14 Adobe segment tells decoders the colour transform."""
    return any(
        seg.marker == _APP14 and data[seg.offset + 4 : seg.offset + 9] == b"Adobe" for seg in segments(data)
    )


def merge_tables(tile: bytes, tables: bytes | None) -> bytes:
    """``tile`` with the tables of a TIFF ``JPEGTables`` stream (SOI, DQT/DHT..., EOI) inserted after its SOI.

    Tables that the tile defines itself come later in the stream and win, as decoders apply the last definition.
    """
    if not tables or len(tables) <= 4:
        return tile
    if not tables.startswith(SOI) or not tables.endswith(EOI):
        raise JpegStreamError("JPEGTables is not an SOI ... EOI stream")
    return SOI + tables[2:-2] + tile[2:]


def add_adobe_rgb(data: bytes) -> bytes:
    """``data`` with an APP14 Adobe marker (transform 0: RGB) right after SOI, unless it has one already."""
    if has_adobe_marker(data):
        return data
    return SOI + ADOBE_RGB_APP14 + data[2:]


def complete_tile(tile: bytes, tables: bytes | None, rgb: bool) -> bytes:
    """A stored TIFF tile as a self-contained JPEG: tables re-injected, APP14 added when the data is RGB."""
    data = merge_tables(tile, tables)
    return add_adobe_rgb(data) if rgb else data


def photometric(data: bytes) -> str:
    """The DICOM Photometric Interpretation that matches a complete JPEG stream."""
    info = frame(data)
    if len(info.component_ids) == 1:
        return "MONOCHROME2"
    for seg in segments(data):
        if seg.marker == _APP14 and data[seg.offset + 4 : seg.offset + 9] == b"Adobe":
            transform = data[seg.offset + 15]
            return "RGB" if transform == 0 else ("YBR_FULL_422" if info.subsampled else "YBR_FULL")
    if info.component_ids == (0x52, 0x47, 0x42):  # 'R', 'G', 'B': libjpeg's convention for RGB
        return "RGB"
    return "YBR_FULL_422" if info.subsampled else "YBR_FULL"


def encode(pixels: np.ndarray, quality: int, photometric: str = "YBR_FULL_422") -> bytes:
    """Encode an RGB ``uint8`` tile as a complete baseline JPEG that matches ``photometric``.

    ``YBR_FULL_422`` subsamples chroma horizontally only (4:2:2), which is what the DICOM term says;
    ``YBR_FULL`` keeps full chroma; ``RGB`` encodes without colour transform and carries the APP14 marker.
    """
    if photometric == "RGB":
        return bytes(imagecodecs.jpeg8_encode(pixels, level=quality, colorspace="RGB", outcolorspace="RGB"))
    sub = "422" if photometric == "YBR_FULL_422" else "444"
    return bytes(imagecodecs.jpeg8_encode(pixels, level=quality, subsampling=sub))


def decode(data: bytes) -> np.ndarray:
    """Decode a complete JPEG stream to ``uint8`` RGB (or grey, shape (h, w))."""
    return np.asarray(imagecodecs.jpeg8_decode(data))


def split_tables(data: bytes) -> tuple[bytes, bytes]:
    """Split a complete JPEG into a ``JPEGTables`` stream (SOI, DQT, DHT, EOI) and an abbreviated stream.

    APP segments are dropped from the abbreviated stream, as scanners write them. Used to make test slides
    shaped like real ones.
    """
    tables, rest = [SOI], [SOI]
    for seg in segments(data):
        chunk = data[seg.offset : seg.offset + seg.length]
        if seg.marker in (_DQT, _DHT):
            tables.append(chunk)
        elif 0xE0 <= seg.marker <= 0xEF:
            continue
        else:
            rest.append(chunk)
    tables.append(EOI)
    return b"".join(tables), b"".join(rest)


def renumber_components(data: bytes, ids: tuple[int, ...]) -> bytes:
    """``data`` with its frame and scan component ids replaced by ``ids`` (same order).

    Test slides use it to reproduce RGB tiles whose ids (1, 2, 3) make decoders assume YCbCr.
    """
    out = bytearray(data)
    for seg in segments(data):
        if seg.marker in _SOF:
            for k, cid in enumerate(ids):
                out[seg.offset + 10 + 3 * k] = cid
        elif seg.marker == _SOS:
            for k, cid in enumerate(ids):
                out[seg.offset + 5 + 2 * k] = cid
    return bytes(out)
