"""Auditors search the trail over HTTP (JSON and FHIR R4 AuditEvent in the BALP shape); nobody else may; a patient
sees who accessed their record."""

from __future__ import annotations

import base64
import csv
import io
import json
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.auditevent import AuditEvent as FhirAuditEvent
from fhir.resources.R4B.bundle import Bundle
from sqlalchemy import select

from archipel.platform import audit
from archipel.platform.audit import AuditEvent
from archipel.platform.authn import Principal
from archipel.platform.login import session_policy
from archipel.platform.runtime import Runtime
from archipel.platform.sessions import issue_token, open_session
from tests.auth_helpers import bearer
from tests.support import archipel_cmd

AUDITOR = Principal(subject="auditor-1", role="auditor", site="REGION")
DOCTOR = Principal(subject="dr-house", role="treating-doctor", site="SITE-B")
RADIOLOGIST = Principal(subject="dr-ray", role="radiologist", site="SITE-A")
NODE = Principal(subject="MODALITY_B", role="node", site="SITE-B", kind="node")
PATIENT = Principal(subject="SITE-A/PA0001", role="patient", kind="patient")


def token(rt: Runtime, who: Principal) -> dict[str, str]:
    """Bearer headers of a fresh session for ``who`` (authentication itself is tested elsewhere)."""
    policy, now = session_policy(rt.settings), rt.clock()
    row = open_session(rt.db, who, "test", policy, now)
    return bearer(issue_token(row, rt.settings.signing_key(), policy, now).token)


@pytest.fixture
def trail(runtime: Runtime) -> Runtime:
    """A few events about two patients, by a doctor, a radiologist, a node, and the patient themself."""
    db = runtime.db
    audit.record(
        db,
        RADIOLOGIST,
        audit.QUERY,
        "search:study",
        patient="SITE-A/PA0001",
        master=7,
        obj="PatientID=PA0001",
        source="10.0.0.5",
    )
    audit.record(
        db,
        DOCTOR,
        audit.PATIENT_RECORD,
        "read:study",
        patient="SITE-A/PA0001",
        master=7,
        obj="1.2.3",
        source="10.0.0.6",
    )
    audit.record(
        db,
        DOCTOR,
        audit.PATIENT_RECORD,
        "read:study",
        outcome="denied",
        patient="SITE-B/X9",
        master=8,
        obj="1.2.4",
        purpose=audit.CARE,
        detail="no care relationship",
    )
    audit.record(
        db,
        DOCTOR,
        audit.INSTANCES_ACCESSED,
        "read:instance",
        patient="SITE-A/PA0001",
        master=7,
        obj="1.2.3.4",
        purpose=audit.BREAK_GLASS,
        detail="emergency",
    )
    audit.record(
        db,
        NODE,
        audit.INSTANCES_TRANSFERRED,
        "read:instance",
        patient="SITE-A/PA0001",
        master=7,
        source="10.0.0.9",
    )
    audit.record(db, PATIENT, audit.PATIENT_RECORD, "read:study", patient="SITE-A/PA0001")
    audit.record(db, DOCTOR, audit.USER_AUTHENTICATION, "login")
    return runtime


