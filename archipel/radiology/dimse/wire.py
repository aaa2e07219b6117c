"""The few DICOM encodings the C-STORE path writes itself instead of building pydicom datasets.

pynetdicom encodes each C-STORE response command set, and the File Meta Information of each received data
set, by building a pydicom dataset (every UID validated, every element converted) and writing it out: per
instance that cost more CPU than parsing the instance's header. Both encodings are fixed and short, so they
are written here directly, byte for byte what pynetdicom writes (tests/test_dimse_wire.py compares them).

The same goes the other way for the command set of a plain C-STORE request (:func:`store_request`): decoding
it through a pydicom dataset and pynetdicom's validating setters cost about 0.7 ms per instance; anything that
is not plain is left to pynetdicom.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

#: PS3.7 E.1: C-STORE-RSP command field, and "no data set follows".
C_STORE_RSP = 0x8001
NO_DATA_SET = 0x0101
_PREAMBLE = b"\x00" * 128 + b"DICM"


def _pad(value: bytes, pad: bytes) -> bytes:
    return value + pad if len(value) % 2 else value


def _implicit(element: int, value: bytes) -> bytes:
    """One Implicit VR Little Endian element of group 0000."""
    return struct.pack("<HHI", 0x0000, element, len(value)) + value


def c_store_response(message_id: int, sop_class_uid: str, sop_instance_uid: str, status: int) -> bytes:
    """The encoded command set of a C-STORE response without Error Comment or Offending Element.

    Elements in tag order, as PS3.7 9.3.1.2 lists them and as pynetdicom writes them.
    """
    body = b"".join(
        (
            _implicit(0x0002, _pad(sop_class_uid.encode("ascii"), b"\x00")),
            _implicit(0x0100, struct.pack("<H", C_STORE_RSP)),
            _implicit(0x0120, struct.pack("<H", message_id)),
            _implicit(0x0800, struct.pack("<H", NO_DATA_SET)),
            _implicit(0x0900, struct.pack("<H", status)),
            _implicit(0x1000, _pad(sop_instance_uid.encode("ascii"), b"\x00")),
        )
    )
    return _implicit(0x0000, struct.pack("<I", len(body))) + body


def command_pdu(context_id: int, command: bytes) -> bytes:
    """A P-DATA-TF PDU carrying ``command`` (an encoded command set) whole, in one PDV (PS3.8 9.3.5, E.2)."""
    # PDV item: length, presentation context ID, message control header 0x03 (command, last fragment).
    item = struct.pack(">LBB", len(command) + 2, context_id, 0x03) + command
    return struct.pack(">BBL", 0x04, 0, len(item)) + item


def _explicit(element: int, vr: bytes, value: bytes) -> bytes:
    """One Explicit VR Little Endian element of group 0002."""
    if vr == b"OB":
        return struct.pack("<HH2sHI", 0x0002, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def part10_header(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> bytes:
    """Preamble, ``DICM`` and File Meta Information for a data set received by C-STORE.

    The same elements and values as pynetdicom's ``Event.encoded_dataset(include_meta=True)``: the SOP
    class and instance from the request, the transfer syntax of the presentation context, and pynetdicom's
    implementation class UID and version name.
    """
    body = b"".join(
        (
            _explicit(0x0001, b"OB", b"\x00\x01"),
            _explicit(0x0002, b"UI", _pad(sop_class_uid.encode("ascii"), b"\x00")),
            _explicit(0x0003, b"UI", _pad(sop_instance_uid.encode("ascii"), b"\x00")),
            _explicit(0x0010, b"UI", _pad(transfer_syntax.encode("ascii"), b"\x00")),
            _explicit(0x0012, b"UI", _pad(PYNETDICOM_IMPLEMENTATION_UID.encode("ascii"), b"\x00")),
            _explicit(0x0013, b"SH", _pad(PYNETDICOM_IMPLEMENTATION_VERSION.encode("ascii"), b" ")),
        )
    )
    return _PREAMBLE + _explicit(0x0000, b"UL", struct.pack("<I", len(body))) + body


#: PS3.7 E.1: C-STORE-RQ command field.
C_STORE_RQ = 0x0001
#: A UID as PS3.5 9.1 allows it: digits and dots, no leading zero in a component, at most 64 characters.
_UID = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")
#: The elements of a plain C-STORE-RQ (PS3.7 9.3.1.1) and their lengths; 0 for a UID of any length.
_STORE_RQ_ELEMENTS = {0x0000: 4, 0x0002: 0, 0x0100: 2, 0x0110: 2, 0x0700: 2, 0x0800: 2, 0x1000: 0}
_REQUIRED = frozenset(_STORE_RQ_ELEMENTS) - {0x0000}


@dataclass(frozen=True, slots=True)
class StoreRequest:
    """The parameters of a plain C-STORE request, decoded from its command set."""

    message_id: int
    sop_class_uid: str
    sop_instance_uid: str
    priority: int


def _uid(value: bytes) -> str | None:
    text = value.rstrip(b"\x00").decode("ascii", "replace")
    if len(text) > 64 or _UID.fullmatch(text) is None:
        return None
    return text


def store_request(command: bytes) -> StoreRequest | None:
    """Decode the command set of a plain C-STORE request, or ``None`` if it is anything else.

    Plain means: Implicit VR Little Endian group 0000 holding only the elements of PS3.7 9.3.1.1 (no Move
    Originator), each once and in order, a data set following, a priority of 0-2 and valid UIDs. ``None``
    leaves the message to pynetdicom's own decoding, which handles (or refuses) everything else.
    """
    values: dict[int, bytes] = {}
    offset, end, last = 0, len(command), -1
    while offset < end:
        if end - offset < 8:
            return None
        group, element, length = struct.unpack_from("<HHI", command, offset)
        offset += 8
        expected = _STORE_RQ_ELEMENTS.get(element)
        if group != 0x0000 or expected is None or element <= last or offset + length > end:
            return None
        if expected and length != expected:
            return None
        values[element] = command[offset : offset + length]
        offset += length
        last = element
    if not values.keys() >= _REQUIRED:
        return None
    (command_field,) = struct.unpack("<H", values[0x0100])
    (message_id,) = struct.unpack("<H", values[0x0110])
    (priority,) = struct.unpack("<H", values[0x0700])
    (data_set_type,) = struct.unpack("<H", values[0x0800])
    if command_field != C_STORE_RQ or data_set_type == NO_DATA_SET or priority > 2:
        return None
    sop_class = _uid(values[0x0002])
    sop_instance = _uid(values[0x1000])
    if sop_class is None or sop_instance is None:
        return None
    return StoreRequest(message_id, sop_class, sop_instance, priority)
