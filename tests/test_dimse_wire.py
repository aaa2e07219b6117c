"""The C-STORE encodings written directly (archipel.radiology.dimse.wire) are byte for byte pynetdicom's."""

from __future__ import annotations

import pytest
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import create_file_meta, encode, encode_file_meta

from archipel.radiology.dimse.wire import c_store_response, part10_header

CT = "1.2.840.10008.5.1.4.1.1.2"
# Odd and even lengths: UIs are padded with a NUL byte to an even length.
INSTANCES = ["1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.12"]


@pytest.mark.parametrize("instance", INSTANCES)
@pytest.mark.parametrize("status", [0x0000, 0xB000])
def test_c_store_response_command_set_is_what_pynetdicom_encodes(instance: str, status: int) -> None:
    rsp = C_STORE()
    rsp.MessageID = rsp.MessageIDBeingRespondedTo = 513
    rsp.AffectedSOPClassUID = CT
    rsp.AffectedSOPInstanceUID = instance
    rsp.Status = status
    message = C_STORE_RSP()
    message.primitive_to_message(rsp)
    assert c_store_response(513, CT, instance, status) == encode(message.command_set, True, True)


@pytest.mark.parametrize("instance", INSTANCES)
@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.201"])
def test_part10_header_is_what_pynetdicom_prepends_to_a_received_data_set(instance: str, syntax: str) -> None:
    meta = create_file_meta(sop_class_uid=CT, sop_instance_uid=instance, transfer_syntax=syntax)
    assert part10_header(CT, instance, syntax) == b"\x00" * 128 + b"DICM" + encode_file_meta(meta)
