"""Staff hand out and revoke patients' portal access codes over HTTP: reception staff of a site holding the
patient's record and administrators; a revoked code ends its open sessions and opens no new one."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from archipel.platform.audit import AuditEvent
from archipel.platform.runtime import Runtime
from tests.access_support import ensure_master
from tests.auth_helpers import Clock, bearer, login, make_account
from tests.support import archipel_cmd

ISSUER, OTHER = "SITE-A", "SITE-B"
PID = "PC0001"
REF = f"{ISSUER}/{PID}"
CODE = re.compile(r"([0-9A-Z]{4}-){4}[0-9A-Z]{4}")


def _staff(
    runtime: Runtime, clock: Clock, http: TestClient, name: str, role: str, site: str
) -> dict[str, str]:
    account = make_account(runtime, name, role, site)
    r = login(http, account, clock.now)
    assert r.status_code == 200, r.text
    return bearer(r.json()["access_token"])


@pytest.fixture
def master(runtime: Runtime) -> int:
    return ensure_master(runtime.db, ISSUER, PID, "CODEPATIENT", "19800101")


def _otp(runtime: Runtime) -> str:
    last = sorted((runtime.settings.data_dir / "outbox").iterdir())[-1]
    found = re.search(r"one-time code is (\d{6})", last.read_text())
    assert found is not None
    return found.group(1)


def _portal_session(runtime: Runtime, http: TestClient, code: str) -> dict[str, str]:
    assert http.post("/api/patient/access", json={"code": code}).status_code == 200
    r = http.post("/api/patient/verify", json={"code": code, "otp": _otp(runtime)})
    assert r.status_code == 200, r.text
    return bearer(r.json()["access_token"])


def _events(runtime: Runtime, action: str) -> list[AuditEvent]:
    with runtime.db.sessions() as s:
        return list(
            s.execute(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)).scalars()
        )


def test_a_clerk_issues_a_code_over_http_and_the_patient_signs_in_with_it(
    runtime: Runtime, clock: Clock, http: TestClient, master: int, caplog: pytest.LogCaptureFixture
) -> None:
    clerk = _staff(runtime, clock, http, "reception-a", "reception", ISSUER)
    r = http.post(
        "/api/access-codes",
        json={"issuer": ISSUER, "patient_id": PID, "email": "code.patient@example.org", "days": 30},
        headers=clerk,
    )
    assert r.status_code == 201, r.text
    issued = r.json()
    code = issued["code"]
    assert CODE.fullmatch(code)
    assert (issued["patient"], issued["issued_by"], issued["status"], issued["to"]) == (
        REF,
        "reception-a",
        "active",
        "c***@example.org",
    )
    assert issued["expires_at"] == (clock.now + timedelta(days=30)).isoformat()
    patient = _portal_session(runtime, http, code)
    assert http.get("/api/patient/me", headers=patient).json()["master_id"] == master
    # By master id too, and the list shows both, with the last sign-in, never a code.
    r2 = http.post("/api/access-codes", json={"patient": master, "phone": "+33600000001"}, headers=clerk)
    assert r2.status_code == 201, r2.text
    listed = http.get("/api/access-codes", params={"patient": str(master)}, headers=clerk)
    assert listed.status_code == 200, listed.text
    codes = listed.json()["codes"]
    assert [c["id"] for c in codes] == [r2.json()["id"], issued["id"]]
    assert codes[1]["last_used_at"] == clock.now.isoformat() and codes[0]["last_used_at"] is None
    by_ref = http.get("/api/access-codes", params={"patient": REF}, headers=clerk).json()["codes"]
    assert [c["id"] for c in by_ref] == [c["id"] for c in codes]
    raw = [c.replace("-", "") for c in (code, r2.json()["code"])]
    for text in (listed.text, caplog.text):
        assert not any(c in text.replace("-", "") for c in raw)
    with runtime.db.sessions() as s:
        trail = " ".join(f"{e.object} {e.detail}" for e in s.execute(select(AuditEvent)).scalars())
    assert not any(c in trail.replace("-", "") for c in raw)
    created = _events(runtime, "create:patient-access")
    assert [(e.actor, e.outcome, e.purpose) for e in created] == [
        ("reception-a", "success", "operations")
    ] * 2
    reads = _events(runtime, "read:patient-access")
    assert [(e.outcome, e.patient) for e in reads] == [("success", ""), ("success", REF)]


def test_revoking_a_code_ends_its_open_session_and_refuses_a_new_one(
    runtime: Runtime, clock: Clock, http: TestClient, master: int
) -> None:
    clerk = _staff(runtime, clock, http, "reception-r", "reception", ISSUER)
    issued = http.post(
        "/api/access-codes", json={"patient": REF, "email": "r.patient@example.org"}, headers=clerk
    )
    code, code_id = issued.json()["code"], issued.json()["id"]
    patient = _portal_session(runtime, http, code)
    assert http.get("/api/patient/me", headers=patient).status_code == 200
    # a second code of the same patient (another holder) keeps its session
    other = http.post(
        "/api/access-codes",
        json={"patient": REF, "email": "parent@example.org", "holder": "legal-representative"},
        headers=clerk,
    ).json()
    parent = _portal_session(runtime, http, other["code"])
    r = http.post(
        f"/api/access-codes/{code_id}/revoke", json={"reason": "slip lost by the patient"}, headers=clerk
    )
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["revoked_by"], r.json()["sessions_ended"]) == (
        "revoked",
        "reception-r",
        1,
    )
    assert r.json()["revoked_reason"] == "slip lost by the patient"
    gone = http.get("/api/patient/me", headers=patient)
    assert gone.status_code == 401 and gone.json()["detail"] == "session revoked"
    assert http.get("/api/patient/me", headers=parent).status_code == 200
    refused = http.post("/api/patient/access", json={"code": code})
    assert refused.status_code == 401 and refused.json()["detail"] == "invalid access code"
    event = _events(runtime, "update:patient-access")[-1]
    assert (event.outcome, event.patient) == ("success", REF) and "slip lost" in event.detail


def test_a_one_time_code_checked_before_the_revocation_opens_no_session_after_it(
    runtime: Runtime, clock: Clock, http: TestClient, master: int
) -> None:
    clerk = _staff(runtime, clock, http, "reception-o", "reception", ISSUER)
    issued = http.post(
        "/api/access-codes", json={"patient": REF, "email": "o.patient@example.org"}, headers=clerk
    )
    code = issued.json()["code"]
    assert http.post("/api/patient/access", json={"code": code}).status_code == 200
    otp = _otp(runtime)
    assert (
        http.post(
            f"/api/access-codes/{issued.json()['id']}/revoke", json={"reason": "wrong patient"}, headers=clerk
        ).status_code
        == 200
    )
    r = http.post("/api/patient/session", json={"code": code, "otp": otp})
    assert r.status_code == 401


def test_another_sites_clerk_and_clinicians_are_refused_with_an_audited_denial(
    runtime: Runtime, clock: Clock, http: TestClient, master: int
) -> None:
    admin = _staff(runtime, clock, http, "admin-c", "admin", "")
    issued = http.post(
        "/api/access-codes", json={"patient": master, "email": "d.patient@example.org"}, headers=admin
    )
    assert issued.status_code == 201, issued.text
    assert issued.json()["patient"] == REF
    code_id = issued.json()["id"]
    for name, role in (("reception-b", "reception"), ("rad-codes", "radiologist")):
        site = OTHER if role == "reception" else ISSUER
        who = _staff(runtime, clock, http, name, role, site)
        calls = (
            http.post("/api/access-codes", json={"patient": REF, "email": "x@example.org"}, headers=who),
            http.get("/api/access-codes", params={"patient": REF}, headers=who),
            http.post(f"/api/access-codes/{code_id}/revoke", json={"reason": "not mine"}, headers=who),
        )
        assert [c.status_code for c in calls] == [403, 403, 403], [c.text for c in calls]
        with runtime.db.sessions() as s:
            denied = list(
                s.execute(
                    select(AuditEvent).where(AuditEvent.actor == name, AuditEvent.outcome == "denied")
                ).scalars()
            )
        assert sorted(e.action for e in denied) == [
            "create:patient-access",
            "read:patient-access",
            "update:patient-access",
        ]
        assert {e.patient for e in denied} == {REF}
    listed = http.get("/api/access-codes", params={"patient": REF}, headers=admin).json()["codes"]
    assert [(c["id"], c["status"]) for c in listed] == [(code_id, "active")]


def test_bad_input_is_refused_with_its_reason_and_nothing_is_stored(
    runtime: Runtime, clock: Clock, http: TestClient, master: int
) -> None:
    clerk = _staff(runtime, clock, http, "reception-x", "reception", ISSUER)
    admin = _staff(runtime, clock, http, "admin-x", "admin", "")
    unknown = http.post(
        "/api/access-codes", json={"patient": "SITE-A/NOBODY", "email": "n@example.org"}, headers=clerk
    )
    assert unknown.status_code == 404 and "SITE-A/NOBODY" in unknown.json()["detail"]
    assert (
        http.post(
            "/api/access-codes", json={"patient": 999999, "email": "n@example.org"}, headers=admin
        ).status_code
        == 404
    )
    assert http.get("/api/access-codes", params={"patient": "999999"}, headers=admin).status_code == 404
    for body in (
        {"patient": REF},  # no contact
        {"patient": REF, "email": "a@example.org", "phone": "+33600000000"},
        {"patient": REF, "issuer": ISSUER, "patient_id": PID, "email": "a@example.org"},
        {"patient": "no-slash", "email": "a@example.org"},
        {"patient": REF, "email": "a@example.org", "days": 0},
    ):
        r = http.post("/api/access-codes", json=body, headers=clerk)
        assert r.status_code == 422, (body, r.text)
    assert http.get("/api/access-codes", params={"patient": REF}, headers=clerk).json()["codes"] == []
    code_id = http.post(
        "/api/access-codes", json={"patient": REF, "email": "a@example.org"}, headers=clerk
    ).json()["id"]
    for body in ({}, {"reason": ""}, {"reason": "   "}):
        assert http.post(f"/api/access-codes/{code_id}/revoke", json=body, headers=clerk).status_code == 422
    assert (
        http.post(f"/api/access-codes/{code_id}/revoke", json={"reason": "test"}, headers=clerk).status_code
        == 200
    )
    twice = http.post(f"/api/access-codes/{code_id}/revoke", json={"reason": "again"}, headers=clerk)
    assert twice.status_code == 409 and "already revoked" in twice.json()["detail"]
    assert (
        http.post("/api/access-codes/999999/revoke", json={"reason": "x"}, headers=clerk).status_code == 404
    )
    (row,) = http.get("/api/access-codes", params={"patient": REF}, headers=clerk).json()["codes"]
    assert row["revoked_reason"] == "test"


def test_the_cli_lists_a_patients_codes_and_revokes_one(
    runtime: Runtime, clock: Clock, http: TestClient, master: int
) -> None:
    data = runtime.settings.data_dir
    env = {"ARCHIPEL_DATABASE_URL": runtime.settings.effective_database_url}
    made = archipel_cmd(
        "patients", "access-code", ISSUER, PID, "--email", "cli@example.org", data=data, env=env
    )
    code = CODE.search(made.stdout)
    assert code is not None
    listed = archipel_cmd("patients", "codes", REF, data=data, env=env, check=False)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "active" in listed.stdout and code.group(0) not in listed.stdout + listed.stderr
    clerk = _staff(runtime, clock, http, "reception-cli", "reception", ISSUER)
    (row,) = http.get("/api/access-codes", params={"patient": REF}, headers=clerk).json()["codes"]
    revoke = ("patients", "revoke-code", str(row["id"]), "--reason")
    done = archipel_cmd(*revoke, "card stolen", data=data, env=env, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    again = archipel_cmd(*revoke, "again", data=data, env=env, check=False)
    assert again.returncode == 2 and "already revoked" in again.stderr
    missing = archipel_cmd("patients", "revoke-code", str(row["id"]), data=data, env=env, check=False)
    assert missing.returncode != 0
    assert http.post("/api/patient/access", json={"code": code.group(0)}).status_code == 401
    assert [e.outcome for e in _events(runtime, "create:patient-access")] == ["success"]
    assert [e.outcome for e in _events(runtime, "read:patient-access")] == ["success", "success"]
    revoked = _events(runtime, "update:patient-access")[0]
    assert revoked.outcome == "success" and "card stolen" in revoked.detail
