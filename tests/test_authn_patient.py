"""Patients: access code handed out after the exam, plus a one-time code sent through ``notify``."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from archipel.platform import notify
from archipel.platform.patient_access import LEGAL_REPRESENTATIVE, PatientAccessCode, issue_access_code
from archipel.platform.runtime import Runtime
from archipel.radiology.archive import Archive
from archipel.radiology.samples import SyntheticPatient, ct_series, to_bytes
from tests.access_support import mark
from tests.auth_helpers import Clock, bearer, denied_events
from tests.support import archipel_cmd

REF = "SITE-A/PA0001"


def _code(runtime: Runtime, clock: Clock, days: int = 90) -> str:
    with runtime.db.write() as s:
        return issue_access_code(
            s, REF, "email", "jeanne.test@example.org", now=clock.now, valid_for=timedelta(days=days)
        )


def _sent_otp(runtime: Runtime) -> str:
    outbox = runtime.settings.data_dir / "outbox"
    last = sorted(outbox.iterdir())[-1]
    assert last.stat().st_mode & 0o777 == 0o600
    found = re.search(r"one-time code is (\d{6})", last.read_text())
    assert found is not None
    return found.group(1)


def test_access_code_then_one_time_code_gives_a_patient_session(
    runtime: Runtime, clock: Clock, http: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    code = _code(runtime, clock)
    assert re.fullmatch(r"([0-9A-Z]{4}-){4}[0-9A-Z]{4}", code)
    r = http.post("/api/patient/access", json={"code": code.lower().replace("-", " ")})
    assert r.status_code == 200, r.text
    assert r.json() == {"sent": True, "channel": "email", "to": "j***@example.org"}
    otp = _sent_otp(runtime)
    assert otp not in caplog.text and code not in caplog.text and "jeanne" not in caplog.text
    clock.advance(minutes=9)
    r = http.post("/api/patient/verify", json={"code": code, "otp": otp})
    assert r.status_code == 200, r.text
    me = http.get("/api/auth/me", headers=bearer(r.json()["access_token"])).json()
    assert (me["subject"], me["kind"], me["role"], me["method"]) == (
        REF,
        "patient",
        "patient",
        "access-code+otp",
    )


def test_the_code_is_stored_only_as_a_salted_hash_and_sent_messages_lose_their_body(
    runtime: Runtime, clock: Clock, http: TestClient
) -> None:
    code = _code(runtime, clock)
    http.post("/api/patient/access", json={"code": code})
    otp = _sent_otp(runtime)
    with runtime.db.sessions() as s:
        row = s.execute(select(PatientAccessCode)).scalar_one()
        assert row.secret_hash.startswith("$argon2")
        dump = " ".join(
            str(v)
            for table in ("patient_access_codes", "patient_one_time_codes", "notify_outbox")
            for r in s.execute(text(f"SELECT * FROM {table}"))
            for v in r
        )
    raw = code.replace("-", "")
    assert raw[8:] not in dump and otp not in dump


def test_a_one_time_code_works_once(runtime: Runtime, clock: Clock, http: TestClient) -> None:
    code = _code(runtime, clock)
    http.post("/api/patient/access", json={"code": code})
    otp = _sent_otp(runtime)
    assert http.post("/api/patient/verify", json={"code": code, "otp": otp}).status_code == 200
    again = http.post("/api/patient/verify", json={"code": code, "otp": otp})
    assert again.status_code == 401 and again.json()["detail"].startswith("one-time code already used")
    assert denied_events(runtime, "patient-login")[-1].detail.startswith("one-time code already used")


def test_a_one_time_code_expires_after_ten_minutes(runtime: Runtime, clock: Clock, http: TestClient) -> None:
    runtime.settings.patient_otp_minutes = 60  # configured longer than allowed: ten minutes still apply
    code = _code(runtime, clock)
    http.post("/api/patient/access", json={"code": code})
    otp = _sent_otp(runtime)
    clock.advance(minutes=10)
    r = http.post("/api/patient/verify", json={"code": code, "otp": otp})
    assert r.status_code == 401 and r.json()["detail"].startswith("one-time code expired")


def test_only_the_latest_one_time_code_counts_and_wrong_ones_are_refused(
    runtime: Runtime, clock: Clock, http: TestClient
) -> None:
    code = _code(runtime, clock)
    http.post("/api/patient/access", json={"code": code})
    first = _sent_otp(runtime)
    http.post("/api/patient/access", json={"code": code})
    second = _sent_otp(runtime)
    if first != second:
        assert http.post("/api/patient/verify", json={"code": code, "otp": first}).status_code == 401
    wrong = f"{(int(second) + 1) % 1_000_000:06d}"
    r = http.post("/api/patient/verify", json={"code": code, "otp": wrong})
    assert r.status_code == 401 and r.json()["detail"] == "invalid one-time code"
    assert http.post("/api/patient/verify", json={"code": code, "otp": second}).status_code == 200


def test_bad_expired_and_malformed_access_codes_are_refused_with_their_reason(
    runtime: Runtime, clock: Clock, http: TestClient
) -> None:
    code = _code(runtime, clock, days=1)
    raw = code.replace("-", "")
    other_secret = raw[:8] + ("0" if raw[8] != "0" else "1") + raw[9:]
    for bad in (other_secret, "ZZZZZZZZ" + raw[8:], "not a code", "I" * 20):
        r = http.post("/api/patient/access", json={"code": bad})
        assert (r.status_code, r.json()["detail"]) == (401, "invalid access code")
    clock.advance(days=1)
    r = http.post("/api/patient/access", json={"code": code})
    assert (r.status_code, r.json()["detail"]) == (401, "access code expired")
    r = http.post("/api/patient/access", json={})
    assert r.status_code == 422
    assert len(denied_events(runtime, "patient-access")) == 5


def test_guessing_an_access_code_is_rate_limited(runtime: Runtime, clock: Clock, http: TestClient) -> None:
    runtime.settings.lockout_threshold = 3
    code = _code(runtime, clock)
    raw = code.replace("-", "")
    wrong = raw[:8] + ("0" if raw[8] != "0" else "1") + raw[9:]
    for _ in range(3):
        assert http.post("/api/patient/access", json={"code": wrong}).status_code == 401
    locked = http.post("/api/patient/access", json={"code": code})
    assert locked.status_code == 423 and "retry-after" in locked.headers
    clock.advance(minutes=16)
    # the lock is on the code; the caller's address only counts toward the hourly cap
    assert http.post("/api/patient/access", json={"code": code}).status_code == 200
    clock.advance(minutes=61)  # the failures of the past hour are forgotten
    runtime.settings.failed_attempts_per_hour = 5
    runtime.settings.lockout_threshold = 100
    other = _code(runtime, clock)
    not_other = ("0" if other[0] != "0" else "1") + other[1:]
    for _ in range(5):
        assert http.post("/api/patient/access", json={"code": not_other}).status_code == 401
    capped = http.post("/api/patient/access", json={"code": other})
    assert capped.status_code == 429 and "too many failed attempts" in capped.json()["detail"]
    clock.advance(minutes=61)
    assert http.post("/api/patient/access", json={"code": code}).status_code == 200
    otp = _sent_otp(runtime)
    for _ in range(5):
        http.post("/api/patient/verify", json={"code": code, "otp": f"{(int(otp) + 1) % 1_000_000:06d}"})
    r = http.post("/api/patient/verify", json={"code": code, "otp": otp})
    assert r.status_code == 429


def test_the_cli_prints_a_new_access_code_once(runtime: Runtime, tmp_path: Path) -> None:
    data = runtime.settings.data_dir
    done = archipel_cmd(
        "patients",
        "access-code",
        "SITE-A",
        "PA0002",
        "--phone",
        "+33600000000",
        data=data,
        env={"ARCHIPEL_DATABASE_URL": runtime.settings.effective_database_url},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    code = done.stdout.strip()
    assert re.fullmatch(r"([0-9A-Z]{4}-){4}[0-9A-Z]{4}", code)
    with runtime.db.sessions() as s:
        row = s.execute(select(PatientAccessCode)).scalar_one()
    assert (row.patient_ref, row.channel, row.contact) == ("SITE-A/PA0002", "sms", "+33600000000")
    refused = archipel_cmd(
        "patients",
        "access-code",
        "SITE-A",
        "PA0002",
        data=data,
        check=False,
        env={"ARCHIPEL_DATABASE_URL": runtime.settings.effective_database_url},
    )
    assert refused.returncode != 0


def test_the_outbox_keeps_a_message_whose_sending_failed(runtime: Runtime) -> None:
    class Broken:
        def send(self, message: notify.Message) -> None:
            raise ConnectionError("smtp down")

    with runtime.db.write() as s:
        notify.enqueue(s, "email", "x@example.org", "subject", "body", purpose="test")
    assert notify.deliver_pending(runtime.db, Broken()) == 0
    files = notify.sender_for("", runtime.settings.data_dir)
    assert notify.deliver_pending(runtime.db, files) == 0  # it waits its backoff (30 s) first
    later = datetime.now(UTC) + timedelta(seconds=31)
    assert notify.deliver_pending(runtime.db, files, clock=lambda: later) == 1
    with pytest.raises(ValueError, match="no notify sender"):
        notify.sender_for("pigeon://loft.example.org", runtime.settings.data_dir)


def _log_in(runtime: Runtime, http: TestClient, code: str) -> dict[str, str]:
    assert http.post("/api/patient/access", json={"code": code}).status_code == 200
    r = http.post("/api/patient/verify", json={"code": code, "otp": _sent_otp(runtime)})
    assert r.status_code == 200, r.text
    return bearer(r.json()["access_token"])


def test_a_legal_representative_logs_in_with_their_own_code_and_does_not_see_what_is_hidden_from_them(
    runtime: Runtime, clock: Clock, http: TestClient
) -> None:
    child = SyntheticPatient("PA0001", "ENFANT^Test", "20150101", "F", issuer="SITE-A")
    archive = Archive(runtime.db, runtime.blobs, runtime.settings.duplicate_policy)
    shown, hidden = (ct_series(child, 1, key=f"representative/{n}")[0] for n in (1, 2))
    for ds in (shown, hidden):
        assert archive.store(to_bytes(ds), source_ae="MODALITY", default_issuer="SITE-A").status == "stored"
    mark(runtime.db, hidden.StudyInstanceUID, "INVISIBLE_REPRESENTANTS_LEGAUX")
    with runtime.db.write() as s:
        own = issue_access_code(
            s, REF, "email", "a.test@example.org", now=clock.now, valid_for=timedelta(days=9)
        )
        parent = issue_access_code(
            s,
            REF,
            "email",
            "b.test@example.org",
            now=clock.now,
            valid_for=timedelta(days=9),
            holder=LEGAL_REPRESENTATIVE,
        )

    def studies(headers: dict[str, str]) -> set[str]:
        r = http.get("/dicom-web/studies", headers=headers)
        assert r.status_code in (200, 204), r.text
        return {s["0020000D"]["Value"][0] for s in (r.json() if r.content else [])}

    as_parent = _log_in(runtime, http, parent)
    assert http.get("/api/auth/me", headers=as_parent).json()["role"] == LEGAL_REPRESENTATIVE
    assert studies(as_parent) == {shown.StudyInstanceUID}
    assert studies(_log_in(runtime, http, own)) == {shown.StudyInstanceUID, hidden.StudyInstanceUID}


def test_an_access_code_for_an_unknown_kind_of_holder_is_refused(runtime: Runtime, clock: Clock) -> None:
    with runtime.db.write() as s, pytest.raises(ValueError, match="unknown holder"):
        issue_access_code(
            s, REF, "email", "a.test@example.org", now=clock.now, valid_for=timedelta(days=9), holder="x"
        )
