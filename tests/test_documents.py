"""The document registry's service: statuses, immutability of signed documents, content checks, access."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from archipel.platform import access
from archipel.platform.audit import AuditEvent
from archipel.platform.authn import Principal
from archipel.platform.runtime import Runtime
from archipel.radiology import documents
from archipel.radiology.archive import Archive
from archipel.radiology.documents import DocumentInvalid, DocumentLocked, UnsupportedContentType
from tests.access_support import ensure_master

RADIOLOGIST = Principal("dr-amandier", "radiologist", site="SITE-A")
OTHER_SITE = Principal("dr-bouleau", "radiologist", site="SITE-B")
SECRETARY = Principal("m-cedre", "screening-reader", site="SITE-A")
REPORT = "18748-4"  # LOINC: Diagnostic imaging study


def _report(rt: Runtime, who: Principal = RADIOLOGIST, **kw: object) -> documents.Document:
    fields: dict[str, object] = {
        "issuer": "SITE-A",
        "patient_id": "P100",
        "type_code": REPORT,
        "title": "Scanner thoracique",
        "content": b"Pas de nodule pulmonaire. Poumons clairs.",
        "content_type": "text/plain",
        "author": "Dr Amandier",
        "organisation": "Centre A",
        "site": "SITE-A",
        "study_uids": ["1.2.826.0.1.3680043.10.1.1"],
    }
    fields.update(kw)
    return documents.register(rt.db, rt.blobs, who, **fields)  # type: ignore[arg-type]


@pytest.fixture
def master(runtime: Runtime) -> int:
    return ensure_master(runtime.db, "SITE-A", "P100", birth_name="ERABLE")


def test_a_registered_report_is_preliminary_linked_to_its_master_and_its_content_hashed(
    runtime: Runtime, master: int
) -> None:
    doc = _report(runtime)
    assert doc.status == "preliminary" and doc.master_id == master
    assert doc.uid.startswith("urn:uuid:") and len(doc.sha256) == 64
    assert documents.studies_of(runtime.db, doc.id) == ["1.2.826.0.1.3680043.10.1.1"]
    got, data = documents.read_content(runtime.db, runtime.blobs, RADIOLOGIST, doc.id)
    assert data.decode().startswith("Pas de nodule") and got.size == len(data)


def test_signing_twice_is_refused_and_a_final_report_cannot_be_revised(runtime: Runtime, master: int) -> None:
    doc = _report(runtime)
    documents.revise(
        runtime.db, runtime.blobs, RADIOLOGIST, doc.id, content=b"Revu.", content_type="text/plain"
    )
    signed = documents.sign(runtime.db, RADIOLOGIST, doc.id)
    assert signed.status == "final" and signed.signed_by == "dr-amandier" and signed.signed_at is not None
    with pytest.raises(DocumentLocked, match="cannot be signed again"):
        documents.sign(runtime.db, RADIOLOGIST, doc.id)
    with pytest.raises(DocumentLocked, match="addendum"):
        documents.revise(
            runtime.db, runtime.blobs, RADIOLOGIST, doc.id, content=b"x", content_type="text/plain"
        )
    _, data = documents.read_content(runtime.db, runtime.blobs, RADIOLOGIST, doc.id)
    assert data == b"Revu."


def test_an_addendum_amends_a_final_report_and_keeps_its_content(runtime: Runtime, master: int) -> None:
    doc = _report(runtime, status="final")
    with pytest.raises(DocumentInvalid, match="reason"):
        documents.add_addendum(
            runtime.db,
            runtime.blobs,
            RADIOLOGIST,
            doc.id,
            content=b"a",
            content_type="text/plain",
            reason=" ",
        )
    add = documents.add_addendum(
        runtime.db,
        runtime.blobs,
        RADIOLOGIST,
        doc.id,
        content=b"<p>Nodule de 4 mm <b>lobe inferieur</b></p>",
        content_type="text/html",
        reason="image relue",
    )
    assert add.status == "final" and add.relates_to == doc.id and add.relation == "appends"
    assert documents.get(runtime.db, doc.id).status == "amended"
    assert documents.studies_of(runtime.db, add.id) == documents.studies_of(runtime.db, doc.id)
    assert "lobe inferieur" in add.search_text and "<b>" not in add.search_text
    _, original = documents.read_content(runtime.db, runtime.blobs, RADIOLOGIST, doc.id)
    assert original.startswith(b"Pas de nodule")
    # An amended report takes further addenda; a preliminary one does not (it is revised).
    documents.add_addendum(
        runtime.db, runtime.blobs, RADIOLOGIST, doc.id, content=b"2", content_type="text/plain", reason="bis"
    )
    draft = _report(runtime)
    with pytest.raises(DocumentLocked, match="revise it instead"):
        documents.add_addendum(
            runtime.db,
            runtime.blobs,
            RADIOLOGIST,
            draft.id,
            content=b"a",
            content_type="text/plain",
            reason="r",
        )


def test_entered_in_error_needs_a_reason_keeps_the_content_and_happens_once(
    runtime: Runtime, master: int
) -> None:
    doc = _report(runtime, status="final")
    with pytest.raises(DocumentInvalid):
        documents.enter_in_error(runtime.db, RADIOLOGIST, doc.id, reason="")
    gone = documents.enter_in_error(runtime.db, RADIOLOGIST, doc.id, reason="wrong patient")
    assert gone.status == "entered-in-error" and gone.error_reason == "wrong patient"
    with pytest.raises(DocumentLocked):
        documents.enter_in_error(runtime.db, RADIOLOGIST, doc.id, reason="again")
    with pytest.raises(DocumentLocked):
        documents.sign(runtime.db, RADIOLOGIST, doc.id)
    _, data = documents.read_content(runtime.db, runtime.blobs, RADIOLOGIST, doc.id)
    assert data.startswith(b"Pas de nodule")


@pytest.mark.parametrize(
    ("content", "content_type", "error"),
    [
        (b"GIF89a", "image/gif", UnsupportedContentType),
        (b"not a pdf", "application/pdf", DocumentInvalid),
        (b"\xff\xfe bad", "text/plain", DocumentInvalid),
        (b"", "text/plain", DocumentInvalid),
    ],
)
def test_wrong_content_is_refused_and_nothing_is_registered(
    runtime: Runtime, master: int, content: bytes, content_type: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        _report(runtime, content=content, content_type=content_type)
    with runtime.db.sessions() as s:
        assert s.execute(select(documents.Document)).first() is None


def test_only_producers_who_may_read_a_document_change_it_and_refusals_are_audited(
    runtime: Runtime, master: int
) -> None:
    doc = _report(runtime)
    with pytest.raises(access.AccessDenied):
        documents.sign(runtime.db, OTHER_SITE, doc.id)
    with pytest.raises(access.AccessDenied):
        documents.sign(runtime.db, SECRETARY, doc.id)
    with pytest.raises(access.AccessDenied):
        documents.read_content(runtime.db, runtime.blobs, OTHER_SITE, doc.id)
    with runtime.db.sessions() as s:
        denied = s.execute(
            select(AuditEvent.actor).where(AuditEvent.outcome == "denied", AuditEvent.object == str(doc.id))
        ).scalars()
        assert sorted(denied) == ["dr-bouleau", "dr-bouleau", "m-cedre"]


def test_a_corrupted_content_is_detected_on_read(runtime: Runtime, master: int) -> None:
    doc = _report(runtime)
    runtime.blobs.delete(doc.blob_key)
    runtime.blobs.put(doc.blob_key, b"tampered")
    with pytest.raises(documents.DocumentCorrupt, match="SHA-256"):
        documents.read_content(runtime.db, runtime.blobs, RADIOLOGIST, doc.id)


def test_the_start_up_sweep_keeps_document_contents(runtime: Runtime, master: int) -> None:
    doc = _report(runtime)
    Archive(runtime.db, runtime.blobs).sweep_orphans()
    assert runtime.blobs.exists(doc.blob_key)


def test_two_signatures_at_once_give_one_final_report_and_one_conflict(runtime: Runtime, master: int) -> None:
    doc = _report(runtime)
    second = Principal("dr-sapin", "radiologist", site="SITE-A")
    outcomes: list[str] = []
    start = threading.Barrier(2)

    def sign(who: Principal) -> None:
        start.wait()
        try:
            documents.sign(runtime.db, who, doc.id)
            outcomes.append("signed")
        except DocumentLocked:
            outcomes.append("locked")

    threads = [threading.Thread(target=sign, args=(p,)) for p in (RADIOLOGIST, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outcomes) == ["locked", "signed"]
    assert documents.get(runtime.db, doc.id).status == "final"


def test_a_node_changes_only_its_own_sites_documents(runtime: Runtime, master: int) -> None:
    ris_a = Principal("ris-a", "node", site="SITE-A", kind="node")
    ris_b = Principal("ris-b", "node", site="SITE-B", kind="node")
    doc = _report(runtime, who=ris_a, source="hl7:ORU^R01")
    with pytest.raises(access.AccessDenied, match="may not change documents of site SITE-A"):
        documents.sign(runtime.db, ris_b, doc.id)
    assert documents.sign(runtime.db, ris_a, doc.id).signed_by == "ris-a"
