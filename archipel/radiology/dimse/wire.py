"""The few DICOM encodings the C-STORE path writes itself instead of building pydicom datasets.

pynetdicom encodes each C-STORE response command set, and the File Meta Information of each received data
set, by building a pydicom dataset (every UID validated, every element converted) and writing it out: per
instance that cost more CPU than parsing the instance's header. Both encodings are fixed and short, so they
are written here directly, byte for byte what pynetdicom writes (tests/test_dimse_wire.py compares them).
"""

from __future__ import annotations

import struct

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
