"""What a compressed tile really is: reading JPEG and JPEG 2000 headers without decoding.

A tile may pass through into a DICOM frame only if its codestream says what the DICOM header will say: its size
must be the frame size, it must decode alone (an abbreviated JPEG without its tables does not), and the
Photometric Interpretation must match its colour transform. These functions read just the markers that decide
that, so that checking a tile costs microseconds.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from archipel.tiles.pyramid import Codec

#: JPEG markers without a length field (RSTn, SOI, EOI, TEM).
_STANDALONE = {0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0x01}
#: Start-of-frame markers; 0xC0 is baseline, the only one transfer syntax 1.2.840.10008.1.2.4.50 allows.
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"


class CodestreamError(ValueError):
    """The bytes are not a codestream of the kind they claim to be."""


@dataclass(frozen=True)
class CodestreamInfo:
    """The facts about one compressed tile that decide whether it can become a DICOM frame as is.

    ``photometric`` is the DICOM Photometric Interpretation that the codestream's colour transform implies.
    ``complete`` is false for an abbreviated JPEG (tables missing). ``baseline`` is true for an 8-bit baseline
    JPEG (SOF0), and for JPEG 2000 means nothing.
    """

    codec: Codec
    width: int
    height: int
    components: int
    bits: int
    photometric: str
    complete: bool
    baseline: bool
    reversible: bool = False


def inspect_codestream(data: bytes, codec: Codec) -> CodestreamInfo:
    """Read the header of a JPEG or JPEG 2000 tile; raise :class:`CodestreamError` if it is not one."""
    if codec == Codec.JPEG:
        return _inspect_jpeg(data)
    if codec == Codec.JPEG2000:
        return _inspect_j2k(unwrap_jp2(data))
    raise CodestreamError(f"no DICOM encapsulation for codec {codec}")


def _jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """The (marker, payload start, payload end) of each header segment up to and including SOS."""
    if data[:2] != b"\xff\xd8":
        raise CodestreamError("JPEG tile does not start with SOI (FFD8)")
    segments: list[tuple[int, int, int]] = []
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise CodestreamError(f"JPEG marker expected at byte {pos}, found 0x{data[pos]:02X}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        segments.append((marker, pos + 4, pos + 2 + length))
        if marker == 0xDA:  # SOS: entropy-coded data follows
            return segments
        pos += 2 + length
    raise CodestreamError("JPEG tile ends before its scan (no SOS marker)")


def _inspect_jpeg(data: bytes) -> CodestreamInfo:
    segments = _jpeg_segments(data)
    markers = {m for m, _, _ in segments}
    sof = next(((m, s, e) for m, s, e in segments if m in _SOF), None)
    if sof is None:
        raise CodestreamError("JPEG tile has no start-of-frame marker")
    marker, start, _ = sof
    bits, height, width, ncomp = struct.unpack(">BHHB", data[start : start + 6])
    comps = [data[start + 6 + 3 * i : start + 9 + 3 * i] for i in range(ncomp)]
    ids = bytes(c[0] for c in comps)
    sampling = [c[1] for c in comps]
    adobe = next((data[s:e] for m, s, e in segments if m == 0xEE and data[s : s + 5] == b"Adobe"), None)
    if ncomp == 1:
        photometric = "MONOCHROME2"
    elif adobe is not None and len(adobe) >= 12:
        # APP14 transform flag: 0 = no colour transform (RGB), 1 = YCbCr.
        photometric = "RGB" if adobe[11] == 0 else _ybr(sampling)
    elif ids == b"RGB":
        # libjpeg's convention when there is neither JFIF nor Adobe marker.
        photometric = "RGB"
    else:
        photometric = _ybr(sampling)
    return CodestreamInfo(
        codec=Codec.JPEG,
        width=width,
        height=height,
        components=ncomp,
        bits=bits,
        photometric=photometric,
        complete=0xDB in markers and 0xC4 in markers,
        baseline=marker == 0xC0 and bits == 8,
    )


def _ybr(sampling: list[int]) -> str:
    """YBR_FULL_422 when chroma is subsampled (as DICOM labels 4:2:2 and 4:2:0 JPEG alike), else YBR_FULL."""
    return "YBR_FULL" if len(set(sampling)) == 1 else "YBR_FULL_422"


def insert_jpeg_tables(tile: bytes, tables: bytes) -> bytes:
    """A complete JPEG from an abbreviated tile and the shared tables (TIFF JPEGTables, tag 347).

    ``tables`` is itself an abbreviated JPEG (SOI, DQT/DHT, EOI); its segments go right after the tile's SOI.
    A tile that already carries its tables is returned unchanged.
    """
    if tile[:2] != b"\xff\xd8" or tables[:2] != b"\xff\xd8":
        raise CodestreamError("JPEG tile or tables do not start with SOI (FFD8)")
    if _inspect_jpeg(tile).complete:
        return tile
    body = tables[2:-2] if tables.endswith(b"\xff\xd9") else tables[2:]
    return tile[:2] + body + tile[2:]


def unwrap_jp2(data: bytes) -> bytes:
    """The raw JPEG 2000 codestream: DICOM encapsulates codestreams, not JP2 files, so the jp2c box is taken out."""
    if not data.startswith(_JP2_SIGNATURE):
        return data
    pos = 0
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        header = 8
        if length == 1:
            (length,) = struct.unpack(">Q", data[pos + 8 : pos + 16])
            header = 16
        elif length == 0:
            length = len(data) - pos
        if kind == b"jp2c":
            return data[pos + header : pos + length]
        pos += length
    raise CodestreamError("JP2 file without a codestream box (jp2c)")


def _inspect_j2k(data: bytes) -> CodestreamInfo:
    if data[:4] != b"\xff\x4f\xff\x51":
        raise CodestreamError("JPEG 2000 tile does not start with SOC and SIZ (FF4F FF51)")
    (siz_len,) = struct.unpack(">H", data[4:6])
    _rsiz, xsiz, ysiz, xo, yo = struct.unpack(">HIIII", data[6:24])
    (ncomp,) = struct.unpack(">H", data[40:42])
    bits = (data[42] & 0x7F) + 1
    pos = 4 + siz_len  # SIZ marker at byte 2, its length counts itself but not the marker
    mct = reversible = False
    found_cod = False
    while pos + 4 <= len(data):
        marker, length = struct.unpack(">HH", data[pos : pos + 4])
        if marker == 0xFF52:  # COD
            mct = data[pos + 8] == 1
            reversible = data[pos + 13] == 1
            found_cod = True
            break
        if marker == 0xFF90:  # SOT: main header ended without COD
            break
        pos += 2 + length
    if not found_cod:
        raise CodestreamError("JPEG 2000 main header has no COD marker")
    if ncomp == 1:
        photometric = "MONOCHROME2"
    elif not mct:
        photometric = "RGB"
    else:
        photometric = "YBR_RCT" if reversible else "YBR_ICT"
    return CodestreamInfo(
        codec=Codec.JPEG2000,
        width=xsiz - xo,
        height=ysiz - yo,
        components=ncomp,
        bits=bits,
        photometric=photometric,
        complete=True,
        baseline=True,
        reversible=reversible,
    )
