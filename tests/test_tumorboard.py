"""Tumor board (RCP) API: sessions, registered patients and their prefetch status; bad input and refusals."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from archipel.platform.care import CareRelationship
from archipel.platform.db import utcnow
from archipel.platform.runtime import Runtime
from archipel.radiology import prefetch, tumorboard
from archipel.radiology.models import DicomNode
from archipel.radiology.remote_nodes import configure_remote
from tests.auth_helpers import Clock, bearer, login, make_account
from tests.prefetch_peers import closed_port, person


@pytest.fixture(autouse=True)
def inline_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run each prefetch job in the request that queues it (no worker in this process)."""
    monkeypatch.setattr(prefetch, "send_job", prefetch.prefetch_job)


def token(
    http: TestClient,
    runtime: Runtime,
    clock: Clock,
    name: str,
    role: str = "radiologist",
    site: str = "SITE-A",
) -> dict[str, str]:
    account = make_account(runtime, name, role, site)
    r = login(http, account, clock())
    assert r.status_code == 200, r.text
    return bearer(r.json()["access_token"])


def dead_node(rt: Runtime, aet: str = "DEADPACS", site: str = "SITE-D") -> None:
    with rt.db.write() as s:
        s.add(DicomNode(ae_title=aet, host="127.0.0.1", port=closed_port(), site=site))
    configure_remote(rt.db, aet, "127.0.0.1", retrieve="move", timeout_seconds=1, attempts=1)


def new_session(http: TestClient, headers: dict[str, str], **extra: str) -> dict[str, object]:
    when = (utcnow() + timedelta(days=3)).isoformat()
    body = {"title": "RCP thoracique", "scheduled_at": when, "place": "Salle 2", **extra}
    r = http.post("/api/tumor-boards", json=body, headers=headers)
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_a_registered_patient_shows_each_nodes_status_with_the_failure_reason(
    http: TestClient, runtime: Runtime, clock: Clock
) -> None:
    headers = token(http, runtime, clock, "dr-rcp")
    dead_node(runtime)
    dead_node(runtime, "PACSC", "SITE-C")
    master = person(runtime.db, [("SITE-A", "A-TB-1"), ("SITE-D", "D-TB-1")], "TESTBOARD")
    session = new_session(http, headers)
    assert session["destination"] == "viewer" and session["site"] == "SITE-A"

    r = http.post(
        f"/api/tumor-boards/{session['id']}/patients",
        json={"master_id": master, "reason": "nodule LSD", "modalities": ["CT", "PT"]},
        headers=headers,
    )

    assert r.status_code == 201, r.text
    entry = r.json()
    assert entry["status"] == "failed" and entry["patient"] == "SITE-A/A-TB-1"
    by_node = {n["node"]: n for n in entry["nodes"]}
    assert by_node["DEADPACS"]["state"] == "failed" and "DEADPACS" in by_node["DEADPACS"]["reason"]
    assert by_node["DEADPACS"]["patient_id"] == "D-TB-1"
    assert by_node["PACSC"]["state"] == "none"
    assert "DEADPACS" in entry["status_reason"]
    job = http.get(f"/api/jobs/{entry['job_id']}", headers=headers).json()
    assert job["state"] == "failed" and job["progress"] == 100.0 and "failed: DEADPACS" in job["error"]

    with runtime.db.sessions() as s:
        links = (
            s.execute(select(CareRelationship).where(CareRelationship.master_id == master)).scalars().all()
        )
        assert [(c.professional, c.kind) for c in links] == [("dr-rcp", "tumor-board")]
        assert all(c.valid_to is not None and c.valid_to > utcnow() + timedelta(days=30) for c in links)

    detail = http.get(f"/api/tumor-boards/{session['id']}", headers=headers).json()
    assert [p["master_id"] for p in detail["patients"]] == [master]
    listed = http.get("/api/tumor-boards", headers=headers).json()
    assert [(s["id"], s["patients"]) for s in listed] == [(session["id"], 1)]

    again = http.post(f"/api/tumor-boards/{session['id']}/patients/{entry['id']}/prefetch", headers=headers)
    assert again.status_code == 202 and again.json()["job_id"] != entry["job_id"]


