"""What a compressed tile really is: its JPEG or JPEG 2000 header read without decoding.

A tile may be kept as is (a DICOM frame, a tile served unchanged) only if its codestream says what the target's
header will say: its size, whether it decodes alone (an abbreviated JPEG without its tables does not), and the
Photometric Interpretation its colour transform implies. :func:`inspect_codestream` reads just the markers that
decide that, with :mod:`archipel.tiles.jpeg` and :mod:`archipel.tiles.jpeg2000`, so that checking a tile costs
microseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

from archipel.tiles import jpeg, jpeg2000
from archipel.tiles.pyramid import Codec


class CodestreamError(ValueError):
    """The bytes are not a codestream of the kind they claim to be."""


@dataclass(frozen=True)
class CodestreamInfo:
    """The facts about one compressed tile that decide whether it can be kept as is.

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


def inspect_codestream(data: bytes, codec: Codec, components_are_ycbcr: bool = False) -> CodestreamInfo:
    """Read the header of a JPEG or JPEG 2000 tile; raise :class:`CodestreamError` if it is not one.

    ``components_are_ycbcr`` is what the source says of a JPEG 2000 tile without a colour transform (Aperio
    compression 33003 codes YCbCr): the codestream itself cannot tell.
    """
    try:
        if codec == Codec.JPEG:
            f = jpeg.header_frame(data)
            return CodestreamInfo(
                codec, f.width, f.height, len(f.component_ids), f.bits, f.photometric, f.complete, f.baseline
            )
        if codec == Codec.JPEG2000:
            h = jpeg2000.header(data)
            photometric = jpeg2000.photometric(h, components_are_ycbcr)
            return CodestreamInfo(
                codec, h.width, h.height, h.components, h.bits, photometric, True, True, h.reversible
            )
    except (jpeg.JpegStreamError, jpeg2000.J2kStreamError) as exc:
        raise CodestreamError(f"{codec.value} tile: {exc}") from exc
    raise CodestreamError(f"no header reader for codec {codec}")


def bare_codestream(data: bytes, codec: Codec) -> bytes:
    """``data`` as a bare codestream: a JPEG 2000 tile stored as a JP2 file loses its boxes, as DICOM
    encapsulates codestreams, not JP2 files; anything else is returned as is."""
    return jpeg2000.codestream(data) if codec == Codec.JPEG2000 else data
