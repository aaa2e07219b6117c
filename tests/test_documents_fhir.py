"""The document registry as FHIR R4 DocumentReference: searchset Bundles that fhir.resources parses back, the
status, type, subject, security label, studies and addendum mapping, and search by patient, type, date and
status."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.documentreference import DocumentReference
from fhir.resources.R4B.operationoutcome import OperationOutcome

from archipel.app import create_app
from archipel.platform.authn import Principal
from archipel.platform.db import utcnow
from archipel.platform.http import current_principal
from archipel.platform.runtime import Runtime
from archipel.radiology import documents
from tests.access_support import ensure_master

REPORT, LETTER = "18748-4", "34133-9"
STUDY = "1.2.826.0.1.3680043.10.3.1"
RADIOLOGIST = Principal("dr-amandier", "radiologist", "SITE-A", auth_time=utcnow(), method="password+totp")
AUDITOR = Principal("m-tilleul", "auditor", "SITE-A")
FHIR_JSON = "application/fhir+json"


@dataclass
class World:
    runtime: Runtime
    master: int
    report: documents.Document
    addendum: documents.Document
    letter: documents.Document
    withdrawn: documents.Document

    def client(self, principal: Principal = RADIOLOGIST) -> TestClient:
        app = create_app()
        app.dependency_overrides[current_principal] = lambda: principal
        return TestClient(app)


def _register(rt: Runtime, **kw: object) -> documents.Document:
    fields: dict[str, object] = {
        "issuer": "SITE-A",
        "patient_id": "FHIR001",
        "type_code": REPORT,
        "type_display": "Diagnostic imaging study",
        "title": "IRM du genou",
        "content": b"Menisque interne fissure.",
        "content_type": "text/plain",
        "author": "Dr Amandier",
        "organisation": "Centre A",
        "site": "SITE-A",
        "status": "final",
    }
    fields.update(kw)
    return documents.register(rt.db, rt.blobs, RADIOLOGIST, **fields)  # type: ignore[arg-type]


@pytest.fixture
def world(runtime: Runtime) -> Iterator[World]:
    master = ensure_master(runtime.db, "SITE-A", "FHIR001", birth_name="PEUPLIER", birth_date="19650505")
    rt = runtime
    report = _register(rt, study_uids=[STUDY], confidentiality="R")
    addendum = documents.add_addendum(
        rt.db,
        rt.blobs,
        RADIOLOGIST,
        report.id,
        content=b"Complement.",
        content_type="text/plain",
        reason="relu",
    )
    letter = _register(
        rt, type_code=LETTER, type_display="Summary of episode note", title="Lettre", status="preliminary"
    )
    withdrawn = documents.enter_in_error(
        rt.db, RADIOLOGIST, _register(rt, title="Erreur").id, reason="wrong side"
    )
    with rt.db.write() as s:  # the letter was written a year ago
        row = s.get(documents.Document, letter.id)
        assert row is not None
        row.created_at = utcnow() - timedelta(days=365)
    yield World(rt, master, documents.get(rt.db, report.id), addendum, letter, withdrawn)


def _bundle(c: TestClient, query: str = "") -> Bundle:
    answer = c.get(f"/fhir/DocumentReference{query}")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith(FHIR_JSON)
    bundle = Bundle.model_validate_json(answer.content)
    assert bundle.type == "searchset"
    return bundle


def _ids(bundle: Bundle) -> set[str]:
    return {str(e.resource.id) for e in bundle.entry or []}  # type: ignore[union-attr]


def test_the_searchset_parses_back_and_maps_status_type_subject_studies_and_addenda(world: World) -> None:
    with world.client() as c:
        bundle = _bundle(c, f"?patient=Patient/{world.master}")
        assert bundle.total == 4 and len(bundle.entry or []) == 4
        refs = {str(e.resource.id): e.resource for e in bundle.entry or []}  # type: ignore[union-attr]
        report = DocumentReference.model_validate(refs[str(world.report.id)].model_dump())
        assert report.status == "current" and report.docStatus == "amended"
        assert report.type.coding[0].system == "http://loinc.org" and report.type.coding[0].code == REPORT
        assert report.subject.reference == f"Patient/{world.master}"
        assert report.masterIdentifier.value == world.report.uid
        assert report.custodian.display == "Centre A" and report.author[0].display == "Dr Amandier"
        assert report.authenticator.display == "dr-amandier"
        assert [lab.coding[0].code for lab in report.securityLabel] == ["R"]
        assert report.context.related[0].identifier.value == f"urn:oid:{STUDY}"
        attachment = report.content[0].attachment
        assert attachment.contentType == "text/plain" and attachment.size == world.report.size
        addendum = refs[str(world.addendum.id)]
        assert addendum.relatesTo[0].code == "appends"  # type: ignore[attr-defined]
        assert addendum.relatesTo[0].target.reference == f"DocumentReference/{world.report.id}"  # type: ignore[attr-defined]
        assert refs[str(world.withdrawn.id)].status == "entered-in-error"
        assert refs[str(world.letter.id)].docStatus == "preliminary"  # type: ignore[attr-defined]
        content = c.get(str(attachment.url).removeprefix("http://testserver"))
        assert content.status_code == 200 and content.text == "Menisque interne fissure."


def test_search_by_type_date_and_status(world: World) -> None:
    with world.client() as c:
        assert _ids(_bundle(c, f"?type={LETTER}")) == {str(world.letter.id)}
        by_local = _bundle(c, "?patient.identifier=urn:archipel:site:SITE-A|FHIR001")
        assert (
            by_local.total == 4
            and _bundle(c, "?patient.identifier=urn:archipel:site:SITE-B|FHIR001").total == 0
        )
        assert _ids(_bundle(c, f"?type=http://loinc.org|{LETTER}")) == {str(world.letter.id)}
        last_month = (utcnow() - timedelta(days=30)).date().isoformat()
        assert str(world.letter.id) not in _ids(_bundle(c, f"?date=ge{last_month}"))
        assert _ids(_bundle(c, f"?date=lt{last_month}")) == {str(world.letter.id)}
        year = (utcnow() - timedelta(days=365)).date().isoformat()
        assert _ids(_bundle(c, f"?date={year}")) == {str(world.letter.id)}
        assert _ids(_bundle(c, "?status=entered-in-error")) == {str(world.withdrawn.id)}
        assert len(_ids(_bundle(c, "?status=current"))) == 3
        assert _bundle(c, "?status=superseded").total == 0
        page = _bundle(c, "?_count=2")
        assert page.total == 4 and len(page.entry or []) == 2
        assert [link.relation for link in page.link or []] == ["self", "next"]


def test_read_one_and_errors_are_operation_outcomes(world: World) -> None:
    with world.client() as c:
        one = c.get(f"/fhir/DocumentReference/{world.report.id}")
        assert one.status_code == 200 and one.headers["content-type"].startswith(FHIR_JSON)
        assert DocumentReference.model_validate_json(one.content).id == str(world.report.id)
        for url, status in [
            ("/fhir/DocumentReference/999999", 404),
            ("/fhir/DocumentReference?date=yesterday", 400),
            ("/fhir/DocumentReference?patient=SITE-A", 400),
            ("/fhir/DocumentReference?type=http://snomed.info/sct|123", 400),
            ("/fhir/DocumentReference?status=final", 400),
            ("/fhir/DocumentReference?author=someone", 400),
            ("/fhir/DocumentReference?patient.identifier=FHIR001", 400),
        ]:
            answer = c.get(url)
            assert answer.status_code == status, url
            assert OperationOutcome.model_validate_json(answer.content).issue[0].severity == "error"
    with world.client(AUDITOR) as c:
        refused = c.get("/fhir/DocumentReference")
        assert refused.status_code == 403
        assert "may not read patient data" in str(
            OperationOutcome.model_validate_json(refused.content).issue[0].diagnostics
        )


def test_the_capability_statement_lists_document_reference_search(world: World) -> None:
    from fhir.resources.R4B.capabilitystatement import CapabilityStatement

    with TestClient(create_app()) as c:  # no sign-in: FHIR clients read it first
        answer = c.get("/fhir/metadata")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith(FHIR_JSON)
    statement = CapabilityStatement.model_validate_json(answer.content)
    resource = statement.rest[0].resource[0]  # type: ignore[index]
    assert resource.type == "DocumentReference"
    assert {p.name for p in resource.searchParam or []} >= {"patient", "type", "date", "status"}


def test_a_patient_gets_only_their_released_documents(world: World) -> None:
    patient = Principal("SITE-A/FHIR001", "patient", kind="patient")
    with world.client(patient) as c:
        assert _ids(_bundle(c)) == {str(world.report.id), str(world.addendum.id)}
        assert c.get(f"/fhir/DocumentReference/{world.letter.id}").status_code == 403