def test_registering_a_patient_twice_is_a_conflict(http: TestClient, runtime: Runtime, clock: Clock) -> None:
    headers = token(http, runtime, clock, "dr-twice")
    master = person(runtime.db, [("SITE-A", "A-TWICE-1")], "TESTTWICE")
    session = new_session(http, headers)
    url = f"/api/tumor-boards/{session['id']}/patients"
    assert http.post(url, json={"master_id": master}, headers=headers).status_code == 201
    r = http.post(url, json={"master_id": master}, headers=headers)
    assert r.status_code == 409 and "already" in r.json()["detail"]


def test_bad_input_is_refused_with_its_reason(http: TestClient, runtime: Runtime, clock: Clock) -> None:
    headers = token(http, runtime, clock, "dr-bad")
    r = http.post(
        "/api/tumor-boards", json={"title": "RCP", "scheduled_at": "2026-12-10T14:00:00"}, headers=headers
    )
    assert r.status_code == 400 and "time zone" in r.json()["detail"]
    r = http.post(
        "/api/tumor-boards",
        json={"title": "RCP", "scheduled_at": "2026-12-10T14:00:00+01:00", "destination": "NOSUCHAE"},
        headers=headers,
    )
    assert r.status_code == 400 and "NOSUCHAE" in r.json()["detail"]
    session = new_session(http, headers)
    url = f"/api/tumor-boards/{session['id']}/patients"
    assert http.post(url, json={"master_id": 999999}, headers=headers).status_code == 404
    assert (
        http.post(url, json={"master_id": 1, "date_from": "2026-01-01"}, headers=headers).status_code == 422
    )
    assert http.get("/api/tumor-boards/424242", headers=headers).status_code == 404


def test_other_sites_and_non_clinical_roles_are_refused(
    http: TestClient, runtime: Runtime, clock: Clock
) -> None:
    headers = token(http, runtime, clock, "dr-own")
    session = new_session(http, headers)
    other = token(http, runtime, clock, "dr-other", site="SITE-B")
    r = http.get(f"/api/tumor-boards/{session['id']}", headers=other)
    assert r.status_code == 403 and "SITE-A" in r.json()["detail"]
    auditor = token(http, runtime, clock, "aud", role="auditor", site="REGION")
    assert http.get("/api/tumor-boards", headers=auditor).status_code == 403
    # A patient without any identity at the caller's site, and no care relationship: no prefetch of their record.
    stranger = person(runtime.db, [("SITE-B", "B-STRANGER-1")], "TESTSTRANGER")
    r = http.post(
        f"/api/tumor-boards/{session['id']}/patients", json={"master_id": stranger}, headers=headers
    )
    assert r.status_code == 403


def test_the_sweep_prefetches_again_the_patients_of_coming_sessions_only(
    http: TestClient, runtime: Runtime, clock: Clock
) -> None:
    headers = token(http, runtime, clock, "dr-sweep")
    master = person(runtime.db, [("SITE-A", "A-SWEEP-1")], "TESTSWEEP")
    session = new_session(http, headers)
    http.post(f"/api/tumor-boards/{session['id']}/patients", json={"master_id": master}, headers=headers)

    assert tumorboard.sweep_due(runtime.db, send=False) == []  # it has just run
    later = utcnow() + tumorboard.RERUN_AFTER + timedelta(minutes=1)
    assert len(tumorboard.sweep_due(runtime.db, later, send=False)) == 1
    after_the_session = utcnow() + timedelta(days=4)
    assert tumorboard.sweep_due(runtime.db, after_the_session, send=False) == []
