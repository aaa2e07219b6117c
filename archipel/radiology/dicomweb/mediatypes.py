"""Media types of DICOMweb (PS3.18 §8.7): parsing ``Accept`` and ``Content-Type``, and the media type of a
transfer syntax's pixel data.

The archive never transcodes, so negotiation here only decides whether what is stored is acceptable; it never
picks a conversion.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"

#: Transfer syntaxes whose pixel data is native (not encapsulated).
NATIVE_TRANSFER_SYNTAXES = frozenset(
    {
        IMPLICIT_VR_LITTLE_ENDIAN,
        EXPLICIT_VR_LITTLE_ENDIAN,
        DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
        EXPLICIT_VR_BIG_ENDIAN,
    }
)

#: Media type of one frame of pixel data, by transfer syntax (PS3.18 Table 8.7.3-2 and -3).
_FRAME_MEDIA_TYPES: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
    "1.2.840.10008.1.2.4.100": "video/mpeg2",
    "1.2.840.10008.1.2.4.101": "video/mpeg2",
    "1.2.840.10008.1.2.4.102": "video/mp4",
    "1.2.840.10008.1.2.4.103": "video/mp4",
    "1.2.840.10008.1.2.4.104": "video/mp4",
    "1.2.840.10008.1.2.4.105": "video/mp4",
    "1.2.840.10008.1.2.4.106": "video/mp4",
    "1.2.840.10008.1.2.4.110": "image/jxl",
    "1.2.840.10008.1.2.4.111": "image/jxl",
    "1.2.840.10008.1.2.4.112": "image/jxl",
}

_TOKEN = re.compile(r'\s*(?:"((?:[^"\\]|\\.)*)"|([^;,="\s]+))\s*')


@dataclass(frozen=True)
class MediaRange:
    """One media range of an ``Accept`` header (or a parsed ``Content-Type``), parameters lower-cased by name."""

    media_type: str
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    @property
    def is_multipart(self) -> bool:
        """Whether this asks for a ``multipart/related`` (or ``multipart/*``) body."""
        return self.media_type in ("multipart/related", "multipart/*")

    @property
    def part_type(self) -> str:
        """The media type of the parts: the ``type`` parameter of a multipart range, else the range itself."""
        if self.is_multipart:
            return self.params.get("type", "").lower()
        return self.media_type

    @property
    def transfer_syntax(self) -> str | None:
        """The ``transfer-syntax`` parameter, if given."""
        return self.params.get("transfer-syntax")


def parse_media_ranges(header: str | None) -> list[MediaRange]:
    """Parse an ``Accept`` header into media ranges, best first (by ``q``, then order); ``q=0`` is dropped.

    Commas inside quoted parameter values (``type="a/b, c/d"`` is rare, but legal) do not split ranges.
    """
    if not header or not header.strip():
        return []
    ranges: list[tuple[float, int, MediaRange]] = []
    for position, text in enumerate(_split_outside_quotes(header, ",")):
        parsed = parse_media_type(text)
        if parsed is None or parsed.q <= 0:
            continue
        ranges.append((-parsed.q, position, parsed))
    ranges.sort(key=lambda item: (item[0], item[1]))
    return [r for _, _, r in ranges]


def parse_media_type(text: str) -> MediaRange | None:
    """Parse one media type with parameters (``multipart/related; type="application/dicom"``)."""
    pieces = _split_outside_quotes(text, ";")
    if not pieces or "/" not in pieces[0]:
        return None
    media_type = pieces[0].strip().lower()
    params: dict[str, str] = {}
    q = 1.0
    for piece in pieces[1:]:
        name, sep, raw = piece.partition("=")
        if not sep:
            continue
        value = raw.strip()
        match = _TOKEN.fullmatch(value)
        if match and match.group(1) is not None:
            value = match.group(1).replace('\\"', '"')
        key = name.strip().lower()
        if key == "q":
            try:
                q = float(value)
            except ValueError:
                q = 0.0
        else:
            params[key] = value
    return MediaRange(media_type, params, q)


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    out: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == separator and not quoted:
            out.append("".join(current))
            current = []
        else:
            current.append(ch)
    out.append("".join(current))
    return [piece for piece in out if piece.strip()]


def frame_media_type(transfer_syntax: str) -> str:
    """Media type of one frame stored with ``transfer_syntax`` (``application/octet-stream`` when native)."""
    if transfer_syntax in NATIVE_TRANSFER_SYNTAXES:
        return "application/octet-stream"
    return _FRAME_MEDIA_TYPES.get(transfer_syntax, "application/octet-stream")


def _type_matches(wanted: str, actual: str) -> bool:
    if wanted in ("", "*/*", actual):
        return True
    major, _, minor = wanted.partition("/")
    return minor == "*" and actual.split("/", 1)[0] == major


def _syntax_matches(wanted: str | None, stored: str, default: str) -> bool:
    if wanted == "*":
        return True
    requested = wanted or default
    if requested == stored:
        return True
    # Native little-endian frames are the same bytes whether the data set was implicit or explicit VR.
    native_le = {IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN, DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN}
    return requested == EXPLICIT_VR_LITTLE_ENDIAN and stored in native_le


def accepts_instances(ranges: list[MediaRange], stored: set[str]) -> bool:
    """Whether ``multipart/related; type="application/dicom"`` with every syntax in ``stored`` is acceptable.

    A range without ``transfer-syntax`` is taken to accept what is stored: the archive keeps original bytes and
    never transcodes, and common clients (dicomweb-client, OHIF) leave the parameter out.
    """
    if not ranges:
        return True
    for r in ranges:
        if r.media_type in ("*/*", "multipart/*") and not r.params:
            return True
        if not (r.is_multipart or r.media_type == "application/dicom"):
            continue
        if not _type_matches(r.part_type, "application/dicom"):
            continue
        wanted = r.transfer_syntax
        if wanted in (None, "*") or stored <= {wanted}:
            return True
    return False


def accepts_frames(ranges: list[MediaRange], transfer_syntax: str) -> bool:
    """Whether frames as stored (media type of ``transfer_syntax``, no transcoding) are acceptable.

    ``application/octet-stream`` without ``transfer-syntax`` means native Explicit VR Little Endian, as the
    standard defaults it; ``transfer-syntax=*`` accepts any stored encoding (OHIF's request).
    """
    if not ranges:
        return True
    actual = frame_media_type(transfer_syntax)
    for r in ranges:
        if r.media_type in ("*/*", "multipart/*") and not r.params:
            return True
        wanted_type = r.part_type
        if wanted_type in ("", "*/*"):
            return True
        if wanted_type == "application/octet-stream" and r.transfer_syntax == "*":
            return True
        if not _type_matches(wanted_type, actual):
            continue
        default = EXPLICIT_VR_LITTLE_ENDIAN if actual == "application/octet-stream" else transfer_syntax
        if _syntax_matches(r.transfer_syntax, transfer_syntax, default):
            return True
    return False


def wants_single_part(ranges: list[MediaRange], media_type: str) -> bool:
    """Whether the best acceptable range asks for a bare ``media_type`` body rather than a multipart one."""
    for r in ranges:
        if r.is_multipart:
            return False
        if r.media_type == media_type:
            return True
    return False
