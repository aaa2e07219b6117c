"""C-MOVE and C-GET with real dcmtk peers: what arrives is byte-identical to what was stored.

Byte identity is checked on the data set: the bytes after the group 0002 file meta information. The meta is
not compared, by design: the archive keeps the meta pynetdicom builds on receipt, and storescp / getscu
write their own (their implementation UID, the sending AE title). For every retrieved instance we compare
the SHA-256 of the data set part of (a) the file the peer wrote, (b) the blob the archive stored, and (c)
the file originally sent; all three must be equal.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, _config, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)
from sqlalchemy import select

from archipel.platform import audit
from archipel.radiology.samples import CT_IMAGE, SyntheticPatient, ct_series, to_bytes
from tests.dimse_peers import (
    StoreSCP,
    archive_look,
    dataset_part,
    dcmtk,
    files_by_sop_uid,
    scu,
    sha256,
    storescp,
    write_files,
    wsi_instance,
)
from tests.support import ArchipelServer

STUDY_MOVE = str(StudyRootQueryRetrieveInformationModelMove)
STUDY_GET = str(StudyRootQueryRetrieveInformationModelGet)
PATIENT_GET = str(PatientRootQueryRetrieveInformationModelGet)


def with_group_length(data: bytes) -> bytes:
    """``data`` with a (0008,0000) group length element in front of the data set, as old modalities send.

    pydicom drops group lengths when it re-encodes, so this instance tells sending-as-stored apart from
    sending-re-encoded. The value is the true length, which dcmtk keeps when it recomputes it.
    """
    body = dataset_part(data)
    end = 0
    while struct.unpack_from("<H", body, end)[0] == 0x0008:
        if body[end + 4 : end + 6] in (b"OB", b"OW", b"SQ", b"UN", b"UT", b"UC", b"UR"):
            end += 12 + struct.unpack_from("<I", body, end + 8)[0]
        else:
            end += 8 + struct.unpack_from("<H", body, end + 6)[0]
    group8 = struct.pack("<HH2sHI", 0x0008, 0x0000, b"UL", 4, end)
    return data[: len(data) - len(body)] + group8 + body


@pytest.fixture(scope="module")
def study(server: ArchipelServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A stored study of SITE-A: CT slices (one with a group length element) and a JPEG slide image.

    Returns the original files by SOP Instance UID.
    """
    folder = tmp_path_factory.mktemp("study")
    patient = SyntheticPatient("RET0001", "RETRIEVE^Test", "19600101", "F", issuer="SITE-A")
    cts = ct_series(patient, 4, rows=64, cols=64)
    slide = wsi_instance(patient)
    slide.StudyInstanceUID = cts[0].StudyInstanceUID
    files = write_files(folder, [*cts, slide])
    files[0].write_bytes(with_group_length(files[0].read_bytes()))
    peer = ("-aec", server.aet, "127.0.0.1", str(server.dicom_port))
    assert dcmtk("storescu", "-R", *peer, *map(str, files[:-1])).returncode == 0
    assert dcmtk("storescu", "-R", "-xy", *peer, str(files[-1])).returncode == 0
    return {f.name.removesuffix(".dcm"): f for f in files}


def study_uid(study: dict[str, Path]) -> str:
    from pydicom import dcmread

    return str(dcmread(next(iter(study.values())), stop_before_pixels=True).StudyInstanceUID)


def assert_identical(received: dict[str, bytes], study: dict[str, Path], server: ArchipelServer) -> None:
    """Every instance of ``study`` arrived, with the data set bytes stored and originally sent."""
    assert set(received) == set(study)
    with archive_look(server) as look:
        for sop_uid, data in received.items():
            stored = look.blob(sop_uid)
            sent = study[sop_uid].read_bytes()
            assert sha256(dataset_part(data)) == sha256(dataset_part(stored)) == sha256(dataset_part(sent))


def test_stored_data_set_keeps_its_group_length(server: ArchipelServer, study: dict[str, Path]) -> None:
    first = next(iter(study))
    with archive_look(server) as look:
        assert dataset_part(look.blob(first))[:4] == b"\x08\x00\x00\x00"


