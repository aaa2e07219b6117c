"""The professional's timeline ("ligne de vie"): one person's record across sites, newest first, within what
the caller may see; and the portal sources of studies, slides and screening episodes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime

import pytest
from fastapi.testclient import TestClient

from archipel.app import create_app
from archipel.mammo.models import Episode, Programme, ScreeningDecision
from archipel.platform import access, portal
from archipel.platform.authn import Principal
from archipel.platform.db import utcnow
from archipel.platform.http import current_principal
from archipel.platform.identity import review
from archipel.platform.runtime import Runtime
from archipel.radiology.archive import Archive
from archipel.radiology.samples import SyntheticPatient, ct_series, to_bytes
from archipel.wsi.models import Slide
from tests.access_support import ensure_master, mark, relate

AT_A = SyntheticPatient("TLA0001", "TIMELINE^Camille", "19800412", "F", "SITE-A")
AT_B = SyntheticPatient("TLB0777", "TIMELINE^Camille", "19800412", "F", "SITE-B")


@dataclass
class Record:
    runtime: Runtime
    master: int
    ct_a: str
    mr_b: str
    hidden_b: str
    episode: int

    def client(self, principal: Principal) -> TestClient:
        app = create_app()
        app.dependency_overrides[current_principal] = lambda: principal
        return TestClient(app)


def pro(name: str, role: str, site: str) -> Principal:
    return Principal(name, role, site, auth_time=utcnow(), method="password+totp")


def _store(archive: Archive, patient: SyntheticPatient, day: str, description: str, key: str) -> str:
    series = ct_series(patient, 2, rows=8, cols=8, study_date=day, description=description, key=key)
    for ds in series:
        archive.store(to_bytes(ds))
    return str(series[0].StudyInstanceUID)


@pytest.fixture
def record(runtime: Runtime, archive: Archive) -> Iterator[Record]:
    """One woman known at SITE-A and SITE-B (linked by the identity officer): a CT at A, an MR and a study
    she hid from professionals (MASQUE_PS) at B, a slide at B and a decided screening episode at A."""
    db = runtime.db
    ct_a = _store(archive, AT_A, "20250110", "CT THORAX", "tl-ct-a")
    mr_b = _store(archive, AT_B, "20260105", "IRM GENOU", "tl-mr-b")
    hidden_b = _store(archive, AT_B, "20260201", "HIDDEN STUDY", "tl-hidden-b")
    mark(db, hidden_b, "MASQUE_PS")
    master = ensure_master(db, "SITE-A", AT_A.patient_id)
    other = ensure_master(db, "SITE-B", AT_B.patient_id)
    if other != master:
        review.link(
            db, pro("officer", "identity-officer", ""), "SITE-B", AT_B.patient_id, master, "same woman"
        )
    with db.write() as s:
        s.add(
            Slide(
                id="tlslide1",
                issuer="SITE-B",
                patient_id=AT_B.patient_id,
                accession="PATH01",
                stain="HE",
                status="ready",
                source_key="0" * 64,
                created_at=datetime(2026, 1, 20, 9, 0, tzinfo=UTC),
            )
        )
        prog = Programme(code="tl-prog", protocol="fr-depistage")
        s.add(prog)
        s.flush()
        ep = Episode(
            programme_id=prog.id,
            issuer="SITE-A",
            patient_id=AT_A.patient_id,
            master_id=master,
            site="SITE-A",
            round="R2",
            screen_date=date(2025, 6, 2),
            status="decided",
            result_sent_at=datetime(2025, 6, 12, tzinfo=UTC),
        )
        s.add(ep)
        s.flush()
        s.add(ScreeningDecision(episode_id=ep.id, decision="normal", decided_by="reader-1"))
        episode = ep.id
    yield Record(runtime, master, ct_a, mr_b, hidden_b, episode)


def _ids(body: dict[str, object]) -> list[tuple[str, str]]:
    return [(i["kind"], i["id"]) for i in body["items"]]  # type: ignore[index, union-attr]


def test_timeline_shows_both_sites_newest_first_and_hides_the_study_she_hid_from_professionals(
    record: Record,
) -> None:
    relate(record.runtime.db, "dr-care", record.master)
    with record.client(pro("dr-care", "treating-doctor", "SITE-A")) as c:
        r = c.get(f"/api/patients/{record.master}/timeline")
    assert r.status_code == 200, r.text
    body = r.json()
    assert _ids(body) == [
        ("slide", "tlslide1"),
        ("study", record.mr_b),
        ("screening-episode", str(record.episode)),
        ("study", record.ct_a),
    ]
    assert body["sites"] == ["SITE-A", "SITE-B"]
    assert {i["issuer"] for i in body["identities"]} == {"SITE-A", "SITE-B"}
    mr = next(i for i in body["items"] if i["id"] == record.mr_b)
    assert mr["links"]["viewer"] == f"/app/study.html?study={record.mr_b}"
    assert (mr["site"], mr["date"], mr["title"]) == ("SITE-B", "2026-01-05", "IRM GENOU")
    assert record.hidden_b not in r.text


def test_timeline_filters_by_kind_site_and_dates(record: Record) -> None:
    relate(record.runtime.db, "dr-care", record.master)
    url = f"/api/patients/{record.master}/timeline"
    with record.client(pro("dr-care", "treating-doctor", "SITE-A")) as c:
        assert _ids(c.get(url, params={"kind": "study"}).json()) == [
            ("study", record.mr_b),
            ("study", record.ct_a),
        ]
        assert _ids(c.get(url, params={"kind": "study,slide", "site": "SITE-B"}).json()) == [
            ("slide", "tlslide1"),
            ("study", record.mr_b),
        ]
        assert _ids(c.get(url, params={"from": "2025-01-01", "to": "2025-12-31"}).json()) == [
            ("screening-episode", str(record.episode)),
            ("study", record.ct_a),
        ]
        bad = c.get(url, params={"kind": "x-ray-of-the-soul"})
        assert bad.status_code == 400 and "unknown kind" in bad.json()["detail"]
        assert c.get(url, params={"from": "yesterday"}).status_code == 400
        assert c.get(url, params={"from": "2026-01-02", "to": "2026-01-01"}).status_code == 400


def test_a_professional_of_one_site_without_care_relationship_sees_only_that_site(record: Record) -> None:
    with record.client(pro("rad-a", "radiologist", "SITE-A")) as c:
        body = c.get(f"/api/patients/{record.master}/timeline").json()
    assert _ids(body) == [("screening-episode", str(record.episode)), ("study", record.ct_a)]


def test_the_producing_site_sees_the_hidden_study_and_an_outsider_is_refused(record: Record) -> None:
    with record.client(pro("rad-b", "radiologist", "SITE-B")) as c:
        body = c.get(f"/api/patients/{record.master}/timeline", params={"kind": "study"}).json()
    assert _ids(body) == [("study", record.hidden_b), ("study", record.mr_b)]
    with record.client(pro("rad-c", "radiologist", "SITE-C")) as c:
        r = c.get(f"/api/patients/{record.master}/timeline")
    assert r.status_code == 403 and "care relationship" in r.json()["detail"]
    with record.client(pro("rad-c", "radiologist", "SITE-C")) as c:
        assert c.get("/api/patients/999999/timeline").status_code == 403


def test_released_items_are_the_studies_and_the_sent_screening_result(record: Record) -> None:
    db = record.runtime.db
    relate(db, "dr-care", record.master)
    principal = pro("dr-care", "treating-doctor", "SITE-A")
    from archipel.platform import access_facts

    _, facts = access_facts.load(db, principal, access.Resource(kind="patient", master=record.master))
    released = portal.record(
        db, principal, record.master, facts, released_only=True, kinds=["study", "slide", "screening-episode"]
    )
    assert [(i.kind, i.ident) for i in released] == [
        ("study", record.mr_b),
        ("screening-episode", str(record.episode)),
        ("study", record.ct_a),
    ]
    episode = next(i for i in released if i.kind == "screening-episode")
    assert episode.status == "normal" and episode.detail["decision"] == "normal"
