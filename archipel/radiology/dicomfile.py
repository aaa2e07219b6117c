"""Reading what the index needs from Part-10 bytes, without decoding pixel data.

:func:`parse_part10` validates an incoming object and extracts its query keys and the byte layout of its
pixel data, so that frames can later be served by range reads of the stored blob.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from io import BytesIO
from typing import Any

import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import parse_basic_offsets, parse_fragments
from pydicom.errors import InvalidDicomError

from archipel.radiology.demographics import NO_EXTRAS, PatientExtras, read_extras

PIXEL_DATA = 0x7FE00010
#: The integer keys read by :func:`parse_part10` whose VR is US (binary), not IS (text).
_US_KEYWORDS = frozenset({"Rows", "Columns"})
UNDEFINED_LENGTH = 0xFFFFFFFF

#: Transfer syntaxes the archive accepts and stores (it never transcodes on ingest).
SUPPORTED_TRANSFER_SYNTAXES: tuple[str, ...] = (
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired)
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202",  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203",  # HTJ2K
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.4.100",  # MPEG2
    "1.2.840.10008.1.2.4.102",  # MPEG-4
    "1.2.840.10008.1.2.4.110",  # JPEG XL Lossless
    "1.2.840.10008.1.2.4.112",  # JPEG XL
)


class InvalidInstance(ValueError):
    """An object the archive refuses, with the DICOM failure reason code and a message naming the problem."""

    def __init__(self, reason: str, code: int = 0xC000, http_status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.http_status = http_status


@dataclass(frozen=True)
class ParsedInstance:
    """The index-relevant facts of one Part-10 object."""

    sop_class_uid: str
    sop_uid: str
    study_uid: str
    series_uid: str
    transfer_syntax: str
    patient_id: str
    issuer: str
    patient_name: str
    birth_date: str
    sex: str
    study_date: str
    study_time: str
    accession_number: str
    study_id: str
    referring_physician: str
    study_description: str
    modality: str
    series_number: int | None
    series_description: str
    body_part: str
    performed_start_date: str
    performed_start_time: str
    instance_number: int | None
    rows: int | None
    columns: int | None
    number_of_frames: int
    pixel_data_offset: int | None
    pixel_data_length: int | None
    frame_fragments: list[list[tuple[int, int]]] | None = field(default=None)
    #: Birth name, address, phone and INS, for the master patient index.
    extras: PatientExtras = NO_EXTRAS

    def frame_index_json(self) -> str | None:
        """The per-frame fragment list as compact JSON (``None`` for native pixel data)."""
        if self.frame_fragments is None:
            return None
        return json.dumps(self.frame_fragments, separators=(",", ":"))


#: VRs whose raw value, when plain ASCII and single-valued, is exactly the text pydicom would decode.
_TEXT_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UT"}
)


#: PS3.5 9.1: numeric components without leading zeros, separated by dots (what pydicom's UID.is_valid checks).
_VALID_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*\Z")


@lru_cache(maxsize=256)
def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    return tag


def _raw(ds: Dataset, keyword: str) -> tuple[bool, RawDataElement | None, bytes]:
    """Whether the element is present and, if it was not decoded yet, the element as read and its bytes.

    Reading a few dozen keys through pydicom's value conversion costs more than the rest of the parse, so
    the common case (an undecoded element with a plain value) is read straight from its bytes.
    """
    elem = ds.get_item(_tag(keyword))
    if elem is None:
        return False, None, b""
    if isinstance(elem, RawDataElement) and isinstance(elem.value, bytes):
        return True, elem, elem.value
    return True, None, b""


def _ascii(elem: RawDataElement, value: bytes) -> str | None:
    """The value of a raw text element when it is unambiguous: one value, ASCII only, no escape sequence."""
    if elem.VR not in _TEXT_VRS and elem.VR is not None:
        return None
    if not value.isascii() or b"\\" in value or b"\x1b" in value:
        return None
    return value.decode("ascii")


def _text(ds: Dataset, keyword: str, limit: int = 64) -> str:
    present, raw, data = _raw(ds, keyword)
    if not present:
        return ""
    if raw is not None:
        text = _ascii(raw, data)
        if text is not None:
            return text.strip("\x00 ")[:limit]
    value: Any = ds.get(keyword, "")
    if value is None:
        return ""
    text = str(value).strip("\x00 ")
    return text[:limit]


def _int(ds: Dataset, keyword: str) -> int | None:
    present, raw, data = _raw(ds, keyword)
    if not present:
        return None
    if raw is not None:
        if keyword in _US_KEYWORDS and raw.VR in ("US", None) and len(data) == 2:
            return int.from_bytes(data, "little" if raw.is_little_endian else "big")
        text = _ascii(raw, data)
        if text is not None and text.strip("\x00 ").isdigit():
            return int(text.strip("\x00 "))
    value = ds.get(keyword)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _require_uid(ds: Dataset, keyword: str) -> str:
    value = _text(ds, keyword, 128)
    if not value:
        raise InvalidInstance(f"missing {keyword}", code=0xA900)
    if len(value) > 64 or not _VALID_UID.match(value):
        raise InvalidInstance(f"invalid {keyword} {value!r}", code=0xA900)
    return value


def read_dataset(data: bytes) -> Dataset:
    """Read Part-10 bytes into a dataset whose elements stay raw until accessed.

    Raises :class:`InvalidInstance` for anything that is not a complete Part-10 object.
    """
    if len(data) < 132 or data[128:132] != b"DICM":
        raise InvalidInstance("not a DICOM Part-10 file (no DICM prefix)", code=0xC000)
    try:
        return pydicom.dcmread(BytesIO(data), force=False)
    except InvalidDicomError as exc:
        raise InvalidInstance(f"not a valid DICOM file: {exc}") from exc
    except (EOFError, ValueError, KeyError, OSError, NotImplementedError) as exc:
        raise InvalidInstance(f"unreadable DICOM file: {exc}") from exc


def parse_part10(data: bytes, default_issuer: str = "") -> ParsedInstance:
    """Validate Part-10 bytes and extract what the index stores.

    ``default_issuer`` is used when the object carries no Issuer of Patient ID: it is the sending site.
    """
    ds = read_dataset(data)
    meta = ds.file_meta
    ts = str(meta.get("TransferSyntaxUID", "") or "")
    if not ts:
        raise InvalidInstance("missing TransferSyntaxUID in the file meta information")
    if ts not in SUPPORTED_TRANSFER_SYNTAXES:
        raise InvalidInstance(f"unsupported transfer syntax {ts}", code=0xC122, http_status=415)
    try:
        sop_class = _require_uid(ds, "SOPClassUID")
        sop_uid = _require_uid(ds, "SOPInstanceUID")
        study_uid = _require_uid(ds, "StudyInstanceUID")
        series_uid = _require_uid(ds, "SeriesInstanceUID")
        meta_class = str(meta.get("MediaStorageSOPClassUID", "") or "")
        if meta_class and meta_class != sop_class:
            raise InvalidInstance(
                f"MediaStorageSOPClassUID {meta_class} differs from SOPClassUID {sop_class}", code=0xA900
            )
        meta_sop = str(meta.get("MediaStorageSOPInstanceUID", "") or "")
        if meta_sop and meta_sop != sop_uid:
            raise InvalidInstance(
                f"MediaStorageSOPInstanceUID {meta_sop} differs from SOPInstanceUID {sop_uid}", code=0xA900
            )
        offset, length, spans = _pixel_layout(ds, data, ts)
        frames = _int(ds, "NumberOfFrames") or (1 if offset is not None else 0)
        fragments = _group_frames(spans, frames, data, offset) if spans is not None else None
        return ParsedInstance(
            sop_class_uid=sop_class,
            sop_uid=sop_uid,
            study_uid=study_uid,
            series_uid=series_uid,
            transfer_syntax=ts,
            patient_id=_text(ds, "PatientID"),
            issuer=_text(ds, "IssuerOfPatientID") or default_issuer,
            patient_name=_text(ds, "PatientName", 324),
            birth_date=_text(ds, "PatientBirthDate", 8),
            sex=_text(ds, "PatientSex", 16),
            study_date=_text(ds, "StudyDate", 8),
            study_time=_text(ds, "StudyTime", 16),
            accession_number=_text(ds, "AccessionNumber", 16),
            study_id=_text(ds, "StudyID", 16),
            referring_physician=_text(ds, "ReferringPhysicianName", 324),
            study_description=_text(ds, "StudyDescription"),
            modality=_text(ds, "Modality", 16),
            series_number=_int(ds, "SeriesNumber"),
            series_description=_text(ds, "SeriesDescription"),
            body_part=_text(ds, "BodyPartExamined", 16),
            performed_start_date=_text(ds, "PerformedProcedureStepStartDate", 8),
            performed_start_time=_text(ds, "PerformedProcedureStepStartTime", 16),
            instance_number=_int(ds, "InstanceNumber"),
            rows=_int(ds, "Rows"),
            columns=_int(ds, "Columns"),
            number_of_frames=frames,
            pixel_data_offset=offset,
            pixel_data_length=length,
            frame_fragments=fragments,
            extras=read_extras(ds),
        )
    except InvalidInstance:
        raise
    except Exception as exc:  # any decode error of a malformed element
        raise InvalidInstance(f"malformed data set: {exc}") from exc


def _pixel_layout(
    ds: Dataset, data: bytes, ts: str
) -> tuple[int | None, int | None, list[tuple[int, int]] | None]:
    """Offset and length of the Pixel Data value, and for encapsulated data the absolute fragment spans."""
    if PIXEL_DATA not in ds:
        return None, None, None
    raw = ds.get_item(PIXEL_DATA)
    if not isinstance(raw, RawDataElement) or raw.value_tell is None:
        return None, None, None
    offset = int(raw.value_tell)
    if raw.length != UNDEFINED_LENGTH:
        # In a deflated data set the offset counts in the inflated stream, not in the stored bytes, so it
        # cannot be checked against them (readers of deflated objects decode the whole file).
        if ts != "1.2.840.10008.1.2.1.99" and offset + raw.length > len(data):
            raise InvalidInstance("truncated file: Pixel Data runs past the end of the data")
        return offset, int(raw.length), None
    if ts == "1.2.840.10008.1.2.1.99":
        raise InvalidInstance("encapsulated pixel data in a deflated data set is not supported")
    buffer = BytesIO(data)
    buffer.seek(offset)
    try:
        parse_basic_offsets(buffer)
        count, rel_offsets = parse_fragments(buffer)
    except (ValueError, EOFError) as exc:
        raise InvalidInstance(f"malformed encapsulated Pixel Data: {exc}") from exc
    spans: list[tuple[int, int]] = []
    for item_offset in rel_offsets:
        length = int.from_bytes(data[item_offset + 4 : item_offset + 8], "little")
        start = item_offset + 8
        if start + length > len(data):
            raise InvalidInstance("truncated file: a Pixel Data fragment runs past the end of the data")
        spans.append((start, length))
    del count
    return offset, -1, spans


def _group_frames(
    spans: list[tuple[int, int]], frames: int, data: bytes, pixel_offset: int | None
) -> list[list[tuple[int, int]]]:
    """Group fragment spans into frames: one per fragment, by Basic Offset Table, or all into one frame."""
    if frames <= 1:
        return [spans]
    if len(spans) == frames:
        return [[s] for s in spans]
    assert pixel_offset is not None
    buffer = BytesIO(data)
    buffer.seek(pixel_offset)
    bot = parse_basic_offsets(buffer)
    if len(bot) == frames and spans:
        first_item = spans[0][0] - 8
        grouped: list[list[tuple[int, int]]] = [[] for _ in range(frames)]
        for start, length in spans:
            rel = start - 8 - first_item
            index = max(i for i, b in enumerate(bot) if b <= rel)
            grouped[index].append((start, length))
        return grouped
    raise InvalidInstance(
        f"cannot map {len(spans)} fragments to {frames} frames without a Basic Offset Table"
    )