def _move_failure(stderr: str, dest: StoreSCP, server: ArchipelServer) -> str:
    """What a failed C-MOVE left behind: movescu's output, the destination's log and the archive's."""
    return f"movescu: {stderr}\nstorescp: {dest.log_tail()}\narchipel: {server.log.read_text()[-3000:]}"


def test_movescu_to_storescp_delivers_the_study_byte_identical(
    server: ArchipelServer, study: dict[str, Path], tmp_path: Path
) -> None:
    with storescp(tmp_path / "received") as dest:
        server.add_node(dest.aet, port=dest.port)
        run = dcmtk(
            "movescu",
            "-S",
            "-aem",
            dest.aet,
            "-aec",
            server.aet,
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={study_uid(study)}",
            "127.0.0.1",
            str(server.dicom_port),
        )
        assert run.returncode == 0, _move_failure(run.stderr, dest, server)
        assert_identical(dest.received(), study, server)


def test_patient_root_movescu_by_patient_id_delivers_every_instance(
    server: ArchipelServer, study: dict[str, Path], tmp_path: Path
) -> None:
    with storescp(tmp_path / "received", aet="PATIENTSCP") as dest:
        server.add_node(dest.aet, port=dest.port)
        run = dcmtk(
            "movescu",
            "-P",
            "-aem",
            dest.aet,
            "-aec",
            server.aet,
            "-k",
            "QueryRetrieveLevel=PATIENT",
            "-k",
            "PatientID=RET0001",
            "127.0.0.1",
            str(server.dicom_port),
        )
        assert run.returncode == 0, _move_failure(run.stderr, dest, server)
        assert_identical(dest.received(), study, server)


def test_move_counts_every_sub_operation_and_audits_once(
    server: ArchipelServer, study: dict[str, Path], tmp_path: Path
) -> None:
    with storescp(tmp_path / "received", aet="COUNTSCP") as dest:
        server.add_node(dest.aet, port=dest.port)
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = study_uid(study)
        assoc = scu(server, [(STUDY_MOVE, [ExplicitVRLittleEndian])])
        try:
            responses = [(int(s.Status), s) for s, _ in assoc.send_c_move(identifier, dest.aet, STUDY_MOVE)]
        finally:
            assoc.release()
    pending = [s for code, s in responses if code == 0xFF00]
    assert [s.NumberOfRemainingSuboperations for s in pending] == list(range(len(study) - 1, -1, -1))
    final = responses[-1][1]
    assert final.Status == 0x0000
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (len(study), 0)
    assert final.NumberOfWarningSuboperations == 0
    with archive_look(server) as look, look.db.sessions() as s:
        events = (
            s.execute(
                select(audit.AuditEvent).where(
                    audit.AuditEvent.event_type == audit.INSTANCES_TRANSFERRED,
                    audit.AuditEvent.actor == "PYNETDICOM",
                    audit.AuditEvent.object.contains("COUNTSCP"),
                )
            )
            .scalars()
            .all()
        )
    assert len(events) == 1
    assert events[0].patient == "SITE-A/RET0001"
    assert f"instances={len(study)}" in events[0].object


def test_move_to_an_unknown_destination_fails_with_a801(
    server: ArchipelServer, study: dict[str, Path]
) -> None:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study_uid(study)
    assoc = scu(server, [(STUDY_MOVE, [ExplicitVRLittleEndian])])
    try:
        statuses = [int(s.Status) for s, _ in assoc.send_c_move(identifier, "NOWHERE", STUDY_MOVE)]
    finally:
        assoc.release()
    assert statuses == [0xA801]


def test_movescu_can_cancel_a_move(server: ArchipelServer, tmp_path: Path) -> None:
    patient = SyntheticPatient("CAN0001", "CANCEL^Test", "19600101", "M", issuer="SITE-A")
    cts = ct_series(patient, 40, rows=256, cols=256)
    files = write_files(tmp_path / "sent", cts)
    assert (
        dcmtk(
            "storescu", "-aec", server.aet, "127.0.0.1", str(server.dicom_port), *map(str, files)
        ).returncode
        == 0
    )
    with storescp(tmp_path / "received", aet="CANCELSCP") as dest:
        server.add_node(dest.aet, port=dest.port)
        run = dcmtk(
            "movescu",
            "-v",
            "-S",
            "--cancel",
            "2",
            "-aem",
            dest.aet,
            "-aec",
            server.aet,
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={cts[0].StudyInstanceUID}",
            "127.0.0.1",
            str(server.dicom_port),
        )
        out = run.stdout + run.stderr
        assert "Received Final Move Response (Cancel" in out, out
        assert 0 < len(dest.received()) < len(cts)
    assert dcmtk("echoscu", "-aec", server.aet, "127.0.0.1", str(server.dicom_port)).returncode == 0


