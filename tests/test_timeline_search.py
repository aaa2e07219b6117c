"""The professional portal's search: patients by name, birth date and PatientID, reports by their words, each
only within what the caller may see."""

from __future__ import annotations

from archipel.platform.runtime import Runtime
from archipel.radiology import documents
from tests import test_timeline
from tests.access_support import relate
from tests.test_timeline import AT_B, Record, pro

REPORT = "Compte rendu. Nodule pulmonaire spiculé du lobe supérieur droit, à contrôler dans trois mois."
#: The same woman, stored and linked at two sites (the fixture of test_timeline).
record = test_timeline.record
HIDDEN = "Compte rendu confidentiel. Nodule pulmonaire, suivi psychiatrique."


def _report(rt: Runtime, title: str, text: str, codes: tuple[str, ...] = ()) -> int:
    doc = documents.register(
        rt.db,
        rt.blobs,
        pro("rad-b", "radiologist", "SITE-B"),
        issuer="SITE-B",
        patient_id=AT_B.patient_id,
        type_code="18748-4",
        title=title,
        content=text.encode(),
        content_type="text/plain",
        author="Dr Invented",
        organisation="Site B imaging",
        site="SITE-B",
        status="final",
        codes=codes,
    )
    return doc.id


def test_a_care_team_member_finds_the_patient_by_name_birth_date_and_patient_id(record: Record) -> None:
    relate(record.runtime.db, "dr-care", record.master)
    with record.client(pro("dr-care", "treating-doctor", "SITE-A")) as c:
        for q in ("timeline", "Timeline cami", "12/04/1980", "1980-04-12", "TLB0777"):
            body = c.get("/api/search", params={"q": q, "kind": "patient"}).json()
            assert [p["master_id"] for p in body["patients"]] == [record.master], q
        hit = body["patients"][0]
        assert hit["sites"] == ["SITE-A", "SITE-B"]
        assert hit["links"]["timeline"] == f"/app/index.html?patient={record.master}"
        assert c.get("/api/search", params={"q": "timeline", "site": "SITE-C"}).json()["patients"] == []
        assert c.get("/api/search", params={"q": "nobody-by-that-name"}).json()["patients_total"] == 0


def test_a_professional_without_access_finds_neither_the_patient_nor_her_reports(record: Record) -> None:
    _report(record.runtime, "Scanner thoracique", REPORT)
    with record.client(pro("rad-c", "radiologist", "SITE-C")) as c:
        body = c.get("/api/search", params={"q": "timeline"}).json()
        assert (body["patients_total"], body["reports_total"]) == (0, 0)
        assert c.get("/api/search", params={"q": "pulmonaire"}).json()["reports"] == []
    # At SITE-A without a care relationship, only her SITE-A identity is shown.
    with record.client(pro("rad-a", "radiologist", "SITE-A")) as c:
        [hit] = c.get("/api/search", params={"q": "timeline"}).json()["patients"]
    assert hit["sites"] == ["SITE-A"]


def test_reports_are_found_by_their_words_and_a_hidden_one_is_not(record: Record) -> None:
    shown = _report(record.runtime, "Scanner thoracique", REPORT)
    _report(record.runtime, "Consultation", HIDDEN, codes=("MASQUE_PS",))
    relate(record.runtime.db, "dr-care", record.master)
    with record.client(pro("dr-care", "treating-doctor", "SITE-A")) as c:
        body = c.get("/api/search", params={"q": "nodules pulmonaires", "kind": "report"}).json()
        assert [r["id"] for r in body["reports"]] == [shown]
        assert body["reports_total"] == 1 and body["patients"] == []
        report = body["reports"][0]
        assert (report["master_id"], report["site"], report["status"]) == (record.master, "SITE-B", "final")
        later = c.get("/api/search", params={"q": "pulmonaire", "from": "2099-01-01"}).json()
        assert later["reports"] == []


def test_a_search_needs_words_and_a_sensible_date_range(record: Record) -> None:
    with record.client(pro("dr-care", "treating-doctor", "SITE-A")) as c:
        assert c.get("/api/search", params={"q": "  ,  "}).status_code == 400
        r = c.get("/api/search", params={"q": "x", "from": "2026-02-01", "to": "2026-01-01"})
        assert r.status_code == 400 and "from is after to" in r.json()["detail"]
        assert c.get("/api/search", params={"q": "x", "kind": "everything"}).status_code == 422
