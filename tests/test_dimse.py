"""The DICOM listener with real dcmtk peers: verification, storage of every kind we accept, and refusals."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian
from pynetdicom import AE, _config
from sqlalchemy import select

from archipel.platform import access, audit
from archipel.platform.access_terms import Decision
from archipel.platform.runtime import Runtime
from archipel.radiology.dicomfile import SUPPORTED_TRANSFER_SYNTAXES
from archipel.radiology.dimse.listener import (
    LOSSLESS_COMPRESSED,
    UNCOMPRESSED,
    Listener,
    acceptance_order,
    start_listener,
)
from archipel.radiology.models import DicomNode
from archipel.radiology.samples import (
    CT_IMAGE,
    SyntheticPatient,
    ct_series,
    mammo_study,
    mr_series,
    to_bytes,
)
from tests.dimse_peers import (
    VL_WHOLE_SLIDE,
    archive_look,
    dataset_part,
    dcmtk,
    scu,
    sha256,
    write_files,
    wsi_instance,
)
from tests.support import ArchipelServer, wait_until

VERIFICATION = "1.2.840.10008.1.1"


@pytest.fixture
def chunked_sending(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let pynetdicom send a file's data set bytes as they are, without decoding them (to send broken ones)."""
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)


def echo(server: ArchipelServer, aet: str = "ECHOSCU") -> int:
    return dcmtk("echoscu", "-aet", aet, "-aec", server.aet, "127.0.0.1", str(server.dicom_port)).returncode


def test_registered_node_gets_an_echo_answer(server: ArchipelServer) -> None:
    assert echo(server) == 0


def test_association_from_an_unregistered_ae_title_is_rejected(
    server: ArchipelServer, tmp_path: Path, patient: SyntheticPatient
) -> None:
    assert echo(server, "STRANGER") != 0
    files = write_files(tmp_path, ct_series(patient, 1))
    run = dcmtk(
        "storescu", "-aet", "STRANGER", "-aec", server.aet, "127.0.0.1", str(server.dicom_port), str(files[0])
    )
    assert run.returncode != 0
    assert "Association Rejected" in run.stderr + run.stdout
    with archive_look(server) as look:
        assert files[0].name.removesuffix(".dcm") not in look.instances()


def test_storescu_stores_ct_mr_mammography_and_whole_slide_data_set_bytes_unchanged(
    server: ArchipelServer, tmp_path: Path, patient: SyntheticPatient
) -> None:
    datasets = [*ct_series(patient, 3), *mr_series(patient, 2), *mammo_study(patient), wsi_instance(patient)]
    files = write_files(tmp_path, datasets)
    peer = ("-aec", server.aet, "127.0.0.1", str(server.dicom_port))
    # -R: propose only the files' classes (storescu's default list has no slide microscopy); -xy: offer JPEG
    # Baseline, the slide's own syntax, so that storescu sends it as it is rather than failing to decompress.
    run = dcmtk("storescu", "-R", *peer, *map(str, files[:-1]))
    assert run.returncode == 0, run.stderr
    run = dcmtk("storescu", "-R", "-xy", *peer, str(files[-1]))
    assert run.returncode == 0, run.stderr
    with archive_look(server) as look:
        rows = look.instances()
        for ds, path in zip(datasets, files, strict=True):
            row = rows[ds.SOPInstanceUID]
            assert row.sop_class_uid == ds.SOPClassUID
            assert row.transfer_syntax == ds.file_meta.TransferSyntaxUID
            assert row.source_ae == "STORESCU"
            stored = look.blobs.get(row.blob_key)
            assert row.sha256 == sha256(stored)
            assert dataset_part(stored) == dataset_part(path.read_bytes())
    assert {rows[d.SOPInstanceUID].sop_class_uid for d in datasets} >= {
        VL_WHOLE_SLIDE,
        "1.2.840.10008.5.1.4.1.1.1.2",
    }


def _in_syntax(patient: SyntheticPatient, ts: str) -> Dataset:
    """A secondary capture in ``ts``: encapsulated fragments for compressed syntaxes (never decoded here)."""
    ds = ct_series(patient, 1, rows=16, cols=16)[0]
    ds.file_meta.TransferSyntaxUID = ts
    if ts not in (
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.1.99",
        "1.2.840.10008.1.2.2",
    ):
        ds.PixelData = encapsulate([b"\xff\xd8 frame bytes as sent \xff\xd9"])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    return ds