def test_getscu_retrieves_a_series_byte_identical(
    server: ArchipelServer, study: dict[str, Path], tmp_path: Path
) -> None:
    from pydicom import dcmread

    cts = {
        uid: path for uid, path in study.items() if dcmread(path, stop_before_pixels=True).Modality == "CT"
    }
    series_uid = dcmread(next(iter(cts.values())), stop_before_pixels=True).SeriesInstanceUID
    out = tmp_path / "got"
    out.mkdir()
    run = dcmtk(
        "getscu",
        "-S",
        "+B",
        "-od",
        str(out),
        "-aec",
        server.aet,
        "-k",
        "QueryRetrieveLevel=SERIES",
        "-k",
        f"SeriesInstanceUID={series_uid}",
        "127.0.0.1",
        str(server.dicom_port),
    )
    assert run.returncode == 0, run.stderr
    assert_identical(files_by_sop_uid(out), cts, server)


def c_get(
    server: ArchipelServer, identifier: Dataset, model: str = STUDY_GET, ae_title: str = "PYNETDICOM"
) -> tuple[list[Dataset], list[bytes]]:
    """C-GET with pynetdicom; returns the responses and the data set bytes received."""
    received: list[bytes] = []

    def on_store(event: evt.Event) -> int:
        received.append(event.encoded_dataset(include_meta=False))
        return 0x0000

    ae = AE(ae_title=ae_title)
    ae.add_requested_context(model)
    ae.add_requested_context(CT_IMAGE, [ExplicitVRLittleEndian])
    assoc = ae.associate(
        "127.0.0.1",
        server.dicom_port,
        ae_title=server.aet,
        ext_neg=[build_role(CT_IMAGE, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    try:
        responses = [status for status, _ in assoc.send_c_get(identifier, model)]
    finally:
        assoc.release()
    return responses, received


def test_get_with_an_identifier_that_does_not_fit_fails_with_a900(server: ArchipelServer) -> None:
    no_key = Dataset()
    no_key.QueryRetrieveLevel = "SERIES"
    patient_level = Dataset()
    patient_level.QueryRetrieveLevel = "PATIENT"
    patient_level.PatientID = "RET0001"
    for identifier, reason in ((no_key, "SeriesInstanceUID"), (patient_level, "QueryRetrieveLevel")):
        responses, received = c_get(server, identifier)
        assert int(responses[-1].Status) == 0xA900
        assert reason in responses[-1].ErrorComment
        assert received == []


def test_patient_root_get_by_patient_id(server: ArchipelServer, study: dict[str, Path]) -> None:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "PATIENT"
    identifier.PatientID = "RET0001"
    responses, received = c_get(server, identifier, PATIENT_GET)
    assert int(responses[-1].Status) == 0xB000  # the slide image has no CT context on this association
    assert int(responses[-1].NumberOfCompletedSuboperations) == len(study) - 1
    assert int(responses[-1].NumberOfFailedSuboperations) == 1
    originals = {sha256(dataset_part(p.read_bytes())) for p in study.values()}
    assert {sha256(d) for d in received} < originals


@pytest.fixture(scope="module")
def other_site_study(server: ArchipelServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A study of SITE-B, stored by a SITE-B node; yields its Study Instance UID."""
    server.add_node("SITEBSCU", site="SITE-B")
    patient = SyntheticPatient("B000001", "OTHER^Site", "19700101", "F", issuer="SITE-B")
    cts = ct_series(patient, 2, rows=32, cols=32)
    files = write_files(tmp_path_factory.mktemp("site-b"), cts)
    run = dcmtk(
        "storescu",
        "-aet",
        "SITEBSCU",
        "-aec",
        server.aet,
        "127.0.0.1",
        str(server.dicom_port),
        *map(str, files),
    )
    assert run.returncode == 0, run.stderr
    yield str(cts[0].StudyInstanceUID)


def test_a_node_retrieves_only_its_own_sites_data(server: ArchipelServer, other_site_study: str) -> None:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = other_site_study
    responses, received = c_get(server, identifier)
    assert int(responses[-1].Status) == 0x0000
    assert received == []


def test_a_regional_consumer_retrieves_every_sites_data(
    server: ArchipelServer, other_site_study: str
) -> None:
    server.add_node("REGIONAL", site="REGION", regional=True)
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = other_site_study
    responses, received = c_get(server, identifier, ae_title="REGIONAL")
    assert int(responses[-1].Status) == 0x0000
    assert len(received) == 2


def test_a_move_never_hands_data_to_a_node_that_may_not_see_it(
    server: ArchipelServer, study: dict[str, Path], tmp_path: Path
) -> None:
    with storescp(tmp_path / "received", aet="SITEBSCP") as dest:
        server.add_node(dest.aet, port=dest.port, site="SITE-B")
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = study_uid(study)
        assoc = scu(server, [(STUDY_MOVE, [ExplicitVRLittleEndian])])
        try:
            final = [s for s, _ in assoc.send_c_move(identifier, dest.aet, STUDY_MOVE)][-1]
        finally:
            assoc.release()
        assert int(final.Status) == 0x0000
        assert int(final.NumberOfCompletedSuboperations) == 0
        assert dest.received() == {}


def test_a_missing_blob_is_a_failed_sub_operation_not_a_crash(
    server: ArchipelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    patient = SyntheticPatient("MIS0001", "MISSING^Blob", "19600101", "M", issuer="SITE-A")
    cts = ct_series(patient, 3, rows=32, cols=32)
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    files = write_files(tmp_path, cts)
    assoc = scu(server, [(CT_IMAGE, [ExplicitVRLittleEndian])])
    try:
        assert all(assoc.send_c_store(f).Status == 0 for f in files)
    finally:
        assoc.release()
    with archive_look(server) as look:
        lost = look.instances()[cts[1].SOPInstanceUID]
        look.blobs.path(lost.blob_key).unlink()
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "SERIES"
    identifier.SeriesInstanceUID = cts[0].SeriesInstanceUID
    responses, received = c_get(server, identifier)
    final = responses[-1]
    assert int(final.Status) == 0xB000
    assert (int(final.NumberOfCompletedSuboperations), int(final.NumberOfFailedSuboperations)) == (2, 1)
    assert {sha256(r) for r in received} == {sha256(dataset_part(to_bytes(cts[i]))) for i in (0, 2)}


def test_move_with_an_identifier_that_does_not_fit_fails_with_a900(
    server: ArchipelServer, tmp_path: Path
) -> None:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "IMAGE"
    with storescp(tmp_path / "received", aet="BADIDSCP") as dest:
        server.add_node(dest.aet, port=dest.port)
        assoc = scu(server, [(STUDY_MOVE, [ExplicitVRLittleEndian])])
        try:
            final = [s for s, _ in assoc.send_c_move(identifier, dest.aet, STUDY_MOVE)][-1]
        finally:
            assoc.release()
        assert int(final.Status) == 0xA900
        assert "SOPInstanceUID" in final.ErrorComment
        assert dest.received() == {}


def test_a_destination_that_only_takes_implicit_vr_gets_a_converted_copy(
    server: ArchipelServer, study: dict[str, Path], tmp_path: Path
) -> None:
    from pydicom import dcmread

    ct_uid, ct_file = next(
        (u, p) for u, p in study.items() if dcmread(p, stop_before_pixels=True).Modality == "CT"
    )
    with storescp(tmp_path / "received", aet="IMPLICITSCP", syntaxes="+xi") as dest:
        server.add_node(dest.aet, port=dest.port)
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "IMAGE"
        identifier.SOPInstanceUID = ct_uid
        assoc = scu(server, [(STUDY_MOVE, [ExplicitVRLittleEndian])])
        try:
            final = [s for s, _ in assoc.send_c_move(identifier, dest.aet, STUDY_MOVE)][-1]
        finally:
            assoc.release()
        assert int(final.Status) == 0x0000
        received = dcmread(BytesIO(dest.received()[ct_uid]))
    assert received.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2"
    assert received.PixelData == dcmread(ct_file).PixelData
