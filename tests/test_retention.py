"""The retention run: a dry run lists and deletes nothing; a run deletes an expired unheld study (index rows and
blobs, one audit event naming the rule) and keeps a held one, a recent one, and a blob a kept row shares; holds
from the CLI and the admin API; rejected instances go after their delay."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from archipel.app import create_app
from archipel.cli.common import app as cli_app
from archipel.platform import audit
from archipel.platform.authn import Principal
from archipel.platform.credentials import current_principal
from archipel.platform.retention_rules import french_rules
from archipel.platform.runtime import Runtime
from archipel.radiology import documents
from archipel.radiology.archive import Archive
from archipel.radiology.documents_models import Document
from archipel.radiology.legal_holds import add_hold, lift_hold, list_holds
from archipel.radiology.models import Patient, Series, Study
from archipel.radiology.retention import STUDY_DELETED, plan_retention, run_retention
from archipel.radiology.retention_models import RejectedInstance
from archipel.radiology.samples import SyntheticPatient, ct_series, rejection_note, to_bytes

ADMIN = Principal("ret-admin", "admin", kind="user")
TODAY = date(2026, 12, 2)
OLD = SyntheticPatient("RT-OLD", "RETTEST^Old", "19500101", "F", "SITE-A")
HELD = SyntheticPatient("RT-HELD", "RETTEST^Held", "19510202", "M", "SITE-A")
RECENT = SyntheticPatient("RT-NEW", "RETTEST^Recent", "19520303", "F", "SITE-A")


@dataclass
class Stored:
    old: str
    held: str
    recent: str
    old_keys: list[str]
    shared_key: str


@pytest.fixture
def stored(runtime: Runtime, archive: Archive) -> Stored:
    """An old study (2000) of OLD and of HELD, a recent one (2020) of RECENT, and a document of RECENT whose
    content is byte for byte one of OLD's instances (so its blob is shared)."""
    old = ct_series(OLD, 2, study_date="20000105", rows=8, cols=8)
    held = ct_series(HELD, 1, study_date="20000105", rows=8, cols=8)
    recent = ct_series(RECENT, 1, study_date="20201010", rows=8, cols=8)
    keys = [archive.store(to_bytes(ds)).sha256 for ds in old]
    for ds in [*held, *recent]:
        archive.store(to_bytes(ds))
    doc = documents.register(
        runtime.db,
        runtime.blobs,
        Principal("dr-x", "radiologist", site="SITE-A"),
        issuer=RECENT.issuer,
        patient_id=RECENT.patient_id,
        type_code="18748-4",
        title="attached image",
        content=b"an image attached to a report",
        content_type="text/plain",
        author="dr-x",
        organisation="SITE-A",
        site="SITE-A",
    )
    # Blobs are content-addressed, so rows of different kinds can name one blob: this kept document names the
    # blob of one of OLD's instances (as if its content were those bytes).
    with runtime.db.write() as s:
        s.execute(update(Document).where(Document.id == doc.id).values(blob_key=keys[1]))
    return Stored(
        old[0].StudyInstanceUID, held[0].StudyInstanceUID, recent[0].StudyInstanceUID, keys, keys[1]
    )


