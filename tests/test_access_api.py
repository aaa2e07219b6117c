"""The access-control records through HTTP: consent (professionals and patients, with its history), care
relationships, study confidentiality codes and break-the-glass (reason, recent login, time limit, alert,
audit purpose); each with its clear 4xx for bad input."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from archipel.app import create_app
from archipel.platform import breakglass
from archipel.platform.audit import AuditEvent
from archipel.platform.authn import Principal, create_user
from archipel.platform.db import utcnow
from archipel.platform.http import current_principal
from archipel.platform.notify import OutboxMessage
from archipel.platform.runtime import Runtime
from archipel.radiology.archive import Archive
from archipel.radiology.samples import SyntheticPatient, ct_series, to_bytes
from tests.access_support import ensure_master, relate

ALICE = SyntheticPatient("API0001", "APITEST^Alice", "19750303", "F", "SITE-A")
BOB = SyntheticPatient("API0002", "OTHERNAME^Bob", "19820909", "M", "SITE-B")


@dataclass
class Setup:
    """The runtime, stored studies and masters, and a way to act as anyone."""

    runtime: Runtime
    alice_study: str
    bob_study: str
    alice: int
    bob: int

    def client(self, principal: Principal) -> TestClient:
        app = create_app()
        app.dependency_overrides[current_principal] = lambda: principal
        return TestClient(app)


def user(name: str, role: str, site: str = "", fresh: bool = True) -> Principal:
    """A professional, logged in just now (or two hours ago)."""
    when = utcnow() - (timedelta(0) if fresh else timedelta(hours=2))
    return Principal(name, role, site, auth_time=when, method="password+totp")


@pytest.fixture
def setup(runtime: Runtime, archive: Archive) -> Iterator[Setup]:
    """Alice at SITE-A and Bob at SITE-B, one CT study each, both in the MPI."""
    a = ct_series(ALICE, 1, rows=8, cols=8)
    b = ct_series(BOB, 1, rows=8, cols=8)
    for ds in (*a, *b):
        archive.store(to_bytes(ds))
    db = runtime.db
    yield Setup(
        runtime,
        str(a[0].StudyInstanceUID),
        str(b[0].StudyInstanceUID),
        ensure_master(db, "SITE-A", ALICE.patient_id, "APITEST", ALICE.birth_date),
        ensure_master(db, "SITE-B", BOB.patient_id, "OTHERNAME", BOB.birth_date),
    )


def metadata(client: TestClient, study: str) -> int:
    return client.get(f"/dicom-web/studies/{study}/metadata").status_code


def test_a_patient_refuses_then_gives_sharing_again_and_the_history_keeps_both(setup: Setup) -> None:
    patient = Principal(f"SITE-A/{ALICE.patient_id}", "patient", kind="patient")
    with setup.client(patient) as c:
        assert c.get("/api/patient/consent").json()["sharing"] == "not-recorded"
        assert c.post("/api/patient/consent", json={"sharing": "refused"}).status_code == 201
        assert (
            c.post("/api/patient/consent", json={"sharing": "granted", "note": "changed my mind"}).status_code
            == 201
        )
        body = c.get("/api/patient/consent").json()
    assert body["sharing"] == "granted"
    assert [(h["sharing"], h["method"], h["recorded_by"]) for h in body["history"]] == [
        ("refused", "portal", patient.subject),
        ("granted", "portal", patient.subject),
    ]


def test_refused_sharing_hides_the_patient_from_a_care_team_member_the_patient_did_not_name(
    setup: Setup,
) -> None:
    db = setup.runtime.db
    relate(db, "dr-unnamed", setup.bob)
    relate(db, "dr-named", setup.bob, named=True)
    unnamed, named = user("dr-unnamed", "treating-doctor"), user("dr-named", "treating-doctor")
    clerk = user("rad-b", "radiologist", "SITE-B")
    with setup.client(unnamed) as c:
        assert metadata(c, setup.bob_study) == 200
    with setup.client(clerk) as c:
        r = c.post(f"/api/patients/{setup.bob}/consent", json={"sharing": "refused", "method": "paper"})
        assert r.status_code == 201 and r.json()["sharing"] == "refused"
    with setup.client(unnamed) as c:
        assert metadata(c, setup.bob_study) == 403
        assert c.get("/dicom-web/studies", params={"PatientID": BOB.patient_id}).json() == []
    with setup.client(named) as c:
        assert metadata(c, setup.bob_study) == 200
    with setup.client(clerk) as c:  # the producing site still sees it
        assert metadata(c, setup.bob_study) == 200


def test_consent_recorded_by_someone_outside_the_patients_sites_is_refused_and_audited(setup: Setup) -> None:
    outsider = user("rad-a", "radiologist", "SITE-A")
    with setup.client(outsider) as c:
        r = c.post(f"/api/patients/{setup.bob}/consent", json={"sharing": "refused", "method": "paper"})
    assert r.status_code == 403
    with setup.runtime.db.sessions() as s:
        last = s.execute(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(1)).scalar_one()
    assert (last.action, last.outcome, last.actor) == ("update:consent", "denied", "rad-a")


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        ({"sharing": "maybe", "method": "paper"}, 422, "sharing"),
        ({"sharing": "refused", "method": "telepathy"}, 422, "method"),
        ({"sharing": "refused"}, 422, "method"),
    ],
)
def test_a_malformed_consent_gets_a_422_naming_the_field(
    setup: Setup, body: dict[str, str], status: int, reason: str
) -> None:
    with setup.client(user("admin", "admin")) as c:
        r = c.post(f"/api/patients/{setup.alice}/consent", json=body)
    assert r.status_code == status and reason in r.text


def test_an_unknown_patient_is_404_after_the_check(setup: Setup) -> None:
    with setup.client(user("admin", "admin")) as c:
        r = c.post("/api/patients/987654/consent", json={"sharing": "refused", "method": "paper"})
    assert r.status_code == 404 and "no master patient 987654" in r.json()["detail"]


def test_a_care_relationship_opens_another_sites_study_until_it_ends(setup: Setup) -> None:
    recorder = user("rad-b", "radiologist", "SITE-B")
    doctor = user("dr-who", "treating-doctor")
    with setup.client(doctor) as c:
        assert metadata(c, setup.bob_study) == 403
    with setup.client(recorder) as c:
        r = c.post(
            f"/api/patients/{setup.bob}/care-relationships",
            json={"professional": "dr-who", "kind": "treating", "named_by_patient": True},
        )
        assert r.status_code == 201, r.text
        rel = r.json()["id"]
        listed = c.get(f"/api/patients/{setup.bob}/care-relationships", params={"active": True}).json()
        assert [(x["professional"], x["kind"]) for x in listed] == [("dr-who", "treating")]
    with setup.client(doctor) as c:
        assert metadata(c, setup.bob_study) == 200
        assert c.post(f"/api/care-relationships/{rel}/end").status_code == 200
        assert metadata(c, setup.bob_study) == 403
        assert c.post(f"/api/care-relationships/{rel}/end").status_code == 409


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"professional": "x", "kind": "friend"}, "kind"),
        ({"professional": "", "kind": "treating"}, "professional"),
        ({"professional": "x", "kind": "treating", "valid_from": "2026-01-02T00:00:00"}, "time zone"),
        (
            {
                "professional": "x",
                "kind": "treating",
                "valid_from": "2026-02-01T00:00:00Z",
                "valid_to": "2026-01-01T00:00:00Z",
            },
            "end after it starts",
        ),
    ],
)
def test_a_malformed_care_relationship_is_refused_with_its_reason(
    setup: Setup, body: dict[str, str], reason: str
) -> None:
    with setup.client(user("admin", "admin")) as c:
        r = c.post(f"/api/patients/{setup.alice}/care-relationships", json=body)
    assert r.status_code in (400, 422) and reason in r.text


def test_masque_ps_hides_a_study_from_a_caring_professional_elsewhere_but_not_at_its_site(
    setup: Setup,
) -> None:
    relate(setup.runtime.db, "dr-far", setup.alice)
    far, home = user("dr-far", "treating-doctor"), user("rad-a", "radiologist", "SITE-A")
    patient = Principal(f"SITE-A/{ALICE.patient_id}", "patient", kind="patient")
    with setup.client(far) as c:
        assert metadata(c, setup.alice_study) == 200
    with setup.client(patient) as c:  # the patient hides it from professionals
        r = c.post(f"/api/studies/{setup.alice_study}/confidentiality", json={"set": ["MASQUE_PS"]})
        assert r.status_code == 200 and r.json()["codes"] == ["MASQUE_PS"]
        assert (
            c.post(f"/api/studies/{setup.alice_study}/confidentiality", json={"set": ["PSY"]}).status_code
            == 403
        )
    with setup.client(far) as c:
        assert metadata(c, setup.alice_study) == 403
        assert c.get("/dicom-web/studies", params={"PatientID": ALICE.patient_id}).json() == []
    with setup.client(home) as c:
        assert metadata(c, setup.alice_study) == 200


def test_invisible_patient_hides_a_study_from_the_patient_until_released(setup: Setup) -> None:
    home = user("rad-a", "radiologist", "SITE-A")
    patient = Principal(f"SITE-A/{ALICE.patient_id}", "patient", kind="patient")
    with setup.client(home) as c:
        r = c.post(f"/api/studies/{setup.alice_study}/confidentiality", json={"set": ["INVISIBLE_PATIENT"]})
        assert r.status_code == 200
    with setup.client(patient) as c:
        assert metadata(c, setup.alice_study) == 403
        assert c.get("/dicom-web/studies").json() == []
    with setup.client(home) as c:
        assert (
            c.post(
                f"/api/studies/{setup.alice_study}/confidentiality", json={"release": ["INVISIBLE_PATIENT"]}
            ).json()["codes"]
            == []
        )
    with setup.client(patient) as c:
        assert metadata(c, setup.alice_study) == 200
        assert len(c.get("/dicom-web/studies").json()) == 1


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"set": ["SECRET"]}, "unknown confidentiality code SECRET"),
        ({"set": ["PSY"], "release": ["PSY"]}, "both"),
        ({}, "name codes"),
    ],
)
def test_bad_confidentiality_changes_get_a_400_with_the_reason(
    setup: Setup, body: dict[str, list[str]], reason: str
) -> None:
    with setup.client(user("rad-a", "radiologist", "SITE-A")) as c:
        r = c.post(f"/api/studies/{setup.alice_study}/confidentiality", json=body)
    assert r.status_code == 400 and reason in r.json()["detail"]


def test_break_the_glass_needs_a_reason_and_a_recent_login_then_alerts_and_is_audited(setup: Setup) -> None:
    db = setup.runtime.db
    with db.write() as s:
        create_user(s, "dr-referrer", "treating-doctor", "long enough password", email="referrer@example.org")
    relate(db, "dr-referrer", setup.bob, kind="referring")
    admin = user("admin-1", "admin")
    with setup.client(admin) as c:
        assert metadata(c, setup.bob_study) == 403
        short = c.post("/api/break-glass", json={"master_id": setup.bob, "reason": "urgent"})
        assert short.status_code == 400 and "at least 10 characters" in short.json()["detail"]
    with setup.client(user("admin-1", "admin", fresh=False)) as c:
        stale = c.post("/api/break-glass", json={"master_id": setup.bob, "reason": "cardiac arrest in ER"})
        assert (
            stale.status_code == 401
            and "insufficient_user_authentication" in stale.headers["www-authenticate"]
        )
    with setup.client(user("aud", "auditor")) as c:
        assert (
            c.post(
                "/api/break-glass", json={"master_id": setup.bob, "reason": "cardiac arrest in ER"}
            ).status_code
            == 403
        )
    with setup.client(admin) as c:
        opened = c.post("/api/break-glass", json={"master_id": setup.bob, "reason": "cardiac arrest in ER"})
        assert opened.status_code == 201, opened.text
        assert opened.json()["alerted"] == ["dr-referrer"]
        assert metadata(c, setup.bob_study) == 200
        assert metadata(c, setup.alice_study) == 403  # only the patient named
    with db.sessions() as s:
        alert = s.execute(select(OutboxMessage).where(OutboxMessage.purpose == "break-glass")).scalar_one()
        read = s.execute(
            select(AuditEvent)
            .where(
                AuditEvent.actor == "admin-1",
                AuditEvent.action == "read:study",
                AuditEvent.outcome == "success",
            )
            .order_by(AuditEvent.id.desc())
            .limit(1)
        ).scalar_one()
        opened_event = s.execute(
            select(AuditEvent).where(AuditEvent.action == "break-glass-open")
        ).scalar_one()
    assert alert.recipient == "referrer@example.org" and alert.sent_at is not None
    assert (read.purpose, read.outcome) == ("break-glass", "success")
    assert opened_event.purpose == "break-glass" and "cardiac arrest" in opened_event.detail


def test_break_the_glass_ends_when_its_time_is_up(setup: Setup) -> None:
    admin = user("admin-2", "admin")
    with setup.runtime.db.write() as s:
        breakglass.open_access(
            s,
            admin,
            setup.bob,
            "night emergency, unconscious",
            now=utcnow() - timedelta(hours=5),
            minutes=240,
        )
    with setup.client(admin) as c:
        assert metadata(c, setup.bob_study) == 403
        assert c.get("/api/break-glass").json() == []
