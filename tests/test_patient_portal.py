"""The patient portal's API: a patient signed in with the access code and a one-time code reads their released
record (frozen-section verdicts once signed, and what other modules release), only their own, and downloads a
study as a ZIP whose DICOMDIR pydicom reads back and whose files are the stored bytes."""

from __future__ import annotations

import hashlib
import io
import re
import subprocess
import zipfile
from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from pydicom import dcmread
from pydicom.fileset import FileSet
from sqlalchemy import select

from archipel.platform import access, audit, portal
from archipel.platform.audit import AuditEvent
from archipel.platform.authn import Principal
from archipel.platform.db import Database
from archipel.platform.patient_access import issue_access_code
from archipel.platform.runtime import Runtime
from archipel.radiology.archive import Archive
from archipel.radiology.samples import SyntheticPatient, ct_series, mr_series, to_bytes
from archipel.wsi.frozen_models import FrozenSectionRequest
from tests.access_support import ensure_master
from tests.auth_helpers import Clock, bearer

ALICE = SyntheticPatient("PP0001", "PORTAIL^Alice", "19800101", "F", issuer="SITE-A")
BRUNO = SyntheticPatient("PP0002", "AUTRE^Bruno", "19750505", "M", issuer="SITE-A")


def _sign_in(runtime: Runtime, clock: Clock, http: TestClient, who: SyntheticPatient) -> dict[str, str]:
    """Access code, then the one-time code read from the file outbox: the patient's bearer header."""
    ensure_master(runtime.db, who.issuer, who.patient_id, who.name.split("^")[0], who.birth_date)
    with runtime.db.write() as s:
        code = issue_access_code(
            s,
            f"{who.issuer}/{who.patient_id}",
            "email",
            "patient.test@example.org",
            now=clock.now,
            valid_for=timedelta(days=30),
        )
    assert http.post("/api/patient/access", json={"code": code}).status_code == 200
    last = sorted((runtime.settings.data_dir / "outbox").iterdir())[-1]
    otp = re.search(r"one-time code is (\d{6})", last.read_text())
    assert otp is not None
    r = http.post("/api/patient/verify", json={"code": code, "otp": otp.group(1)})
    assert r.status_code == 200, r.text
    return bearer(r.json()["access_token"])


def _frozen(db: Database, master: int, specimen: str, signed: bool, clock: Clock) -> int:
    with db.write() as s:
        req = FrozenSectionRequest(
            issuer="SITE-A",
            patient_id=ALICE.patient_id,
            master_id=master,
            specimen=specimen,
            specimen_site="left breast",
            clinical_question="margins?",
            or_phone="+33 3 00 00 00 00",
            requested_by="dr-test",
            requesting_site="SITE-A",
            requested_at=clock.now,
        )
        if signed:
            req.verdict_at, req.verdict_by = clock.now + timedelta(minutes=15), "patho-test"
            req.diagnosis, req.margins, req.verdict_text = "benign", "clear", "No malignancy seen."
            req.signed_payload, req.signature, req.signing_key_id = "{}", "ab" * 32, "k1"
        s.add(req)
        s.flush()
        return req.id


def _events(runtime: Runtime, action: str) -> list[AuditEvent]:
    with runtime.db.sessions() as s:
        return list(s.execute(select(AuditEvent).where(AuditEvent.action == action)).scalars())


def test_a_patient_sees_their_released_results_and_not_what_is_pending(
    runtime: Runtime, clock: Clock, http: TestClient
) -> None:
    headers = _sign_in(runtime, clock, http, ALICE)
    me = http.get("/api/patient/me", headers=headers).json()
    master = me["master_id"]
    assert (me["patient"], me["role"]) == ("SITE-A/PP0001", "patient") and master
    signed = _frozen(runtime.db, master, "lumpectomy", True, clock)
    _frozen(runtime.db, master, "sentinel node", False, clock)

    def reports(_db: Database, _p: Principal, m: int, _f: access.Facts) -> list[portal.RecordItem]:
        return [
            portal.RecordItem(
                "test-report", "final", "SITE-A", clock.now, "CT report", "final", released=True
            ),
            portal.RecordItem("test-report", "draft", "SITE-A", clock.now, "CT report", "preliminary"),
        ]

    portal.register_source("test-report", reports)
    try:
        r = http.get("/api/patient/record", headers=headers)
    finally:
        portal._sources.pop("test-report", None)
    assert r.status_code == 200, r.text
    items = {(i["kind"], i["id"]): i for i in r.json()["items"]}
    assert set(items) >= {("frozen-section", str(signed)), ("test-report", "final")}
    assert ("test-report", "draft") not in items
    assert [k for k in items if k[0] == "frozen-section"] == [("frozen-section", str(signed))]
    verdict = items[("frozen-section", str(signed))]
    assert verdict["detail"]["diagnosis"] == "Benign" and verdict["detail"]["text"] == "No malignancy seen."
    assert verdict["released"] is True
    read = _events(runtime, "read:patient")
    assert read[-1].event_type == audit.PATIENT_RECORD and read[-1].outcome == audit.SUCCESS