def test_an_auditor_searches_by_patient_actor_outcome_and_purpose_with_paging(
    trail: Runtime, http: TestClient
) -> None:
    h = token(trail, AUDITOR)
    r = http.get("/api/audit", params={"master": 7, "limit": 2}, headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == 4 and [e["action"] for e in body["events"]] == ["search:study", "read:study"]
    nxt = http.get("/api/audit", params={"master": 7, "limit": 2, "offset": 2}, headers=h).json()
    assert [e["actor"] for e in nxt["events"]] == ["dr-house", "MODALITY_B"]
    denied = http.get("/api/audit", params={"actor": "dr-house", "outcome": "denied"}, headers=h).json()
    assert [(e["patient"], e["detail"]) for e in denied["events"]] == [("SITE-B/X9", "no care relationship")]
    btg = http.get("/api/audit", params={"purpose": "break-glass"}, headers=h).json()
    assert [(e["actor_site"], e["master_id"]) for e in btg["events"]] == [("SITE-B", 7)]
    typed = http.get(
        "/api/audit", params={"type": audit.USER_AUTHENTICATION, "patient": ""}, headers=h
    ).json()
    assert typed["total"] >= 1 and {e["event_type"] for e in typed["events"]} == {audit.USER_AUTHENTICATION}
    since = http.get("/api/audit", params={"since": "2999-01-01T00:00:00"}, headers=h).json()
    assert since["total"] == 0


def test_reading_the_trail_is_itself_audited_and_others_get_403(trail: Runtime, http: TestClient) -> None:
    assert (
        http.get("/api/audit", params={"actor": "dr-house"}, headers=token(trail, AUDITOR)).status_code == 200
    )
    for who in (DOCTOR, RADIOLOGIST, Principal(subject="root", role="admin")):
        r = http.get("/api/audit", headers=token(trail, who))
        assert r.status_code == 403 and "auditor" in r.json()["detail"]
    assert http.get("/api/audit/fhir", headers=token(trail, DOCTOR)).status_code == 403
    assert http.get("/api/audit").status_code == 401
    with trail.db.sessions() as s:
        used = s.execute(
            select(AuditEvent.actor, AuditEvent.outcome, AuditEvent.object).where(
                AuditEvent.event_type == audit.AUDIT_LOG_USED
            )
        ).all()
    assert ("auditor-1", "success", "actor=dr-house") in used
    assert {(a, o) for a, o, _ in used} >= {("dr-house", "denied"), ("root", "denied"), ("dr-ray", "denied")}


def test_bad_search_parameters_get_422_with_the_reason(trail: Runtime, http: TestClient) -> None:
    h = token(trail, AUDITOR)
    assert http.get("/api/audit", params={"outcome": "maybe"}, headers=h).status_code == 422
    assert http.get("/api/audit", params={"limit": 100000}, headers=h).status_code == 422
    assert http.get("/api/audit", params={"since": "yesterday"}, headers=h).status_code == 422
    r = http.get("/api/audit", params={"since": "2026-02-01", "until": "2026-01-01"}, headers=h)
    assert r.status_code == 422 and "until" in r.json()["detail"]


def test_the_fhir_search_is_a_valid_r4_bundle_of_balp_audit_events(trail: Runtime, http: TestClient) -> None:
    r = http.get("/api/audit/fhir", params={"limit": 3}, headers=token(trail, AUDITOR))
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/fhir+json")
    body = r.json()
    Bundle.model_validate(body)  # structure checked by an independent FHIR model
    assert (
        body["type"] == "searchset" and body["total"] == 8 and len(body["entry"]) == 3
    )  # 7 + this search, audited first
    assert [link["relation"] for link in body["link"]] == ["self", "next"] and "offset=3" in body["link"][1][
        "url"
    ]
    query, read = (FhirAuditEvent.model_validate(e["resource"]) for e in body["entry"][:2])
    assert (query.type.system, query.type.code) == ("http://dicom.nema.org/resources/ontology/DCM", "110112")
    assert query.action == "E" and query.subtype[0].code == "search-type"
    [q] = [e for e in query.entity if e.role.code == "24"]
    assert q.query == b"PatientID=PA0001"  # the model decodes base64Binary; the JSON carries base64
    raw = next(e for e in body["entry"][0]["resource"]["entity"] if e["role"]["code"] == "24")
    assert base64.b64decode(raw["query"]) == b"PatientID=PA0001"
    assert read.action == "R" and read.outcome == "0" and read.subtype[0].code == "read"
    user = next(a for a in read.agent if a.requestor)
    assert user.type.coding[0].code == "IRCP" and user.who.identifier.value == "dr-house"
    assert user.role[0].coding[0].code == "treating-doctor"
    assert user.extension[0].valueReference.identifier.value == "SITE-B"
    client_agent = next(a for a in read.agent if a.type.coding[0].code == "110152")
    assert (client_agent.network.address, client_agent.network.type) == ("10.0.0.6", "2")
    assert any(a.type.coding[0].code == "110153" and not a.requestor for a in read.agent)
    [patient] = [e for e in read.entity if e.role.code == "1"]
    assert (patient.type.code, patient.what.identifier.value) == ("1", "7")
    assert read.purposeOfEvent[0].coding[0].code == "TREAT"


def test_the_fhir_export_needs_a_recent_log_in(trail: Runtime, http: TestClient) -> None:
    policy, then = session_policy(trail.settings), trail.clock() - timedelta(minutes=10)
    row = open_session(trail.db, AUDITOR, "test", policy, then)
    stale = bearer(issue_token(row, trail.settings.signing_key(), policy, trail.clock()).token)

    r = http.get("/api/audit/fhir", headers=stale)

    assert r.status_code == 401 and "re-authentication" in r.json()["detail"]
    assert "insufficient_user_authentication" in r.headers["www-authenticate"]
    assert http.get("/api/audit", headers=stale).status_code == 200  # searching is not an export


def test_fhir_carries_denial_and_break_glass(trail: Runtime, http: TestClient) -> None:
    h = token(trail, AUDITOR)
    denied = http.get("/api/audit/fhir", params={"outcome": "denied", "actor": "dr-house"}, headers=h).json()
    [entry] = denied["entry"]
    assert entry["resource"]["outcome"] == "4" and entry["resource"]["outcomeDesc"] == "no care relationship"
    btg = http.get("/api/audit/fhir", params={"purpose": "break-glass"}, headers=h).json()
    event = FhirAuditEvent.model_validate(btg["entry"][0]["resource"])
    assert event.purposeOfEvent[0].coding[0].code == "BTG"
    assert next(a for a in event.agent if a.requestor).purposeOfUse[0].coding[0].code == "BTG"
    node = http.get("/api/audit/fhir", params={"actor": "MODALITY_B"}, headers=h).json()
    agent = next(a for a in node["entry"][0]["resource"]["agent"] if a["requestor"])
    assert agent["who"]["identifier"] == {"system": "urn:dicom:ae", "value": "MODALITY_B"}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_export_command_writes_fhir_and_csv(trail: Runtime) -> None:
    data, env = trail.settings.data_dir, {"ARCHIPEL_DATABASE_URL": trail.settings.effective_database_url}
    r = archipel_cmd("audit", "export", "--format", "fhir", "--master", "7", data=data, env=env)
    bundle = json.loads(r.stdout)
    Bundle.model_validate(bundle)
    assert bundle["type"] == "collection" and len(bundle["entry"]) == 4
    r = archipel_cmd("audit", "export", "--format", "csv", "--since", "2000-01-01", data=data, env=env)
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(rows) == 8 and rows[0]["actor"] == "dr-ray" and rows[0]["master_id"] == "7"
    bad = archipel_cmd("audit", "export", "--since", "last week", data=data, env=env, check=False)
    assert bad.returncode == 2 and "not an ISO date" in bad.stderr


def test_a_patient_sees_who_accessed_their_record_but_not_their_own_actions(
    trail: Runtime, http: TestClient
) -> None:
    r = http.get("/api/me/access-log", headers=token(trail, PATIENT))
    assert r.status_code == 200, r.text
    entries = r.json()["entries"]
    assert [(e["who"], e["kind"], e["role"], e["organisation"], e["purpose"]) for e in entries] == [
        ("MODALITY_B", "dicom-node", "node", "SITE-B", "care"),
        ("dr-house", "professional", "treating-doctor", "SITE-B", "break-glass"),
        ("dr-house", "professional", "treating-doctor", "SITE-B", "care"),
        ("dr-ray", "professional", "radiologist", "SITE-A", "care"),
    ]
    # The other patient's events and the doctor's login are not in it; a professional cannot use the route.
    assert http.get("/api/me/access-log", headers=token(trail, DOCTOR)).status_code == 403