def _cli(runtime: Runtime, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    import archipel.cli  # noqa: F401  (registers the commands)

    monkeypatch.setenv("ARCHIPEL_DATABASE_URL", runtime.settings.effective_database_url)
    result = CliRunner().invoke(cli_app, [*args, "--data", str(runtime.settings.data_dir)])
    return result.exit_code, result.stdout


def _studies(runtime: Runtime) -> set[str]:
    with runtime.db.sessions() as s:
        return set(s.execute(select(Study.study_uid)).scalars())


def _deletions(runtime: Runtime) -> list[audit.AuditEvent]:
    with runtime.db.sessions() as s:
        return list(
            s.execute(select(audit.AuditEvent).where(audit.AuditEvent.event_type == STUDY_DELETED)).scalars()
        )


def test_a_dry_run_lists_the_expired_and_held_studies_and_deletes_nothing_and_a_lifted_hold_keeps_nothing(
    runtime: Runtime, stored: Stored, monkeypatch: pytest.MonkeyPatch
) -> None:
    hold = add_hold(runtime.db, "patient", f"{HELD.issuer}/{HELD.patient_id}", "litigation", ADMIN)
    plan = plan_retention(runtime.db, french_rules(), TODAY, 30)
    assert [(i.kind, i.ident, i.rule) for i in plan.due] == [("study", stored.old, "default")]
    assert [i.ident for i in plan.held] == [stored.held]
    assert plan.due[0].expired_on == date(2020, 1, 5)

    code, said = _cli(runtime, monkeypatch, "retention", "run", "--dry-run")
    assert code == 0, said
    assert "1 expired and due, 1 expired but held" in said
    assert "nothing deleted" in said
    assert _studies(runtime) == {stored.old, stored.held, stored.recent}
    assert all(runtime.blobs.exists(k) for k in stored.old_keys)
    assert _deletions(runtime) == []

    # Once lifted, the hold keeps nothing; it stays listed with who lifted it.
    lift_hold(runtime.db, hold.id, "case closed", ADMIN)
    assert list_holds(runtime.db) == []
    assert list_holds(runtime.db, include_lifted=True)[0].lifted_by == ADMIN.subject
    due = {i.ident for i in plan_retention(runtime.db, french_rules(), TODAY, 30).due}
    assert due == {stored.old, stored.held}


def test_a_run_deletes_the_expired_unheld_study_and_keeps_held_recent_and_shared(
    runtime: Runtime, stored: Stored, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_hold(runtime.db, "study", stored.held, "expert opinion pending", ADMIN)
    code, said = _cli(runtime, monkeypatch, "retention", "run")

    assert code == 0, said
    assert (
        "deleted 1 studies (2 instances), 0 documents, 0 rejected instances; 1 blobs removed, "
        "1 kept (still referenced); 1 held; 0 failed"
    ) in " ".join(said.split())
    assert _studies(runtime) == {stored.held, stored.recent}
    with runtime.db.sessions() as s:
        assert s.execute(select(Patient.id).where(Patient.patient_id == OLD.patient_id)).first() is None
        assert s.execute(select(func.count()).select_from(Series)).scalar_one() == 2
    # One instance's blob is gone; the other is also a kept document's content, so it stays.
    assert not runtime.blobs.exists(stored.old_keys[0])
    assert runtime.blobs.exists(stored.shared_key)
    events = _deletions(runtime)
    assert [(e.patient, e.object, e.action) for e in events] == [
        (f"{OLD.issuer}/{OLD.patient_id}", f"study:{stored.old}", "D")
    ]
    assert "rule=default expired_on=2020-01-05 instances=2" in events[0].detail
    # Nothing is left to do: a second run deletes nothing.
    assert plan_retention(runtime.db, french_rules(), TODAY, 30).due == []


def test_rejected_instances_are_deleted_after_their_delay_and_113039_at_once(
    runtime: Runtime, archive: Archive
) -> None:
    patient = SyntheticPatient("RT-REJ", "RETTEST^Rejected", "19900101", "F", "SITE-A")
    ct = ct_series(patient, 3, study_date="20261101", rows=8, cols=8)
    keys = [archive.store(to_bytes(ds)).sha256 for ds in ct]
    archive.store(to_bytes(rejection_note(ct[:1], "113001")))
    archive.store(to_bytes(rejection_note(ct[1:2], "113039")))
    # The notes are dated by the clock (rejected_at), so the delays count from today, not from TODAY.
    today = datetime.now(UTC).date()
    due = plan_retention(runtime.db, french_rules(), today, 30).due
    assert [(i.kind, i.ident, i.rule) for i in due] == [("rejected", ct[1].SOPInstanceUID, "iocm-113039")]
    later = plan_retention(runtime.db, french_rules(), today + timedelta(days=31), 30).due
    assert {i.ident for i in later} == {ct[0].SOPInstanceUID, ct[1].SOPInstanceUID}

    # The storage lifecycle (tiers, fixity) still counts the rejected blobs as referenced until they are deleted.
    import archipel.radiology.blob_sources  # noqa: F401  (registers the archive's sources)
    from archipel.platform import blob_refs

    refs = blob_refs.references(blob_refs.MAIN_STORE)
    assert refs is not None
    with runtime.db.sessions() as s:
        assert set(keys) <= set(s.execute(select(refs.c.key)).scalars())

    run_retention(runtime.db, runtime.blobs.delete, later, ADMIN)
    assert not runtime.blobs.exists(keys[0]) and not runtime.blobs.exists(keys[1])
    assert runtime.blobs.exists(keys[2])
    with runtime.db.sessions() as s:
        purged = s.execute(
            select(RejectedInstance.purged_at).where(RejectedInstance.blob_key.is_(None))
        ).all()
        assert len(purged) == 2
    assert len(_deletions(runtime)) == 2


def test_holds_through_the_admin_api_are_placed_listed_and_lifted(runtime: Runtime, stored: Stored) -> None:
    app = create_app()
    app.dependency_overrides[current_principal] = lambda: ADMIN
    with TestClient(app) as client:
        r = client.post(
            "/api/retention/holds", json={"scope": "study", "target": stored.held, "reason": "court"}
        )
        assert r.status_code == 201, r.text
        hold = r.json()
        bad = client.post("/api/retention/holds", json={"scope": "study", "target": "1.2.3", "reason": "x"})
        assert bad.status_code == 422 and "no study 1.2.3" in bad.json()["detail"]
        assert [h["id"] for h in client.get("/api/retention/holds").json()] == [hold["id"]]
        expired = client.get("/api/retention/expired").json()
        assert [i["object"] for i in expired["held"]] == [stored.held]
        lifted = client.post(f"/api/retention/holds/{hold['id']}/lift", json={"reason": "done"})
        assert lifted.status_code == 200 and lifted.json()["active"] is False
        again = client.post(f"/api/retention/holds/{hold['id']}/lift", json={"reason": "done"})
        assert again.status_code == 409
    with runtime.db.sessions() as s:
        record = s.execute(
            select(audit.AuditEvent.action).where(
                audit.AuditEvent.event_type == audit.PATIENT_RECORD,
                audit.AuditEvent.object.like("legal-hold:%"),
            )
        ).scalars()
        assert list(record) == ["C", "U"]


def test_a_child_seen_young_is_kept_until_the_28th_birthday(runtime: Runtime, archive: Archive) -> None:
    child = SyntheticPatient("RT-KID", "RETTEST^Child", "20050601", "M", "SITE-A")
    study = ct_series(child, 1, study_date="20060101", rows=8, cols=8)
    archive.store(to_bytes(study[0]))
    # Seen at 6 months: 20 years later (2026-01-01) is before the 28th birthday (2033-06-01).
    assert plan_retention(runtime.db, french_rules(), TODAY, 30).due == []
    due = plan_retention(runtime.db, french_rules(), date(2033, 6, 1), 30).due
    assert [i.ident for i in due] == [study[0].StudyInstanceUID]


def test_the_weekly_job_is_registered_and_deletes_only_once_switched_on(
    runtime: Runtime, stored: Stored, clock: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from archipel.platform import schedule
    from archipel.radiology.retention_tasks import RUN_TASK, scheduled_run

    entry = schedule.beat_schedule()[RUN_TASK]
    assert entry["options"] == {"queue": "ingest"} and entry["schedule"] == 7 * 24 * 3600
    assert scheduled_run() == 0
    assert stored.old in _studies(runtime)
    monkeypatch.setattr(runtime.settings, "retention_scheduled", True)
    assert scheduled_run() == 2  # OLD's and HELD's studies (no hold here); RECENT's stays
    assert _studies(runtime) == {stored.recent}
    assert {e.actor for e in _deletions(runtime)} == {"retention-job"}


def test_a_document_about_a_held_study_is_held_with_it(runtime: Runtime, archive: Archive) -> None:
    patient = SyntheticPatient("RT-DOC", "RETTEST^Document", "19600101", "F", "SITE-A")
    study = ct_series(patient, 1, study_date="20000105", rows=8, cols=8)
    archive.store(to_bytes(study[0]))
    doc = documents.register(
        runtime.db,
        runtime.blobs,
        Principal("dr-x", "radiologist", site="SITE-A"),
        issuer=patient.issuer,
        patient_id=patient.patient_id,
        type_code="18748-4",
        title="CT report",
        content=b"no finding",
        content_type="text/plain",
        author="dr-x",
        organisation="SITE-A",
        site="SITE-A",
        study_uids=[study[0].StudyInstanceUID],
    )
    with runtime.db.write() as s:
        old = datetime(2000, 1, 6, tzinfo=UTC)
        s.execute(update(Document).where(Document.id == doc.id).values(created_at=old))
    plan = plan_retention(runtime.db, french_rules(), TODAY, 30)
    assert {(i.kind, i.rule) for i in plan.due} == {("study", "default"), ("document", "default")}
    add_hold(runtime.db, "study", study[0].StudyInstanceUID, "complaint", ADMIN)
    plan = plan_retention(runtime.db, french_rules(), TODAY, 30)
    assert plan.due == []
    assert {i.ident for i in plan.held} == {study[0].StudyInstanceUID, doc.uid}