def test_every_supported_transfer_syntax_is_accepted_and_kept(
    server: ArchipelServer, patient: SyntheticPatient
) -> None:
    sent = {ts: _in_syntax(patient, ts) for ts in SUPPORTED_TRANSFER_SYNTAXES}
    assoc = scu(server, [(CT_IMAGE, [ts]) for ts in SUPPORTED_TRANSFER_SYNTAXES])
    try:
        accepted = {str(cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
        assert accepted == set(SUPPORTED_TRANSFER_SYNTAXES)
        for ts, ds in sent.items():
            status = assoc.send_c_store(ds)
            assert status.Status == 0x0000, (ts, status)
    finally:
        assoc.release()
    with archive_look(server) as look:
        rows = look.instances()
        assert {rows[ds.SOPInstanceUID].transfer_syntax for ds in sent.values()} == set(
            SUPPORTED_TRANSFER_SYNTAXES
        )


def _broken(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_bad_instances_are_refused_with_a_status_and_reason_and_nothing_stored_is_lost(
    server: ArchipelServer, tmp_path: Path, patient: SyntheticPatient, chunked_sending: None
) -> None:
    first, other, mismatched, no_study = ct_series(patient, 4)
    good = to_bytes(first)
    assert scu_store(server, _broken(tmp_path, "good.dcm", good)) == (0x0000, "")
    with archive_look(server) as look:
        before = look.instances()[first.SOPInstanceUID]

    truncated = to_bytes(other)
    # Where this file's own data set starts: its File Meta Information holds its SOP Instance UID, whose length
    # differs from one generated UID to the next (an offset taken from another file cut two bytes off it).
    meta_end = len(truncated) - len(dataset_part(truncated))
    # An element header with a VR that does not exist, then noise: the data set cannot be parsed.
    garbage = truncated[:meta_end] + b"\x08\x00\x16\x00ZZ\x10\x00" + b"\xa5" * 4000
    # Pure noise parses as unknown elements (pydicom is lenient), so what is refused is the missing class.
    noise = truncated[:meta_end] + bytes(range(256)) * 16
    as_ct = to_bytes(mismatched)
    mismatched.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # MR in the data set, CT in the request
    mismatched_bytes = as_ct[: len(as_ct) - len(dataset_part(as_ct))] + dataset_part(to_bytes(mismatched))
    del no_study.StudyInstanceUID
    first.SeriesDescription = "same UID, other bytes"
    cases = {
        "truncated.dcm": (truncated[: len(truncated) - 5000], 0xC000, "truncated"),
        "garbage.dcm": (garbage, 0xC000, "Unknown Value Representation"),
        "noise.dcm": (noise, 0xA900, "SOPClassUID"),
        "mismatched.dcm": (mismatched_bytes, 0xA900, "SOPClassUID"),
        "no-study.dcm": (to_bytes(no_study), 0xA900, "StudyInstanceUID"),
        "duplicate.dcm": (to_bytes(first), 0x0111, "already stored"),
    }
    for name, (data, code, reason) in cases.items():
        status, comment = scu_store(server, _broken(tmp_path, name, data))
        assert status == code, name
        assert comment and reason in comment, (name, comment)
        assert len(comment) <= 64

    assert echo(server) == 0
    with archive_look(server) as look:
        after = look.instances()
        assert after[first.SOPInstanceUID] == before
        kept = look.blobs.get(before.blob_key)
        assert sha256(kept) == before.sha256
        assert dataset_part(kept) == dataset_part(good)
        assert other.SOPInstanceUID not in after
        assert mismatched.SOPInstanceUID not in after
        # Each data set was written to a blob as it arrived: what was refused is removed again, and no
        # temporary file is left behind.
        assert set(look.blobs.keys()) == {row.blob_key for row in after.values()}
    assert list((server.data / "blobs" / "tmp").iterdir()) == []


def scu_store(server: ArchipelServer, path: Path) -> tuple[int, str]:
    """Send one file's data set bytes as they are; return the status and the error comment."""
    assoc = scu(server, [(CT_IMAGE, [ExplicitVRLittleEndian])])
    try:
        rsp = assoc.send_c_store(path)
        return int(rsp.Status), str(rsp.get("ErrorComment", ""))
    finally:
        assoc.release()


def test_missing_uids_are_refused_to_dcmtk_with_the_data_set_mismatch_status(
    server: ArchipelServer, tmp_path: Path, patient: SyntheticPatient
) -> None:
    ds = ct_series(patient, 1)[0]
    del ds.SeriesInstanceUID
    files = write_files(tmp_path, [ds])
    run = dcmtk("storescu", "-d", "-aec", server.aet, "127.0.0.1", str(server.dicom_port), str(files[0]))
    out = run.stdout + run.stderr
    assert "DIMSE Status                  : 0xa900" in out
    assert "missing SeriesInstanceUID" in out
    assert echo(server) == 0


def test_stores_of_an_association_are_audited_once_per_patient(
    server: ArchipelServer, tmp_path: Path
) -> None:
    someone = SyntheticPatient("AUD0001", "AUDIT^Someone", "19800101", "M", issuer="SITE-A")
    files = write_files(tmp_path, ct_series(someone, 5))
    run = dcmtk("storescu", "-aec", server.aet, "127.0.0.1", str(server.dicom_port), *map(str, files))
    assert run.returncode == 0, run.stderr
    with archive_look(server) as look:

        def import_events() -> list[audit.AuditEvent]:
            with look.db.sessions() as s:
                query = select(audit.AuditEvent).where(
                    audit.AuditEvent.patient == "SITE-A/AUD0001", audit.AuditEvent.event_type == audit.IMPORT
                )
                return list(s.execute(query).scalars().all())

        # The summary is written when the listener handles the release, which may come after storescu exits.
        wait_until(lambda: bool(import_events()), timeout=30, what="the association's import event")
        events = import_events()
        # One import event for the association's five stores (the MPI records the new identity apart, as 110110).
        assert len(events) == 1
        assert events[0].actor == "STORESCU"
        assert "stored=5" in events[0].detail
        with look.db.sessions() as s:
            assert audit.verify(s) == (True, None)


def test_deflated_data_sets_are_stored_as_received(server: ArchipelServer, patient: SyntheticPatient) -> None:
    ds = ct_series(patient, 1)[0]
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    assoc = scu(server, [(CT_IMAGE, [DeflatedExplicitVRLittleEndian])])
    try:
        assert assoc.send_c_store(ds).Status == 0x0000
    finally:
        assoc.release()
    with archive_look(server) as look:
        assert look.instances()[ds.SOPInstanceUID].transfer_syntax == DeflatedExplicitVRLittleEndian


@pytest.fixture
def local_listener(runtime: Runtime) -> Iterator[Listener]:
    """A listener in this process on a free port, with PYNETDICOM registered at 127.0.0.1."""
    with runtime.db.write() as s:
        s.add(DicomNode(ae_title="PYNETDICOM", host="127.0.0.1", port=104, site="SITE-A"))
    listener = start_listener(runtime, "127.0.0.1", 0)
    try:
        yield listener
    finally:
        listener.stop()


def test_accepted_sockets_have_nagle_turned_off(local_listener: Listener) -> None:
    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(VERIFICATION)
    assoc = ae.associate("127.0.0.1", local_listener.port, ae_title="ARCHIPEL")
    try:
        assert assoc.is_established
        accepted = local_listener.server.active_associations
        assert len(accepted) == 1
        sock = accepted[0].dul.socket.socket
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        assoc.release()


def test_when_offered_several_syntaxes_we_pick_lossless_then_uncompressed_and_never_lossy_first() -> None:
    order = acceptance_order(SUPPORTED_TRANSFER_SYNTAXES)
    assert sorted(order) == sorted(SUPPORTED_TRANSFER_SYNTAXES)
    explicit, implicit = order.index("1.2.840.10008.1.2.1"), order.index("1.2.840.10008.1.2")
    assert all(order.index(ts) < explicit for ts in LOSSLESS_COMPRESSED)
    assert explicit < implicit
    lossy = set(order) - LOSSLESS_COMPRESSED - set(UNCOMPRESSED)
    assert all(order.index(ts) > order.index(u) for ts in lossy for u in UNCOMPRESSED)


def test_a_registered_ae_title_calling_from_another_host_is_rejected(server: ArchipelServer) -> None:
    ae = AE(ae_title="ECHOSCU")
    ae.add_requested_context(VERIFICATION)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.aet, bind_address=("127.0.0.2", 0))
    assert assoc.is_rejected
    assert (assoc.acceptor.primitive.result, assoc.acceptor.primitive.diagnostic) == (0x01, 0x03)


def test_a_transfer_syntax_we_do_not_keep_is_refused_at_negotiation(server: ArchipelServer) -> None:
    jpip_referenced = "1.2.840.10008.1.2.4.94"
    assoc = scu(server, [(VERIFICATION, ["1.2.840.10008.1.2"]), (CT_IMAGE, [jpip_referenced])])
    try:
        rejected = [cx for cx in assoc.rejected_contexts if cx.abstract_syntax == CT_IMAGE]
        assert [cx.result for cx in rejected] == [
            0x04
        ]  # transfer syntaxes not supported (provider rejection)
        assert assoc.send_c_echo().Status == 0x0000
    finally:
        assoc.release()


def test_a_store_refused_by_the_access_policy_leaves_no_blob_of_what_was_written_as_it_arrived(
    local_listener: Listener, runtime: Runtime, patient: SyntheticPatient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The data set is written to its blob as it arrives, before the handler asks the policy.
    monkeypatch.setattr(access, "allow", lambda *args, **kw: Decision(False, "site closed for a test"))
    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(CT_IMAGE, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", local_listener.port, ae_title="ARCHIPEL")
    try:
        assert assoc.is_established
        [ds] = ct_series(patient, 1)
        rsp = assoc.send_c_store(ds)
        assert rsp.Status == 0x0124, rsp
    finally:
        assoc.release()
    store = runtime.blobs
    wait_until(lambda: not list(store.tmp.iterdir()), 10, "the temporary file to go")  # type: ignore[attr-defined]
    assert list(store.keys()) == []