def test_a_patient_cannot_read_or_download_another_patients_record(
    runtime: Runtime, clock: Clock, http: TestClient, archive: Archive
) -> None:
    other = ct_series(BRUNO, 1, key="portal/bruno")[0]
    assert archive.store(to_bytes(other), source_ae="MODALITY", default_issuer="SITE-A").status == "stored"
    bruno_master = ensure_master(runtime.db, BRUNO.issuer, BRUNO.patient_id, "AUTRE", BRUNO.birth_date)
    headers = _sign_in(runtime, clock, http, ALICE)
    listed = http.get("/api/patient/studies", headers=headers)
    assert listed.status_code == 200 and listed.json()["studies"] == []
    r = http.get(f"/api/patient/studies/{other.StudyInstanceUID}/dicom.zip", headers=headers)
    assert r.status_code == 403 and r.json()["detail"] == "a patient may read only their own record"
    refused = _events(runtime, "read:study")[-1]
    assert (refused.event_type, refused.outcome) == (audit.EXPORT, audit.DENIED)
    assert http.get(f"/api/patients/{bruno_master}/studies", headers=headers).status_code == 403
    assert http.get("/api/patient/studies/1.2.3.4/dicom.zip", headers=headers).status_code == 404
    assert http.get("/api/patient/record").status_code == 401


