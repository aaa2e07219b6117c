"""HL7 orders and reports over MLLP: ORM^O01 / OMI^O23 create (and cancel) teleradiology reading requests, ORU^R01
reports become documents linked to their study, preliminary then final, and a correction is an addendum."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from archipel.platform.identity import feed, store
from archipel.platform.runtime import Runtime
from archipel.radiology import documents_expected
from archipel.radiology.archive import Archive
from archipel.radiology.dimse.listener import start_listener
from archipel.radiology.dimse.nodes import DicomNode
from archipel.radiology.documents_models import Document, DocumentStudy
from archipel.radiology.hl7.listener import Hl7Listener, start_hl7_listener
from archipel.radiology.hl7.sources import add_source
from archipel.radiology.samples import SyntheticPatient, ct_series, to_bytes
from archipel.radiology.telerad_models import ReadingRequest
from tests.dimse_peers import dcmtk, write_files
from tests.pdf_samples import text_pdf
from tests.test_hl7_mllp import FACILITY, SITE, message, msa, msh, pid, send


@pytest.fixture
def ris(runtime: Runtime) -> Iterator[Hl7Listener]:
    store.forget_indexes()
    feed.forget_feeds()
    add_source(runtime.db, FACILITY, SITE)
    running = start_hl7_listener(runtime, "127.0.0.1", 0)
    try:
        yield running
    finally:
        running.stop()
        store.forget_indexes()
        feed.forget_feeds()


def stored_study(runtime: Runtime, patient_id: str, accession: str) -> str:
    """A CT study of the patient, received through the archive; returns its Study Instance UID."""
    patient = SyntheticPatient(patient_id, "LEFEVRE^Eloise", "19850322", "F", issuer=SITE)
    [ds] = ct_series(patient, 1, accession=accession, rows=16, cols=16)
    Archive(runtime.db, runtime.blobs).store(to_bytes(ds))
    return str(ds.StudyInstanceUID)


def orm(
    control: str, order: str, local: str, *, kind: str = "NW", priority: str = "S", accession: str = ""
) -> bytes:
    return message(
        msh("ORM^O01", control),
        pid(local),
        "PV1|1|O",
        f"ORC|{kind}|{order}|||||^^^^^{priority}|||||7001^Kerhervé^Anaïs",
        f"OBR|1|{order}||ZBCTTHO^Scanner thoracique|||||||||Dyspnée aiguë, recherche d'embolie"
        f"|||7001^Kerhervé^Anaïs|0296111111|{accession}|||||||||^^^^^{priority}||||Suspicion d'embolie pulmonaire",
    )


def requests(runtime: Runtime) -> list[ReadingRequest]:
    with runtime.db.sessions() as s:
        return list(s.execute(select(ReadingRequest).order_by(ReadingRequest.id)).scalars())


def test_orm_creates_a_stat_reading_request_for_the_expected_study(
    runtime: Runtime, ris: Hl7Listener
) -> None:
    ack = send(ris.port, orm("O-1", "CMD2026-001", "IPP8001", accession="ACC8001"))
    assert msa(ack)[0] == "AA", msa(ack)
    [req] = requests(runtime)
    assert (req.priority, req.requesting_site, req.placer_order) == ("stat", SITE, "CMD2026-001")
    assert (req.issuer, req.patient_id, req.accession_number, req.study_uid) == (
        SITE,
        "IPP8001",
        "ACC8001",
        "",
    )
    assert "embolie" in req.clinical_info and "embolie" in req.justification
    assert req.physician_name == "Anaïs Kerhervé"
    assert msa(send(ris.port, orm("O-2", "CMD2026-001", "IPP8001", accession="ACC8001")))[0] == "AA"
    assert len(requests(runtime)) == 1  # the same order again is the same request


def test_omi_with_study_uid_and_tq1_priority_links_the_stored_study(
    runtime: Runtime, ris: Hl7Listener
) -> None:
    send(ris.port, message(msh("ADT^A01", "P-1"), pid("IPP8002")))
    study = stored_study(runtime, "IPP8002", "ACC8002")
    omi = message(
        msh("OMI^O23", "O-3"),
        pid("IPP8002"),
        "ORC|NW|CMD2026-002||||||||||7003^Quéméner^Loïc",
        "TQ1|1||||||||A",
        "OBR|1|CMD2026-002||ZBIRM^IRM cérébrale",
        f"IPC|ACC8002|SPS1|{study}|SPS1|MR",
    )
    assert msa(send(ris.port, omi))[0] == "AA"
    [req] = requests(runtime)
    assert (req.priority, req.study_uid) == ("urgent", study)


def test_orm_cancel_and_unknown_priority(runtime: Runtime, ris: Hl7Listener) -> None:
    send(ris.port, orm("O-4", "CMD2026-003", "IPP8003", priority="R", accession="ACC8003"))
    code, _c, reason = msa(
        send(ris.port, orm("O-5", "CMD2026-003", "IPP8003", kind="CA", accession="ACC8003"))
    )
    assert code == "AA", reason
    [req] = requests(runtime)
    assert (req.priority, req.state) == ("scheduled", "cancelled")
    assert msa(send(ris.port, orm("O-6", "CMD2026-004", "IPP8003", priority="Z")))[0] == "AE"


def oru(control: str, status: str, *obx: str, order: str = "CR-1", accession: str = "ACC8100") -> bytes:
    return message(
        msh("ORU^R01", control),
        pid("IPP8100"),
        f"OBR|1|CMD-1|{order}|ZBCTTHO^Scanner thoracique|||20261202080000|||||||||||{accession}"
        f"|||||||{status}|||||||7002&Le Bihan&Goulven",
        *obx,
    )


def docs(runtime: Runtime) -> list[Document]:
    with runtime.db.sessions() as s:
        return list(s.execute(select(Document).order_by(Document.id)).scalars())


def test_oru_preliminary_then_final_then_correction(runtime: Runtime, ris: Hl7Listener) -> None:
    send(ris.port, message(msh("ADT^A01", "R-0"), pid("IPP8100")))
    study = stored_study(runtime, "IPP8100", "ACC8100")
    text = ("OBX|1|TX|18782-3^Observation^LN||Pas d'embolie pulmonaire.~Parenchyme sans anomalie.||||||P",)
    assert msa(send(ris.port, oru("R-1", "P", *text)))[0] == "AA"
    [doc] = docs(runtime)
    assert (doc.status, doc.type_code, doc.author) == ("preliminary", "18748-4", "Goulven Le Bihan")
    with runtime.db.sessions() as s:
        assert list(s.execute(select(DocumentStudy.study_uid)).scalars()) == [study]
    final = ("OBX|1|FT|18782-3^Observation^LN||Conclusion : examen normal, pas d'embolie.||||||F",)
    assert msa(send(ris.port, oru("R-2", "F", *final)))[0] == "AA"
    [doc] = docs(runtime)
    assert doc.status == "final"
    assert b"examen normal" in runtime.blobs.get(doc.blob_key)
    again = msa(send(ris.port, oru("R-3", "F", *final)))
    assert again[0] == "AE"
    pdf = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
    ed = f"OBX|1|ED|18748-4^Report^LN||^application^PDF^Base64^{base64.b64encode(pdf).decode()}||||||C"
    assert msa(send(ris.port, oru("R-4", "C", ed)))[0] == "AA"
    parent, addendum = docs(runtime)
    assert (parent.status, addendum.relates_to, addendum.content_type) == (
        "amended",
        parent.id,
        "application/pdf",
    )


def test_oru_without_text_or_of_unknown_status_is_refused(runtime: Runtime, ris: Hl7Listener) -> None:
    assert msa(send(ris.port, oru("R-5", "F")))[0] == "AE"
    assert msa(send(ris.port, oru("R-6", "X", "OBX|1|TX|||texte")))[0] == "AE"
    assert msa(send(ris.port, oru("R-7", "C", "OBX|1|TX|||texte", order="CR-9")))[0] == "AE"
    assert docs(runtime) == []


def test_the_expected_study_is_linked_when_its_images_arrive(runtime: Runtime, ris: Hl7Listener) -> None:
    from archipel.radiology import telerad

    telerad.install()  # what every storing process does (app and listeners)
    assert msa(send(ris.port, orm("O-7", "CMD2026-007", "IPP8200", accession="ACC8200")))[0] == "AA"
    [req] = requests(runtime)
    assert req.study_uid == ""
    study = stored_study(runtime, "IPP8200", "ACC8200")
    [req] = requests(runtime)
    assert req.study_uid == study


def test_a_report_sent_before_its_images_is_linked_when_the_study_arrives_by_c_store(
    runtime: Runtime, ris: Hl7Listener, tmp_path: Path
) -> None:
    documents_expected.install()  # what every storing process does (app, DICOM listener, workers)
    early = oru(
        "E-1",
        "F",
        "OBX|1|TX|18782-3^Observation^LN||Pas d'embolie pulmonaire.||||||F",
        order="CR-EARLY",
        accession="ACC8300",
    )
    code, _control, text = msa(send(ris.port, early))
    assert code == "AA" and "no study yet" in text, text
    [doc] = docs(runtime)
    assert doc.accession_number == "ACC8300"
    with runtime.db.write() as s:
        s.add(DicomNode(ae_title="STORESCU", host="127.0.0.1", port=104, site=SITE))
    dicom = start_listener(runtime, "127.0.0.1", 0)
    try:
        ours = SyntheticPatient("IPP8100", "LEFEVRE^Eloise", "19850322", "F", issuer=SITE)
        stranger = SyntheticPatient("IPP8101", "MORVAN^Yann", "19790622", "M", issuer=SITE)
        [other] = ct_series(
            stranger, 1, accession="ACC8300", rows=16, cols=16
        )  # same accession, other patient
        series = ct_series(ours, 2, accession="ACC8300", rows=16, cols=16)
        files = write_files(tmp_path / "ct", [other, *series])
        run = dcmtk(
            "storescu", "-aec", "ARCHIPEL", "127.0.0.1", str(dicom.port), *map(str, files), timeout=60
        )
        assert run.returncode == 0, run.stderr
    finally:
        dicom.stop()
    with runtime.db.sessions() as s:
        linked = list(
            s.execute(select(DocumentStudy.study_uid).where(DocumentStudy.document_id == doc.id)).scalars()
        )
    assert linked == [str(series[0].StudyInstanceUID)]
    assert msa(send(ris.port, oru("E-2", "C", "OBX|1|TX|||Addendum.", order="CR-EARLY")))[0] == "AA"
    _parent, addendum = docs(runtime)
    with runtime.db.sessions() as s:
        assert list(
            s.execute(
                select(DocumentStudy.study_uid).where(DocumentStudy.document_id == addendum.id)
            ).scalars()
        ) == [str(series[0].StudyInstanceUID)]


def test_a_pdf_report_sent_by_oru_is_indexed_by_its_text(runtime: Runtime, ris: Hl7Listener) -> None:
    pdf = text_pdf("Scanner thoracique : micronodule du lobe supérieur droit.")
    ed = f"OBX|1|ED|18748-4^Report^LN||^application^PDF^Base64^{base64.b64encode(pdf).decode()}||||||F"
    assert msa(send(ris.port, oru("R-8", "F", ed, order="CR-PDF")))[0] == "AA"
    [doc] = docs(runtime)
    assert doc.content_type == "application/pdf" and "micronodule du lobe superieur" in doc.search_text
