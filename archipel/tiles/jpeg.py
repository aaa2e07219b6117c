"""JPEG codestream surgery: make a stored tile a complete, self-contained JPEG without decoding it.

Whole-slide TIFFs often store *abbreviated* JPEG tiles: the quantisation and Huffman tables live once in the
TIFF's ``JPEGTables`` tag and each tile holds only its frame and scan. A tile that leaves the TIFF needs its
tables back. Tiles encoded straight from RGB (no YCbCr transform) need an Adobe APP14 marker saying so, or
decoders guess YCbCr from the component ids and show false colours. Everything here is byte-level marker work
on the entropy-coded stream, which stays untouched, so that a passed-through tile decodes to the same pixels.
"""

from __future__ import annotations

import functools
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
# Markers without a length field (RSTn, SOI, EOI, TEM).
_STANDALONE = frozenset({0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0x01})
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
    """What the header says up to the scan: the frame (size, sample precision, component ids and sampling
    factors, which start-of-frame marker), whether the stream carries its own tables, and the Adobe APP14
    colour transform when there is one."""

    width: int
    height: int
    component_ids: tuple[int, ...]
    sampling: tuple[tuple[int, int], ...]
    bits: int
    sof: int
    complete: bool
    adobe_transform: int | None

    @property
    def subsampled(self) -> bool:
        """Whether chroma is stored at a lower resolution than luma."""
        return len(set(self.sampling)) > 1

    @property
    def baseline(self) -> bool:
        """Whether this is 8-bit baseline JPEG (SOF0), the only kind transfer syntax 1.2.840.10008.1.2.4.50 allows."""
        return self.sof == 0xC0 and self.bits == 8

    @property
    def photometric(self) -> str:
        """The DICOM Photometric Interpretation that matches the stream's colour transform."""
        if len(self.component_ids) == 1:
            return "MONOCHROME2"
        # DICOM labels 4:2:2 and 4:2:0 JPEG alike.
        ybr = "YBR_FULL_422" if self.subsampled else "YBR_FULL"
        if self.adobe_transform is not None:
            return "RGB" if self.adobe_transform == 0 else ybr
        if self.component_ids == (0x52, 0x47, 0x42):  # 'R', 'G', 'B': libjpeg's convention for RGB
            return "RGB"
        return ybr


def segments(data: bytes) -> Iterator[Segment]:
    """The marker segments from just after SOI up to and including SOS (whose length runs to the end)."""
    if not data.startswith(SOI):
        raise JpegStreamError("no SOI marker at the start")
    i, n = 2, len(data)
    while i + 1 < n:
        if data[i] != 0xFF:
            raise JpegStreamError(f"expected a marker at byte {i}, found 0x{data[i]:02x}")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _STANDALONE:
            i += 2
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
    """Parse the header up to the scan in one pass; raise :class:`JpegStreamError` if it is not a JPEG."""
    sof: tuple[int, int, int, int, tuple[int, ...], tuple[tuple[int, int], ...]] | None = None
    markers: set[int] = set()
    transform: int | None = None
    try:
        for seg in segments(data):
            markers.add(seg.marker)
            o = seg.offset + 4  # the segment's payload
            if seg.marker in _SOF and sof is None:
                bits, height, width, count = struct.unpack_from(">BHHB", data, o)
                ids = tuple(data[o + 6 + 3 * k] for k in range(count))
                sampling = tuple((data[o + 7 + 3 * k] >> 4, data[o + 7 + 3 * k] & 0x0F) for k in range(count))
                sof = (seg.marker, bits, width, height, ids, sampling)
            elif seg.marker == _APP14 and seg.length >= 16 and data[o : o + 5] == b"Adobe":
                transform = data[o + 11]  # 0: no colour transform (RGB), 1: YCbCr, 2: YCCK
    except (struct.error, IndexError) as exc:
        raise JpegStreamError(f"JPEG header ends early: {exc}") from exc
    if sof is None:
        raise JpegStreamError("no start-of-frame marker")
    marker, bits, width, height, ids, sampling = sof
    complete = _DQT in markers and _DHT in markers
    return JpegFrame(width, height, ids, sampling, bits, marker, complete, transform)


def header_frame(data: bytes) -> JpegFrame:
    """:func:`frame`, remembered per distinct header: the tiles of a level share theirs, so a pass-through check
    of every tile costs a byte search and a dictionary look-up instead of a Python walk of the markers.

    The key is the stream up to its first ``FFDA``. If those bytes sit inside an earlier segment (not the real
    start of scan), parsing the key fails and the whole stream is parsed instead.
    """
    end = data.find(b"\xff\xda")
    if end > 0:
        try:
            return _frame_of_header(data[: end + 2])
        except JpegStreamError:
            pass
    return frame(data)


@functools.lru_cache(maxsize=64)
def _frame_of_header(header: bytes) -> JpegFrame:
    return frame(header)


def has_tables(data: bytes) -> bool:
    """Whether the stream carries its own quantisation and Huffman tables (is not abbreviated)."""
    markers = {seg.marker for seg in segments(data)}
    return _DQT in markers and _DHT in markers


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
    if not tile.startswith(SOI) or not tables.startswith(SOI):
        raise JpegStreamError("JPEG tile or JPEGTables does not start with SOI (FFD8)")
    body = tables[2:-2] if tables.endswith(EOI) else tables[2:]
    return SOI + body + tile[2:]


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
    return frame(data).photometric


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
