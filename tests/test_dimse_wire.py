"""The C-STORE encodings written and decoded directly (archipel.radiology.dimse.wire) are pynetdicom's."""

from __future__ import annotations

import contextlib
import struct
from io import BytesIO
from typing import Any, cast

import pytest
from pydicom.uid import UID
from pynetdicom.dimse_messages import C_STORE_RQ, C_STORE_RSP, DIMSEMessage
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import create_file_meta, encode, encode_file_meta
from pynetdicom.pdu_primitives import P_DATA

from archipel.radiology.dimse.reactor import DirectStoreMessage, DirectStoreRequest
from archipel.radiology.dimse.wire import StoreRequest, c_store_response, part10_header, store_request

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


def _store_request_command(**extra: object) -> bytes:
    rq = C_STORE()
    rq.MessageID = 7
    rq.AffectedSOPClassUID = CT
    rq.AffectedSOPInstanceUID = INSTANCES[1]
    rq.Priority = 1
    rq.DataSet = BytesIO(b"data")
    for key, value in extra.items():
        setattr(rq, key, value)
    message = C_STORE_RQ()
    message.primitive_to_message(rq)
    return bytes(encode(message.command_set, True, True))


def _pynetdicom_primitive(pdvs: list[list[Any]]) -> C_STORE:
    message = DIMSEMessage()
    pdata = P_DATA()
    pdata.presentation_data_value_list = pdvs
    assert message.decode_msg(pdata)
    return cast(C_STORE, message.message_to_primitive())


@pytest.mark.parametrize("instance", INSTANCES)
def test_a_plain_c_store_request_is_decoded_as_pynetdicom_decodes_it(instance: str) -> None:
    command = _store_request_command(AffectedSOPInstanceUID=instance)
    request = store_request(command)
    assert request == StoreRequest(7, CT, instance, 1)
    # The listener's message: command and data set in one P-DATA, or the data set in two more.
    for pdvs in (
        [[3, b"\x03" + command], [3, b"\x02" + b"data"]],
        [[3, b"\x03" + command]],
    ):
        message = DirectStoreMessage()
        first = P_DATA()
        first.presentation_data_value_list = pdvs
        done = message.decode_msg(first)
        if not done:
            for header, chunk in ((b"\x00", b"da"), (b"\x02", b"ta")):
                more = P_DATA()
                more.presentation_data_value_list = [[3, header + chunk]]
                done = message.decode_msg(more)
        assert done and isinstance(message, DirectStoreRequest)
        ours = message.message_to_primitive()
        theirs = _pynetdicom_primitive([[3, b"\x03" + command], [3, b"\x02data"]])
        for key in ("MessageID", "AffectedSOPClassUID", "AffectedSOPInstanceUID", "Priority", "_context_id"):
            assert getattr(ours, key) == getattr(theirs, key), key
        assert isinstance(ours.AffectedSOPInstanceUID, UID)
        assert cast(BytesIO, ours.DataSet).getvalue() == cast(BytesIO, theirs.DataSet).getvalue() == b"data"
        assert ours.MoveOriginatorApplicationEntityTitle is None


def _with(element: int, value: bytes | None) -> bytes:
    """A plain C-STORE request's command set with one element's value changed (``None``: removed)."""
    command, out, offset = _store_request_command(), [], 0
    while offset < len(command):
        _, tag, length = struct.unpack_from("<HHI", command, offset)
        raw = command[offset + 8 : offset + 8 + length]
        offset += 8 + length
        if tag == element:
            if value is None:
                continue
            raw = value
        out.append(struct.pack("<HHI", 0, tag, len(raw)) + raw)
    return b"".join(out)


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(
            _store_request_command(MoveOriginatorApplicationEntityTitle="MOVER"), id="move-originator"
        ),
        pytest.param(_store_request_command()[:-3], id="truncated"),
        pytest.param(_with(0x1000, None), id="instance-missing"),
        pytest.param(_with(0x1000, b"1.2.826.0.1.3680043.8.498.01"), id="leading-zero-uid"),
        pytest.param(_with(0x1000, b"1.2.826.0.1.3680043.8.498.x2"), id="not-a-uid"),
        pytest.param(_with(0x1000, b"1." * 32 + b"12"), id="uid-over-64"),
        pytest.param(_with(0x0700, b"\x03\x00"), id="priority-3"),
        pytest.param(_with(0x0800, b"\x01\x01"), id="no-data-set"),
        pytest.param(_with(0x0100, b"\x20\x00"), id="c-find-rq"),
        pytest.param(_with(0x0110, b"\x07\x00\x00\x00"), id="message-id-as-ul"),
        pytest.param(b"", id="empty"),
    ],
)
def test_anything_but_a_plain_c_store_request_is_left_to_pynetdicom(command: bytes) -> None:
    assert store_request(command) is None
    message = DirectStoreMessage()
    pdata = P_DATA()
    pdata.presentation_data_value_list = [[1, b"\x03" + command]]
    with contextlib.suppress(Exception):  # what pynetdicom makes of it is pynetdicom's business
        message.decode_msg(pdata)
    assert not isinstance(message, DirectStoreRequest)