def test_the_study_zip_holds_a_dicomdir_pydicom_reads_and_the_stored_bytes_unchanged(
    runtime: Runtime, clock: Clock, http: TestClient, archive: Archive, tmp_path: Path
) -> None:
    ct = ct_series(ALICE, 3, key="portal/alice-ct", rows=32, cols=32)
    mr = mr_series(ALICE, 2, study_uid=ct[0].StudyInstanceUID, key="portal/alice-mr")
    originals = {ds.SOPInstanceUID: to_bytes(ds) for ds in [*ct, *mr]}
    for data in originals.values():
        assert archive.store(data, source_ae="MODALITY", default_issuer="SITE-A").status == "stored"
    headers = _sign_in(runtime, clock, http, ALICE)
    studies = http.get("/api/patient/studies", headers=headers).json()["studies"]
    assert [s["study_uid"] for s in studies] == [ct[0].StudyInstanceUID]
    r = http.get(studies[0]["links"]["download"], headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    assert r.headers["content-disposition"].startswith("attachment; filename=")
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        assert zf.testzip() is None
        assert zf.namelist()[0] == "DICOMDIR"
        zf.extractall(tmp_path / "media")
    fileset = FileSet(dcmread(tmp_path / "media" / "DICOMDIR"))
    found = {i.SOPInstanceUID: Path(i.path).read_bytes() for i in fileset}
    assert {i.load().StudyInstanceUID for i in fileset} == {ct[0].StudyInstanceUID}
    # dicom3tools, a peer that knows the Basic Directory IOD, finds no error in the DICOMDIR
    checked = subprocess.run(
        ["dciodvfy", str(tmp_path / "media" / "DICOMDIR")], capture_output=True, text=True
    )
    assert checked.returncode == 0 and "Error" not in checked.stdout + checked.stderr, checked.stderr
    assert len(fileset) == len(originals)
    assert {uid: hashlib.sha256(b).hexdigest() for uid, b in found.items()} == {
        uid: hashlib.sha256(b).hexdigest() for uid, b in originals.items()
    }
    export = _events(runtime, "read:study")[-1]
    assert (export.event_type, export.outcome, export.patient) == (
        audit.EXPORT,
        audit.SUCCESS,
        "SITE-A/PP0001",
    )


def test_patient_routes_are_for_patients_only(runtime: Runtime, http: TestClient) -> None:
    from tests.auth_helpers import login, make_account

    account = make_account(runtime, "dr-portal", "radiologist", "SITE-A")
    token = login(http, account, runtime.clock()).json()["access_token"]
    for path in ("/api/patient/me", "/api/patient/record", "/api/patient/studies"):
        r = http.get(path, headers=bearer(token))
        assert r.status_code == 403 and "for patients" in r.json()["detail"], path


def test_a_browser_session_opens_with_the_one_time_code_and_a_wrong_one_is_refused_and_audited(
    runtime: Runtime, clock: Clock, http: TestClient
) -> None:
    ensure_master(runtime.db, ALICE.issuer, ALICE.patient_id, "PORTAIL", ALICE.birth_date)
    with runtime.db.write() as s:
        code = issue_access_code(
            s, "SITE-A/PP0001", "sms", "+33600000001", now=clock.now, valid_for=timedelta(days=1)
        )
    assert http.post("/api/patient/access", json={"code": code}).json()["to"].endswith("01")
    last = sorted((runtime.settings.data_dir / "outbox").iterdir())[-1]
    otp = re.search(r"one-time code is (\d{6})", last.read_text())
    assert otp is not None
    wrong = f"{(int(otp.group(1)) + 1) % 1_000_000:06d}"
    r = http.post("/api/patient/session", json={"code": code, "otp": wrong})
    assert (r.status_code, r.json()["detail"]) == (401, "invalid one-time code")
    assert _events(runtime, "patient-login")[-1].outcome == audit.DENIED
    r = http.post("/api/patient/session", json={"code": code, "otp": otp.group(1)})
    assert r.status_code == 200 and r.json()["csrf_token"]
    me = http.get("/api/patient/me")  # the cookie, no bearer token
    assert me.status_code == 200 and me.json()["patient"] == "SITE-A/PP0001"
    withdrawn = http.post(
        "/api/patient/consent", json={"sharing": "refused"}, headers={"X-CSRF-Token": r.json()["csrf_token"]}
    )
    assert withdrawn.status_code == 201 and withdrawn.json()["sharing"] == "refused"
    clock.advance(days=1)
    expired = http.post("/api/patient/access", json={"code": code})
    assert (expired.status_code, expired.json()["detail"]) == (401, "access code expired")


def test_a_patient_may_open_their_own_slides_and_studies_in_the_viewers_and_no_one_elses(
    runtime: Runtime,
) -> None:
    from archipel.wsi.slide_access import slide_resource

    ensure_master(runtime.db, ALICE.issuer, ALICE.patient_id, "PORTAIL", ALICE.birth_date)
    ensure_master(runtime.db, BRUNO.issuer, BRUNO.patient_id, "AUTRE", BRUNO.birth_date)
    alice = Principal(subject="SITE-A/PP0001", role="patient", kind="patient")
    own = slide_resource("SITE-A", ALICE.patient_id, "slide:1")
    assert access.check(runtime.db, alice, access.READ, own, event_type=audit.PATIENT_RECORD).allowed
    study = access.Resource(kind="study", site="SITE-A", patient="SITE-A/PP0001", ident="1.2.3")
    assert access.check(runtime.db, alice, access.READ, study, event_type=audit.PATIENT_RECORD).allowed
    other = slide_resource("SITE-A", BRUNO.patient_id, "slide:2")
    try:
        access.check(runtime.db, alice, access.READ, other, event_type=audit.PATIENT_RECORD)
    except access.AccessDenied as exc:
        assert exc.reason == "a patient may read only their own record"
    else:
        raise AssertionError("a patient read another patient's slide")


def test_guessing_the_one_time_code_through_the_browser_sign_in_locks_the_access_code(
    runtime: Runtime, clock: Clock, http: TestClient
) -> None:
    runtime.settings.lockout_threshold = 3
    ensure_master(runtime.db, ALICE.issuer, ALICE.patient_id, "PORTAIL", ALICE.birth_date)
    with runtime.db.write() as s:
        code = issue_access_code(
            s, "SITE-A/PP0001", "email", "a.test@example.org", now=clock.now, valid_for=timedelta(days=1)
        )
    assert http.post("/api/patient/access", json={"code": code}).status_code == 200
    last = sorted((runtime.settings.data_dir / "outbox").iterdir())[-1]
    found = re.search(r"one-time code is (\d{6})", last.read_text())
    assert found is not None
    otp = found.group(1)
    wrong = f"{(int(otp) + 1) % 1_000_000:06d}"
    for _ in range(3):
        assert http.post("/api/patient/session", json={"code": code, "otp": wrong}).status_code == 401
    locked = http.post("/api/patient/session", json={"code": code, "otp": otp})
    assert locked.status_code == 423 and "retry-after" in locked.headers
    assert "archipel-session" not in " ".join(locked.headers.get_list("set-cookie"))
    assert http.get("/api/patient/me").status_code == 401
    assert [e.outcome for e in _events(runtime, "patient-login")][-4:] == [audit.DENIED] * 4


def test_an_amended_verdict_shows_its_latest_signed_answer(
    runtime: Runtime, clock: Clock, http: TestClient
) -> None:
    from archipel.wsi.frozen_models import FrozenSectionAmendment

    headers = _sign_in(runtime, clock, http, ALICE)
    master = http.get("/api/patient/me", headers=headers).json()["master_id"]
    signed = _frozen(runtime.db, master, "lumpectomy", True, clock)
    with runtime.db.write() as s:
        s.add(
            FrozenSectionAmendment(
                request_id=signed,
                at=clock.now + timedelta(hours=2),
                by="patho-test",
                reason="permanent sections",
                diagnosis="malignant",
                margins="close",
                text="Invasive carcinoma on permanent sections.",
                sr_sop_uid="1.2.3.4.5",
                signed_payload="{}",
                signature="cd" * 32,
                signing_key_id="k1",
            )
        )
    items = http.get("/api/patient/record", headers=headers).json()["items"]
    verdict = next(i for i in items if i["kind"] == "frozen-section")
    assert verdict["status"] == "amended"
    assert (verdict["detail"]["diagnosis"], verdict["detail"]["margins"]) == ("Malignant", "Margins close")
    assert verdict["detail"]["text"] == "Invasive carcinoma on permanent sections."


def test_a_study_whose_stored_file_is_missing_is_refused_before_any_byte_of_the_zip(
    runtime: Runtime, clock: Clock, http: TestClient, archive: Archive
) -> None:
    from archipel.radiology.models import Instance

    ds = ct_series(ALICE, 1, key="portal/alice-lost", rows=16, cols=16)[0]
    assert archive.store(to_bytes(ds), source_ae="MODALITY", default_issuer="SITE-A").status == "stored"
    with runtime.db.sessions() as s:
        key = s.execute(select(Instance.blob_key).where(Instance.sop_uid == ds.SOPInstanceUID)).scalar_one()
    runtime.blobs.delete(key)
    headers = _sign_in(runtime, clock, http, ALICE)
    r = http.get(f"/api/patient/studies/{ds.StudyInstanceUID}/dicom.zip", headers=headers)
    assert r.status_code == 500 and "cannot be read; nothing was sent" in r.json()["detail"]


def test_all_my_images_come_in_one_zip_with_one_dicomdir_and_nobody_elses(
    runtime: Runtime, clock: Clock, http: TestClient, archive: Archive, tmp_path: Path
) -> None:
    ct = ct_series(ALICE, 2, key="portal/all-ct", rows=16, cols=16)
    mr = mr_series(ALICE, 1, key="portal/all-mr")
    other = ct_series(BRUNO, 1, key="portal/all-bruno", rows=16, cols=16)
    for ds in [*ct, *mr, *other]:
        assert archive.store(to_bytes(ds), source_ae="MODALITY", default_issuer="SITE-A").status == "stored"
    headers = _sign_in(runtime, clock, http, ALICE)
    r = http.get("/api/patient/dicom.zip", headers=headers)
    assert r.status_code == 200, r.text
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        zf.extractall(tmp_path / "all")
    fileset = FileSet(dcmread(tmp_path / "all" / "DICOMDIR"))
    assert {i.SOPInstanceUID for i in fileset} == {ds.SOPInstanceUID for ds in [*ct, *mr]}
    assert {i.load().StudyInstanceUID for i in fileset} == {ct[0].StudyInstanceUID, mr[0].StudyInstanceUID}
    export = _events(runtime, "read:patient")[-1]
    assert (export.event_type, export.outcome, export.patient) == (
        audit.EXPORT,
        audit.SUCCESS,
        "SITE-A/PP0001",
    )
