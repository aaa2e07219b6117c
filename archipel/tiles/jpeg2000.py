"""JPEG 2000 codestreams: read the headers that decide the DICOM Photometric Interpretation, decode, encode.

In DICOM the Photometric Interpretation of a JPEG 2000 frame must match what the codestream does: with the
multiple-component transform (COD's MCT flag) the decoder returns RGB from ICT (irreversible, 9/7 wavelet) or
RCT (reversible, 5/3) components, so the frame is ``YBR_ICT`` or ``YBR_RCT``; without it the components are
whatever the encoder was given: RGB, or YCbCr when the scanner converted before encoding (Aperio 33003).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import imagecodecs
import numpy as np

SOC = b"\xff\x4f"
_SIZ, _COD = 0xFF51, 0xFF52
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"


class J2kStreamError(ValueError):
    """The bytes are not a JPEG 2000 codestream we can parse."""


@dataclass(frozen=True)
class J2kHeader:
    """The main-header facts that matter for pass-through: size, components, the first component's bit depth and
    each one's subsampling (SIZ), the multiple-component transform and the wavelet, reversible 5/3 or not (COD)."""

    width: int
    height: int
    components: int
    bits: int
    subsampling: tuple[tuple[int, int], ...]
    mct: bool
    reversible: bool

    @property
    def chroma_subsampled(self) -> bool:
        """Whether some component is stored at a lower resolution than the first."""
        return len(set(self.subsampling)) > 1


def codestream(data: bytes) -> bytes:
    """The raw codestream: ``data`` itself, or the contents of the ``jp2c`` box of a JP2 file."""
    if data.startswith(SOC):
        return data
    if not data.startswith(_JP2_SIGNATURE):
        raise J2kStreamError("neither a J2K codestream (SOC) nor a JP2 file")
    i = 0
    while i + 8 <= len(data):
        length, box = struct.unpack_from(">I4s", data, i)
        header = 8
        if length == 1:
            (length,) = struct.unpack_from(">Q", data, i + 8)
            header = 16
        elif length == 0:
            length = len(data) - i
        if box == b"jp2c":
            return data[i + header : i + length]
        i += length
    raise J2kStreamError("JP2 file without a codestream box")


def header(data: bytes) -> J2kHeader:
    """Parse SIZ and COD from the main header; raise :class:`J2kStreamError` if they are not there."""
    cs = codestream(data)
    i, siz, cod = 2, None, None
    try:
        while i + 4 <= len(cs) and (siz is None or cod is None):
            marker, length = struct.unpack_from(">HH", cs, i)
            if marker == _SIZ:
                xsiz, ysiz, xo, yo = struct.unpack_from(">IIII", cs, i + 6)
                (count,) = struct.unpack_from(">H", cs, i + 38)
                # Per component: Ssiz (sign bit and depth - 1), XRsiz, YRsiz.
                bits = (cs[i + 40] & 0x7F) + 1
                sub = tuple((cs[i + 41 + 3 * k], cs[i + 42 + 3 * k]) for k in range(count))
                siz = (xsiz - xo, ysiz - yo, count, bits, sub)
            elif marker == _COD:
                # Scod(1) progression(1) layers(2) MCT(1) levels(1) cbw(1) cbh(1) cbstyle(1) transform(1)
                mct = cs[i + 8]
                transform = cs[i + 13]
                cod = (mct == 1, transform == 1)
            elif marker == 0xFF90:  # first tile-part: the main header is over
                break
            i += 2 + length
    except (struct.error, IndexError) as exc:
        raise J2kStreamError(f"JPEG 2000 main header ends early: {exc}") from exc
    if siz is None or cod is None:
        raise J2kStreamError("main header without SIZ or COD")
    width, height, count, bits, sub = siz
    return J2kHeader(width, height, count, bits, sub, cod[0], cod[1])


def photometric(info: J2kHeader, components_are_ycbcr: bool = False) -> str:
    """The DICOM Photometric Interpretation for a codestream with this header.

    ``components_are_ycbcr`` says the encoder was given YCbCr (Aperio compression 33003): then, without MCT, the
    frame is ``YBR_FULL`` (``YBR_FULL_422`` when chroma is subsampled).
    """
    if info.components == 1:
        return "MONOCHROME2"
    if info.mct:
        return "YBR_RCT" if info.reversible else "YBR_ICT"
    if components_are_ycbcr:
        return "YBR_FULL_422" if info.chroma_subsampled else "YBR_FULL"
    return "RGB"


def ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    """Full-range BT.601 YCbCr to RGB (the JFIF equations), rounded and clipped to ``uint8``."""
    y = ycc[..., 0].astype(np.float32)
    cb = ycc[..., 1].astype(np.float32) - 128.0
    cr = ycc[..., 2].astype(np.float32) - 128.0
    rgb = np.stack((y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb), axis=-1)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """RGB to full-range BT.601 YCbCr (the JFIF equations), rounded to ``uint8``."""
    f = rgb.astype(np.float32)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    ycc = np.stack(
        (
            0.299 * r + 0.587 * g + 0.114 * b,
            128.0 - 0.168736 * r - 0.331264 * g + 0.5 * b,
            128.0 + 0.5 * r - 0.418688 * g - 0.081312 * b,
        ),
        axis=-1,
    )
    return np.clip(np.rint(ycc), 0, 255).astype(np.uint8)


def decode(data: bytes, components_are_ycbcr: bool = False) -> np.ndarray:
    """Decode to ``uint8`` RGB, converting from YCbCr when the components are YCbCr without MCT."""
    pixels = np.asarray(imagecodecs.jpeg2k_decode(data))
    if components_are_ycbcr and pixels.ndim == 3 and not header(data).mct:
        return ycbcr_to_rgb(pixels)
    return pixels


def encode(pixels: np.ndarray, photometric: str, quality: int = 40) -> bytes:
    """Encode an RGB tile as a raw J2K codestream matching ``photometric``.

    ``YBR_ICT`` (irreversible with MCT, ``quality`` is the target PSNR), ``YBR_RCT`` (lossless with MCT),
    ``RGB`` (irreversible, no MCT) or ``YBR_FULL`` (converted to YCbCr first, no MCT: Aperio 33003 style).
    """
    if photometric == "YBR_RCT":
        return bytes(imagecodecs.jpeg2k_encode(pixels, codecformat="J2K", reversible=True, mct=True))
    if photometric == "YBR_FULL":
        ycc = rgb_to_ycbcr(pixels)
        return bytes(imagecodecs.jpeg2k_encode(ycc, level=quality, codecformat="J2K", mct=False))
    mct = photometric == "YBR_ICT"
    return bytes(imagecodecs.jpeg2k_encode(pixels, level=quality, codecformat="J2K", mct=mct))
