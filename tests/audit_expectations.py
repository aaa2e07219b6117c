"""What each HTTP route and DIMSE service must write to the audit trail: the table behind test_audit_coverage.

Every route of the FastAPI app has an entry, keyed ``(METHOD, path template)`` exactly as FastAPI declares it:

- :class:`Audited`: how to call it (method, URL filled from :class:`Ctx`, body) as the ``user`` of the
  ``server``, and the events that one call must add, in order: ``(event_type, action, outcome, patient)``
  where ``patient`` is ``"{patient}"`` for the test patient (``SITE-A/AUD0001``) or ``""``.
- :class:`NotPatientData`: routes that never touch patient data (documentation, health, the log-in steps,
  job status); they are listed with the reason so that the choice is explicit and reviewed.

A route missing from :data:`ROUTES` fails the test, which prints the line to add.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from archipel.platform import audit

P = "{patient}"
OK, DENIED, FAILED = audit.SUCCESS, audit.DENIED, audit.FAILURE


@dataclass(frozen=True)
class Ctx:
    """Values the calls are built from: the study the test stored through C-STORE, and its patient."""

    patient: str
    patient_id: str
    study: str
    series: str
    instance: str


@dataclass(frozen=True)
class Audited:
    """A route that touches patient data: how to call it and the exact events one call adds."""

    method: str
    url: str
    events: tuple[tuple[str, str, str, str], ...]
    user: str = "radiologist"
    #: ``json`` (``body`` as JSON), ``stow`` (a new instance of the test patient as multipart/related),
    #: ``upload`` (the stored test instance as a multipart form file), or empty.
    send: str = ""
    body: dict[str, Any] | None = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NotPatientData:
    """A route that reads or changes no patient data, and why."""

    reason: str


Entry = Audited | NotPatientData

_STUDY = "/dicom-web/studies/{study}"
_SERIES = _STUDY + "/series/{series}"
_INSTANCE = _SERIES + "/instances/{instance}"


def _read(event_type: str, kind: str) -> tuple[tuple[str, str, str, str], ...]:
    return ((event_type, f"read:{kind}", OK, P),)


_MG = "/api/mammo"
_MG_EPISODE = {"programme": "audit", "issuer": "SITE-A", "patient_id": "AUD0001", "site": "SITE-A",
               "round": "first", "screen_date": "2026-03-05"}  # fmt: skip
_MG_READ = {"right": {"assessment": 1}, "left": {"assessment": 1}, "density": "b"}
_MG_DENIED_SEARCH = ((audit.QUERY, "search:screening-episode", DENIED, ""),)
_SCREENING: dict[tuple[str, str], Entry] = {
    ("GET", _MG + "/programmes"): NotPatientData("programme settings: codes, protocols, thresholds"),
    ("GET", _MG + "/readers/me"): NotPatientData("the caller's own read counts against the yearly minimum"),
    ("POST", _MG + "/programmes"): Audited(
        "POST", _MG + "/programmes", ((audit.SECURITY_ALERT, "administer:platform", DENIED, ""),),
        user="auditor", send="json", body={"code": "audit", "protocol": "eu-blinded"}, status=403,
    ),
    ("POST", _MG + "/programmes/{code}/readers"): Audited(
        "POST", _MG + "/programmes/audit/readers", ((audit.SECURITY_ALERT, "administer:platform", DENIED, ""),),
        user="auditor", send="json", body={"reader": "someone", "qualification": "reader"}, status=403,
    ),
    ("POST", _MG + "/episodes"): Audited(
        "POST", _MG + "/episodes", ((audit.PATIENT_RECORD, "create:screening-episode", DENIED, P),),
        user="auditor", send="json", body=_MG_EPISODE, status=403,
    ),
    ("POST", _MG + "/l1-forms"): Audited(
        "POST", _MG + "/l1-forms", ((audit.PATIENT_RECORD, "create:screening-episode", DENIED, P),),
        user="auditor", send="json", body={**_MG_EPISODE, "read": _MG_READ}, status=403,
    ),
    ("POST", _MG + "/l1-forms/import"): Audited(
        "POST", _MG + "/l1-forms/import?programme=audit", (), user="auditor", send="upload", status=422
    ),
    ("GET", _MG + "/episodes/{episode_id}"): Audited(
        "GET", _MG + "/episodes/999999", (), user="auditor", status=404
    ),
    ("GET", _MG + "/episodes/{episode_id}/readings/{reading_id}"): Audited(
        "GET", _MG + "/episodes/999999/readings/1", (), user="auditor", status=404
    ),
    ("POST", _MG + "/episodes/{episode_id}/priors"): Audited(
        "POST", _MG + "/episodes/999999/priors", (), user="auditor", send="json", body={"status": "received"},
        status=404,
    ),
    ("POST", _MG + "/episodes/{episode_id}/flag"): Audited(
        "POST", _MG + "/episodes/999999/flag", (), user="auditor", send="json",
        body={"action": "release", "reason": "audit walk"}, status=404,
    ),
    ("POST", _MG + "/episodes/{episode_id}/decision"): Audited(
        "POST", _MG + "/episodes/999999/decision", (), user="auditor", status=404
    ),
    ("POST", _MG + "/episodes/{episode_id}/outcomes"): Audited(
        "POST", _MG + "/episodes/999999/outcomes", (), user="auditor", send="json", body={"outcome": "benign"},
        status=404,
    ),
    ("POST", _MG + "/episodes/{episode_id}/deferred-workup"): Audited(
        "POST", _MG + "/episodes/999999/deferred-workup", (), user="auditor", send="json",
        body={"radiologist": "someone", "performed_on": "2026-01-02", "ultrasound": True, "right_assessment": 1,
              "left_assessment": 2, "conclusion": "normal"}, status=404,
    ),
    ("GET", _MG + "/episodes/{episode_id}/deferred-workup"): Audited(
        "GET", _MG + "/episodes/999999/deferred-workup", (), user="auditor", status=404
    ),
    ("GET", _MG + "/reconciliation"): Audited(
        "GET", _MG + "/reconciliation", _MG_DENIED_SEARCH, user="auditor", status=403
    ),
    ("POST", _MG + "/studies/{study_uid}/match"): Audited(
        "POST", _MG + "/studies/{study}/match", (), user="auditor", send="json", body={"episode_id": 999999},
        status=404,
    ),
    ("GET", _MG + "/worklist"): Audited("GET", _MG + "/worklist", _MG_DENIED_SEARCH, user="auditor", status=403),
    ("GET", _MG + "/metrics"): Audited(
        "GET", _MG + "/metrics?programme=audit", ((audit.QUERY, "read:screening-programme", DENIED, ""),),
        user="auditor", status=403,
    ),
    ("GET", _MG + "/programmes/{code}/deadlines"): Audited(
        "GET", _MG + "/programmes/audit/deadlines", ((audit.QUERY, "read:screening-programme", DENIED, ""),),
        user="auditor", status=403,
    ),
    ("GET", _MG + "/programmes/{code}/ready-for-decision"): Audited(
        "GET", _MG + "/programmes/audit/ready-for-decision",
        ((audit.QUERY, "read:screening-programme", DENIED, ""),), user="auditor", status=403,
    ),
    ("POST", _MG + "/tasks/{task_id}/prepare"): Audited(
        "POST", _MG + "/tasks/999999/prepare", (), user="auditor", status=404
    ),
    ("POST", _MG + "/tasks/{task_id}/claim"): Audited(
        "POST", _MG + "/tasks/999999/claim", (), user="auditor", status=404
    ),
    ("POST", _MG + "/tasks/{task_id}/skip"): Audited(
        "POST", _MG + "/tasks/999999/skip", (), user="auditor", send="json", body={"reason": "audit walk"},
        status=404,
    ),
    ("POST", _MG + "/tasks/{task_id}/defer"): Audited(
        "POST", _MG + "/tasks/999999/defer", (), user="auditor", send="json", body={"reason": "audit walk"},
        status=404,
    ),
    ("POST", _MG + "/tasks/{task_id}/reading"): Audited(
        "POST", _MG + "/tasks/999999/reading", (), user="auditor", send="json", body=_MG_READ, status=404
    ),
}  # fmt: skip

_DOC = "/api/documents"
_DOC_NEW = {"issuer": "SITE-A", "patient_id": "AUD0001", "site": "SITE-A", "type_code": "18748-4",
            "title": "Compte rendu", "content_type": "text/plain", "content": "UmFzLg=="}  # fmt: skip
_DOC_DENIED_SEARCH = ((audit.QUERY, "search:document", DENIED, ""),)
# --- document registry (owner: documents): as the auditor, whom the policy refuses, or unknown ids (404) ---
_DOCUMENTS: dict[tuple[str, str], Entry] = {
    ("POST", _DOC): Audited(
        "POST", _DOC, ((audit.PATIENT_RECORD, "create:document", DENIED, P),), user="auditor", send="json",
        body=_DOC_NEW, status=403,
    ),
    ("GET", _DOC): Audited("GET", _DOC, _DOC_DENIED_SEARCH, user="auditor", status=403),
    ("GET", _DOC + "/search"): Audited("GET", _DOC + "/search?q=poumon", _DOC_DENIED_SEARCH, user="auditor",
                                       status=403),
    ("GET", _DOC + "/{doc_id}"): Audited("GET", _DOC + "/999999", (), status=404),
    ("GET", _DOC + "/{doc_id}/content"): Audited("GET", _DOC + "/999999/content", (), status=404),
    ("PUT", _DOC + "/{doc_id}/content"): Audited("PUT", _DOC + "/999999/content", (), status=404),
    ("POST", _DOC + "/{doc_id}/sign"): Audited("POST", _DOC + "/999999/sign", (), status=404),
    ("POST", _DOC + "/{doc_id}/addenda"): Audited(
        "POST", _DOC + "/999999/addenda", (), send="json",
        body={"content_type": "text/plain", "content": "UmFzLg==", "reason": "relu"}, status=404,
    ),
    ("POST", _DOC + "/{doc_id}/entered-in-error"): Audited(
        "POST", _DOC + "/999999/entered-in-error", (), send="json", body={"reason": "wrong patient"}, status=404
    ),
    ("GET", "/fhir/DocumentReference"): Audited(
        "GET", "/fhir/DocumentReference", _DOC_DENIED_SEARCH, user="auditor", status=403
    ),
    ("GET", "/fhir/DocumentReference/{doc_id}"): Audited("GET", "/fhir/DocumentReference/999999", (), status=404),
    ("GET", "/fhir/metadata"): NotPatientData("the FHIR CapabilityStatement: interactions and search parameters"),
}  # fmt: skip

_TB = "/api/tumor-boards"
# --- tumor boards (owner: rcp): as the auditor, whom the policy refuses, or unknown ids (404) ---
_TUMOR_BOARDS: dict[tuple[str, str], Entry] = {
    ("GET", _TB): Audited("GET", _TB, ((audit.QUERY, "search:tumor-board", DENIED, ""),), user="auditor",
                          status=403),
    ("POST", _TB): Audited(
        "POST", _TB, ((audit.PATIENT_RECORD, "create:tumor-board", DENIED, ""),), user="auditor", send="json",
        body={"title": "RCP", "scheduled_at": "2026-12-10T14:00:00+01:00"}, status=403,
    ),
    ("GET", _TB + "/{session_id}"): Audited("GET", _TB + "/999999", (), status=404),
    ("POST", _TB + "/{session_id}/patients"): Audited(
        "POST", _TB + "/999999/patients", (), send="json", body={"master_id": 1}, status=404
    ),
    ("POST", _TB + "/{session_id}/patients/{patient_id}/prefetch"): Audited(
        "POST", _TB + "/999999/patients/1/prefetch", (), status=404
    ),
}  # fmt: skip

_HL7 = "/api/hl7"
_HL7_DENIED = "administer:platform"
# --- HL7 senders and dead letters (owner: hl7): administrators only; as the auditor, whom the policy refuses ---
_HL7_ROUTES: dict[tuple[str, str], Entry] = {
    ("GET", _HL7 + "/sources"): Audited("GET", _HL7 + "/sources", ((audit.QUERY, _HL7_DENIED, DENIED, ""),),
                                        user="auditor", status=403),
    ("POST", _HL7 + "/sources"): Audited(
        "POST", _HL7 + "/sources", ((audit.SECURITY_ALERT, _HL7_DENIED, DENIED, ""),), user="auditor",
        send="json", body={"facility": "CH-AUDIT", "site": "SITE-A"}, status=403,
    ),
    ("GET", _HL7 + "/dead-letters"): Audited("GET", _HL7 + "/dead-letters",
                                             ((audit.QUERY, _HL7_DENIED, DENIED, ""),), user="auditor", status=403),
    ("GET", _HL7 + "/dead-letters/{dead_id}"): Audited(
        "GET", _HL7 + "/dead-letters/999999", ((audit.PATIENT_RECORD, _HL7_DENIED, DENIED, ""),), user="auditor",
        status=403,
    ),
    ("POST", _HL7 + "/dead-letters/{dead_id}/replay"): Audited(
        "POST", _HL7 + "/dead-letters/999999/replay", ((audit.PATIENT_RECORD, _HL7_DENIED, DENIED, ""),),
        user="auditor", status=403,
    ),
    ("PUT", _HL7 + "/dead-letters/{dead_id}/message"): Audited(
        "PUT", _HL7 + "/dead-letters/999999/message", ((audit.PATIENT_RECORD, _HL7_DENIED, DENIED, ""),),
        user="auditor", send="json", body={"message": "MSH|^~\\&|RIS|CH-AUDIT"}, status=403,
    ),
}  # fmt: skip

_RET = "/api/retention"
# --- retention (owner: retention): administrators only; as the auditor, whom the policy refuses ---
_RETENTION: dict[tuple[str, str], Entry] = {
    ("GET", _RET + "/holds"): Audited("GET", _RET + "/holds", ((audit.QUERY, _HL7_DENIED, DENIED, ""),),
                                      user="auditor", status=403),
    ("POST", _RET + "/holds"): Audited(
        "POST", _RET + "/holds", ((audit.SECURITY_ALERT, _HL7_DENIED, DENIED, ""),), user="auditor",
        send="json", body={"scope": "patient", "target": "SITE-A/AUD0001", "reason": "litigation"}, status=403,
    ),
    ("POST", _RET + "/holds/{hold_id}/lift"): Audited(
        "POST", _RET + "/holds/999999/lift", ((audit.SECURITY_ALERT, _HL7_DENIED, DENIED, ""),), user="auditor",
        send="json", body={"reason": "closed"}, status=403,
    ),
    ("GET", _RET + "/expired"): Audited("GET", _RET + "/expired", ((audit.QUERY, _HL7_DENIED, DENIED, ""),),
                                        user="auditor", status=403),
}  # fmt: skip

_NOTIFY = "/api/admin/notify/outbox"
# --- the notify outbox (owner: notify): administrators only; as the auditor, whom the policy refuses ---
_NOTIFY_ROUTES: dict[tuple[str, str], Entry] = {
    ("GET", _NOTIFY): Audited("GET", _NOTIFY + "?failed=true", ((audit.QUERY, _HL7_DENIED, DENIED, ""),),
                              user="auditor", status=403),
    ("POST", _NOTIFY + "/{message_id}/retry"): Audited(
        "POST", _NOTIFY + "/999999/retry", ((audit.SECURITY_ALERT, _HL7_DENIED, DENIED, ""),), user="auditor",
        status=403,
    ),
    ("POST", _NOTIFY + "/retry-failed"): Audited(
        "POST", _NOTIFY + "/retry-failed", ((audit.SECURITY_ALERT, _HL7_DENIED, DENIED, ""),), user="auditor",
        status=403,
    ),
}  # fmt: skip

# --- storage lifecycle (owner: life): administrators only; as the auditor, whom the policy refuses ---
_STORAGE: dict[tuple[str, str], Entry] = {
    ("GET", "/api/storage/fixity"): Audited(
        "GET", "/api/storage/fixity", ((audit.QUERY, "administer:platform", DENIED, ""),), user="auditor",
        status=403,
    ),
}  # fmt: skip

ROUTES: dict[tuple[str, str], Entry] = {
    # --- documentation, health, authentication steps (audited as USER_AUTHENTICATION by their own tests) ---
    ("GET", "/"): NotPatientData("redirect to the sign-in page"),
    ("GET", "/openapi.json"): NotPatientData("API description"),
    ("GET", "/docs"): NotPatientData("API documentation"),
    ("GET", "/docs/oauth2-redirect"): NotPatientData("API documentation"),
    ("GET", "/redoc"): NotPatientData("API documentation"),
    ("GET", "/healthz"): NotPatientData("liveness"),
    ("GET", "/readyz"): NotPatientData("readiness: the index, the blob store and the broker answer"),
    ("GET", "/app"): NotPatientData("the web front end's static files; their data comes from the API"),
    ("POST", "/api/auth/token"): NotPatientData("log-in; tested in test_authn_login"),
    ("POST", "/api/auth/session"): NotPatientData("log-in; tested in test_authn_web"),
    ("POST", "/api/auth/oidc"): NotPatientData("log-in; tested in test_authn_oidc"),
    ("GET", "/api/auth/oidc/start"): NotPatientData("log-in; tested in test_authn_oidc"),
    ("GET", "/api/auth/oidc/callback"): NotPatientData("log-in; tested in test_authn_oidc"),
    ("GET", "/api/auth/me"): NotPatientData("the caller's own identity"),
    ("POST", "/api/auth/refresh"): NotPatientData("session; tested in test_authn_sessions"),
    ("POST", "/api/auth/reauth"): NotPatientData("session; tested in test_authn_sessions"),
    ("POST", "/api/auth/totp"): NotPatientData("second factor enrolment"),
    ("POST", "/api/auth/logout"): NotPatientData("session end"),
    ("POST", "/api/auth/logout-all"): NotPatientData("session end"),
    ("POST", "/api/auth/users/{username}/revoke"): NotPatientData("account administration"),
    ("POST", "/api/patient/access"): NotPatientData("patient log-in step; tested in test_authn_patient"),
    ("POST", "/api/patient/verify"): NotPatientData("patient log-in step; tested in test_authn_patient"),
    ("GET", "/api/jobs"): NotPatientData("job status (ids, state, progress)"),
    ("GET", "/api/jobs/{job_id}"): NotPatientData("job status (ids, state, progress)"),
    # --- archive writes ---
    ("POST", "/api/imports"): Audited(
        "POST",
        "/api/imports",
        # The route asks the policy, the job asks again when it runs (as its creator), then records the import.
        (
            (audit.IMPORT, "create:study", OK, ""),
            (audit.IMPORT, "create:study", OK, ""),
            (audit.IMPORT, "import", OK, ""),
        ),
        send="upload",
        status=202,
    ),
    # --- exports (owner: export): every study decided at once; as the auditor, whom the policy refuses ---
    ("POST", "/api/exports"): Audited(
        "POST",
        "/api/exports",
        ((audit.EXPORT, "export:study", DENIED, P),),
        user="auditor",
        send="json",
        body={"issuer": "SITE-A", "patient_id": "AUD0001", "format": "bagit"},
        status=403,
    ),
    ("GET", "/api/exports/{job_id}"): NotPatientData("export job status; the export was audited per study"),
    ("GET", "/api/exports/{job_id}/download"): Audited("GET", "/api/exports/none/download", (), status=404),
    ("POST", "/dicom-web/studies"): Audited(
        "POST", "/dicom-web/studies", ((audit.IMPORT, "create:study", OK, ""),), send="stow"
    ),
    ("POST", "/dicom-web/studies/{study}"): Audited(
        "POST", _STUDY, ((audit.IMPORT, "create:study", OK, ""),), send="stow"
    ),
    # --- the audit trail itself ---
    ("GET", "/api/audit"): Audited(
        "GET", "/api/audit?limit=1", ((audit.AUDIT_LOG_USED, "search:audit", OK, ""),), user="auditor"
    ),
    ("GET", "/api/audit/fhir"): Audited(
        "GET", "/api/audit/fhir?limit=1", ((audit.AUDIT_LOG_USED, "export:audit", OK, ""),), user="auditor"
    ),
    ("GET", "/api/me/access-log"): Audited(
        "GET", "/api/me/access-log", ((audit.AUDIT_LOG_USED, "read:access-log", OK, P),), user="patient"
    ),
    # --- patient portal (owner: patient portal): the signed-in patient's own record and images ---
    ("POST", "/api/patient/session"): NotPatientData(
        "patient log-in step (browser); tested in test_patient_portal"
    ),
    ("GET", "/api/sign-in/options"): NotPatientData("which ways in the sign-in page offers; no data"),
    ("GET", "/api/patient/me"): NotPatientData("the signed-in patient's own reference, from their session"),
    ("GET", "/api/patient/record"): Audited(
        "GET", "/api/patient/record", ((audit.PATIENT_RECORD, "read:patient", OK, P),), user="patient"
    ),
    ("GET", "/api/patient/studies"): Audited(
        "GET", "/api/patient/studies", ((audit.PATIENT_RECORD, "read:patient", OK, P),), user="patient"
    ),
    ("GET", "/api/patient/dicom.zip"): Audited(
        "GET", "/api/patient/dicom.zip", ((audit.EXPORT, "read:patient", OK, P),), user="patient"
    ),
    ("GET", "/api/patient/studies/{study_uid}/dicom.zip"): Audited(
        "GET",
        "/api/patient/studies/{study}/dicom.zip",
        ((audit.EXPORT, "read:study", OK, P),),
        user="patient",
    ),
    # --- DICOMweb: QIDO-RS ---
    ("GET", "/dicom-web/studies"): Audited(
        "GET", "/dicom-web/studies?PatientID={patient_id}", ((audit.QUERY, "search:study", OK, ""),)
    ),
    ("GET", "/dicom-web/series"): Audited(
        "GET", "/dicom-web/series?StudyInstanceUID={study}", ((audit.QUERY, "search:study", OK, ""),)
    ),
    ("GET", "/dicom-web/instances"): Audited(
        "GET", "/dicom-web/instances?StudyInstanceUID={study}", ((audit.QUERY, "search:study", OK, ""),)
    ),
    ("GET", "/dicom-web/studies/{study}/series"): Audited(
        "GET", _STUDY + "/series", ((audit.QUERY, "search:study", OK, ""),)
    ),
    ("GET", "/dicom-web/studies/{study}/instances"): Audited(
        "GET", _STUDY + "/instances", ((audit.QUERY, "search:study", OK, ""),)
    ),
    ("GET", "/dicom-web/studies/{study}/series/{series}/instances"): Audited(
        "GET", _SERIES + "/instances", ((audit.QUERY, "search:study", OK, ""),)
    ),
    # --- DICOMweb: WADO-RS ---
    ("GET", "/dicom-web/studies/{study}"): Audited("GET", _STUDY, _read(audit.INSTANCES_ACCESSED, "study")),
    ("GET", "/dicom-web/studies/{study}/series/{series}"): Audited(
        "GET", _SERIES, _read(audit.INSTANCES_ACCESSED, "study")
    ),
    ("GET", "/dicom-web/studies/{study}/series/{series}/instances/{instance}"): Audited(
        "GET", _INSTANCE, _read(audit.INSTANCES_ACCESSED, "study")
    ),
    ("GET", "/dicom-web/studies/{study}/metadata"): Audited(
        "GET", _STUDY + "/metadata", _read(audit.INSTANCES_ACCESSED, "study")
    ),
    ("GET", "/dicom-web/studies/{study}/series/{series}/metadata"): Audited(
        "GET", _SERIES + "/metadata", _read(audit.INSTANCES_ACCESSED, "study")
    ),
    ("GET", "/dicom-web/studies/{study}/series/{series}/instances/{instance}/metadata"): Audited(
        "GET", _INSTANCE + "/metadata", _read(audit.INSTANCES_ACCESSED, "study")
    ),
    ("GET", "/dicom-web/studies/{study}/series/{series}/instances/{instance}/frames/{frames}"): Audited(
        "GET", _INSTANCE + "/frames/1", _read(audit.INSTANCES_ACCESSED, "study")
    ),
    ("GET", "/dicom-web/studies/{study}/series/{series}/instances/{instance}/bulkdata/{path:path}"): Audited(
        "GET", _INSTANCE + "/bulkdata/7FE00010", _read(audit.INSTANCES_ACCESSED, "study")
    ),
    ("GET", "/dicom-web/studies/{study}/series/{series}/instances/{instance}/rendered"): Audited(
        "GET", _INSTANCE + "/rendered", _read(audit.INSTANCES_ACCESSED, "study")
    ),
    (
        "GET",
        "/dicom-web/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/rendered",
    ): Audited("GET", _INSTANCE + "/frames/1/rendered", _read(audit.INSTANCES_ACCESSED, "study")),
    ("GET", "/dicom-web/studies/{study}/thumbnail"): Audited(
        "GET", _STUDY + "/thumbnail", _read(audit.INSTANCES_ACCESSED, "study")
    ),
    ("GET", "/dicom-web/studies/{study}/series/{series}/thumbnail"): Audited(
        "GET", _SERIES + "/thumbnail", _read(audit.INSTANCES_ACCESSED, "study")
    ),
    ("GET", "/dicom-web/studies/{study}/series/{series}/instances/{instance}/thumbnail"): Audited(
        "GET", _INSTANCE + "/thumbnail", _read(audit.INSTANCES_ACCESSED, "study")
    ),
    # --- patient record by master, identity officer (owner: identity); called as the auditor, whom the policy
    # refuses (identity records are for identity officers and administrators): the refusal must be audited ---
    ("GET", "/api/patients/{master_id}"): Audited(
        "GET",
        "/api/patients/1",
        ((audit.PATIENT_RECORD, "read:patient", DENIED, ""),),
        user="auditor",
        status=403,
    ),
    ("GET", "/api/patients/{master_id}/studies"): Audited(
        "GET",
        "/api/patients/1/studies",
        ((audit.QUERY, "read:patient", DENIED, ""),),
        user="auditor",
        status=403,
    ),
    ("POST", "/api/identity/local-identities"): Audited(
        "POST",
        "/api/identity/local-identities",
        ((audit.PATIENT_RECORD, "create:identity", DENIED, P),),
        user="auditor",
        send="json",
        body={"issuer": "SITE-A", "local_id": "AUD0001", "birth_name": "AUDIT"},
        status=403,
    ),
    ("GET", "/api/identity/local-identities/{issuer}/{local_id}"): Audited(
        "GET",
        "/api/identity/local-identities/SITE-A/{patient_id}",
        ((audit.PATIENT_RECORD, "read:identity", DENIED, P),),
        user="auditor",
        status=403,
    ),
    ("GET", "/api/identity/review"): Audited(
        "GET",
        "/api/identity/review",
        ((audit.PATIENT_RECORD, "read:identity", DENIED, ""),),
        user="auditor",
        status=403,
    ),
    ("GET", "/api/identity/masters/{master_id}"): Audited(
        "GET",
        "/api/identity/masters/1",
        ((audit.PATIENT_RECORD, "read:identity", DENIED, ""),),
        user="auditor",
        status=403,
    ),
    ("POST", "/api/identity/links"): Audited(
        "POST",
        "/api/identity/links",
        ((audit.PATIENT_RECORD, "update:identity", DENIED, P),),
        user="auditor",
        send="json",
        body={"issuer": "SITE-A", "local_id": "AUD0001", "master_id": 1, "reason": "audit walk"},
        status=403,
    ),
    ("POST", "/api/identity/unlinks"): Audited(
        "POST",
        "/api/identity/unlinks",
        ((audit.PATIENT_RECORD, "update:identity", DENIED, P),),
        user="auditor",
        send="json",
        body={"issuer": "SITE-A", "local_id": "AUD0001", "reason": "audit walk"},
        status=403,
    ),
    ("POST", "/api/identity/review/{review_id}/accept"): Audited(
        "POST",
        "/api/identity/review/1/accept",
        ((audit.PATIENT_RECORD, "update:identity", DENIED, ""),),
        user="auditor",
        send="json",
        body={"reason": "audit walk"},
        status=403,
    ),
    ("POST", "/api/identity/review/{review_id}/different"): Audited(
        "POST",
        "/api/identity/review/1/different",
        ((audit.PATIENT_RECORD, "update:identity", DENIED, ""),),
        user="auditor",
        send="json",
        body={"reason": "audit walk"},
        status=403,
    ),
    ("POST", "/api/identity/merges"): Audited(
        "POST",
        "/api/identity/merges",
        ((audit.PATIENT_RECORD, "update:identity", DENIED, ""),),
        user="auditor",
        send="json",
        body={"source_master_id": 2, "target_master_id": 1, "reason": "audit walk"},
        status=403,
    ),
    ("POST", "/api/identity/merges/{merge_id}/unmerge"): Audited(
        "POST",
        "/api/identity/merges/1/unmerge",
        ((audit.PATIENT_RECORD, "update:identity", DENIED, ""),),
        user="auditor",
        send="json",
        body={"reason": "audit walk"},
        status=403,
    ),
    # --- slides (owner: wsi); called as the auditor, whom the policy refuses: the refusal must be audited ---
    ("OPTIONS", "/api/slides/uploads"): NotPatientData(
        "tus protocol discovery (versions, extensions, size limit)"
    ),
    ("POST", "/api/slides/uploads"): Audited(
        "POST",
        "/api/slides/uploads",
        ((audit.IMPORT, "create:slide", DENIED, ""),),
        user="auditor",
        status=403,
        headers={"Tus-Resumable": "1.0.0", "Upload-Length": "10"},
    ),
    ("HEAD", "/api/slides/uploads/{upload_id}"): NotPatientData("upload offset of the caller's own upload"),
    ("PATCH", "/api/slides/uploads/{upload_id}"): NotPatientData(
        "bytes of the caller's own upload (audited at create)"
    ),
    ("DELETE", "/api/slides/uploads/{upload_id}"): NotPatientData("cancels the caller's own upload"),
    ("POST", "/api/slides"): Audited(
        "POST", "/api/slides", ((audit.IMPORT, "create:slide", DENIED, ""),), user="auditor", status=403
    ),
    ("GET", "/api/slides/{slide_id}"): Audited("GET", "/api/slides/unknown", (), user="auditor", status=404),
    ("POST", "/api/slides/{slide_id}/retry"): Audited(
        "POST", "/api/slides/unknown/retry", (), user="auditor", status=404
    ),
    # viewer and annotations (owner: wsi): reads and changes audited; tested in test_wsi_annotations
    ("GET", "/api/slides/{slide_id}/viewer"): Audited("GET", "/api/slides/unknown/viewer", (), status=404),
    ("GET", "/api/slides/{slide_id}/associated/{kind}"): Audited(
        "GET", "/api/slides/unknown/associated/label", (), status=404
    ),
    ("GET", "/api/slides/{slide_id}/annotations"): Audited(
        "GET", "/api/slides/unknown/annotations", (), status=404
    ),
    ("POST", "/api/slides/{slide_id}/annotations"): Audited(
        "POST", "/api/slides/unknown/annotations", (), send="json", body={}, status=404
    ),
    ("DELETE", "/api/slides/{slide_id}/annotations/{annotation_id}"): Audited(
        "DELETE", "/api/slides/unknown/annotations/none", (), status=404
    ),
    ("GET", "/api/slides/{slide_id}/annotations.dcm"): Audited(
        "GET", "/api/slides/unknown/annotations.dcm", (), status=404
    ),
    # --- tile service (owner: tiles): opening a slide is audited; its tiles are checked (cached grant), not audited
    ("GET", "/tiles/{slide_id}.dzi"): Audited("GET", "/tiles/unknown.dzi", (), user="auditor", status=404),
    ("GET", "/tiles/{slide_id}_files/{level:int}/{col:int}_{row:int}.jpeg"): NotPatientData(
        "tile pixels; the open (.dzi / info.json) is audited; tested in test_tiles_service"
    ),
    # Without a signing key (this server) nothing is read: 501. With one, an open (audited): test_tiles_fastpath.
    ("GET", "/tiles/{slide_id}/signed-url"): Audited(
        "GET", "/tiles/unknown/signed-url", (), user="auditor", status=501
    ),
    ("GET", "/iiif/{slide_id}"): NotPatientData("redirect to the image's info.json"),
    ("GET", "/iiif/{slide_id}/info.json"): Audited(
        "GET", "/iiif/unknown/info.json", (), user="auditor", status=404
    ),
    ("GET", "/iiif/{slide_id}/{region}/{size}/{rotation}/{quality_format}"): NotPatientData(
        "image pixels; the open (.dzi / info.json) is audited; tested in test_tiles_service"
    ),
    # --- teleradiology (owner: radiology/telerad); the auditor is refused (audited), unknown requests are 404
    ("POST", "/api/telerad/requests"): Audited(
        "POST",
        "/api/telerad/requests",
        ((audit.PATIENT_RECORD, "create:reading-request", DENIED, P),),
        user="auditor",
        send="json",
        body={
            "issuer": "SITE-A",
            "patient_id": "AUD0001",
            "accession_number": "AUDTR1",
            "clinical_info": "audit walk",
            "justification": "audit walk",
            "priority": "stat",
        },
        status=403,
    ),
    ("GET", "/api/telerad/requests"): Audited(
        "GET",
        "/api/telerad/requests",
        ((audit.QUERY, "search:reading-request", DENIED, ""),),
        user="auditor",
        status=403,
    ),
    ("GET", "/api/telerad/requests/{request_id}"): Audited(
        "GET", "/api/telerad/requests/999999", (), user="auditor", status=404
    ),
    ("POST", "/api/telerad/requests/{request_id}/claim"): Audited(
        "POST", "/api/telerad/requests/999999/claim", (), user="auditor", status=404
    ),
    ("POST", "/api/telerad/requests/{request_id}/release"): Audited(
        "POST", "/api/telerad/requests/999999/release", (), user="auditor", status=404
    ),
    ("POST", "/api/telerad/requests/{request_id}/cancel"): Audited(
        "POST", "/api/telerad/requests/999999/cancel", (), user="auditor", send="json", body={}, status=404
    ),
    ("GET", "/api/telerad/requests/{request_id}/priors"): Audited(
        "GET", "/api/telerad/requests/999999/priors", (), user="auditor", status=404
    ),
    ("POST", "/api/telerad/requests/{request_id}/report"): Audited(
        "POST",
        "/api/telerad/requests/999999/report",
        (),
        user="auditor",
        send="json",
        body={"text": "x"},
        status=404,
    ),
    ("POST", "/api/telerad/requests/{request_id}/sign"): Audited(
        "POST",
        "/api/telerad/requests/999999/sign",
        (),
        user="auditor",
        send="json",
        body={"text": "x"},
        status=404,
    ),
    ("POST", "/api/telerad/requests/{request_id}/addenda"): Audited(
        "POST",
        "/api/telerad/requests/999999/addenda",
        (),
        user="auditor",
        send="json",
        body={"text": "x", "reason": "y"},
        status=404,
    ),
    ("POST", "/api/telerad/requests/{request_id}/priors/prefetch"): Audited(
        "POST", "/api/telerad/requests/999999/priors/prefetch", (), user="auditor", status=404
    ),
    ("POST", "/api/telerad/second-opinions"): Audited(
        "POST",
        "/api/telerad/second-opinions",
        ((audit.PATIENT_RECORD, "create:second-opinion", DENIED, P),),
        user="auditor",
        send="json",
        body={"issuer": "SITE-A", "patient_id": "AUD0001", "question": "audit walk", "to_site": "SITE-A"},
        status=403,
    ),
    ("GET", "/api/telerad/second-opinions"): Audited(
        "GET",
        "/api/telerad/second-opinions",
        ((audit.QUERY, "search:second-opinion", DENIED, ""),),
        user="auditor",
        status=403,
    ),
    ("GET", "/api/telerad/second-opinions/{opinion_id}"): Audited(
        "GET", "/api/telerad/second-opinions/999999", (), user="auditor", status=404
    ),
    ("POST", "/api/telerad/second-opinions/{opinion_id}/take"): Audited(
        "POST", "/api/telerad/second-opinions/999999/take", (), user="auditor", status=404
    ),
    ("POST", "/api/telerad/second-opinions/{opinion_id}/answer"): Audited(
        "POST",
        "/api/telerad/second-opinions/999999/answer",
        (),
        user="auditor",
        send="json",
        body={"text": "x"},
        status=404,
    ),
    ("POST", "/api/telerad/critical-results/{critical_id}/acknowledge"): Audited(
        "POST",
        "/api/telerad/critical-results/999999/acknowledge",
        (),
        user="auditor",
        send="json",
        body={},
        status=404,
    ),
    # --- frozen sections (owner: wsi); the auditor is refused (audited), unknown requests are 404 before the policy
    ("POST", "/api/frozen-sections"): Audited(
        "POST",
        "/api/frozen-sections",
        ((audit.PATIENT_RECORD, "create:frozen-section", DENIED, P),),
        user="auditor",
        send="json",
        body={
            "issuer": "SITE-A",
            "patient_id": "AUD0001",
            "specimen": "lymph node",
            "specimen_site": "axilla",
            "clinical_question": "metastasis?",
            "or_phone": "+33 1 00 00 00 00",
        },
        status=403,
    ),
    ("GET", "/api/frozen-sections/worklist"): Audited(
        "GET",
        "/api/frozen-sections/worklist",
        ((audit.QUERY, "search:frozen-section", DENIED, ""),),
        user="auditor",
        status=403,
    ),
    ("GET", "/api/frozen-sections/stream"): Audited(
        "GET",
        "/api/frozen-sections/stream",
        ((audit.QUERY, "search:frozen-section", DENIED, ""),),
        user="auditor",
        status=403,
    ),
    ("GET", "/api/frozen-sections/report"): NotPatientData(
        "turnaround figures: counts and durations, no patient"
    ),
    ("GET", "/api/frozen-sections/report.svg"): NotPatientData(
        "the turnaround figures as a plot, no patient"
    ),
    ("GET", "/api/frozen-sections/{request_id}"): Audited(
        "GET", "/api/frozen-sections/999999", (), user="auditor", status=404
    ),
    ("POST", "/api/frozen-sections/{request_id}/slides"): Audited(
        "POST",
        "/api/frozen-sections/999999/slides",
        (),
        user="auditor",
        send="json",
        body={"slide_id": "unknown"},
        status=404,
    ),
    ("POST", "/api/frozen-sections/{request_id}/claim"): Audited(
        "POST", "/api/frozen-sections/999999/claim", (), user="auditor", status=404
    ),
    ("POST", "/api/frozen-sections/{request_id}/release"): Audited(
        "POST", "/api/frozen-sections/999999/release", (), user="auditor", status=404
    ),
    ("POST", "/api/frozen-sections/{request_id}/verdict"): Audited(
        "POST",
        "/api/frozen-sections/999999/verdict",
        (),
        user="auditor",
        send="json",
        body={"diagnosis": "benign", "margins": "clear"},
        status=404,
    ),
    ("POST", "/api/frozen-sections/{request_id}/amendments"): Audited(
        "POST",
        "/api/frozen-sections/999999/amendments",
        (),
        user="auditor",
        send="json",
        body={"diagnosis": "benign", "margins": "clear", "reason": "audit walk"},
        status=404,
    ),
    ("GET", "/api/frozen-sections/{request_id}/verdict/verify"): Audited(
        "GET", "/api/frozen-sections/999999/verdict/verify", (), user="auditor", status=404
    ),
    ("POST", "/api/frozen-sections/{request_id}/seen"): Audited(
        "POST", "/api/frozen-sections/999999/seen", (), user="auditor", status=404
    ),
    ("GET", "/api/frozen-sections/{request_id}/events"): Audited(
        "GET", "/api/frozen-sections/999999/events", (), user="auditor", status=404
    ),
    ("POST", "/api/duty"): Audited(
        "POST",
        "/api/duty",
        ((audit.SECURITY_ALERT, "duty-start", DENIED, ""),),
        user="auditor",
        send="json",
        body={"start": "2026-12-01T20:00:00+00:00", "end": "2026-12-02T08:00:00+00:00"},
        status=403,
    ),
    ("GET", "/api/duty"): NotPatientData("the on-duty roster: who answers frozen sections when"),
    ("DELETE", "/api/duty/{shift_id}"): Audited(
        "DELETE",
        "/api/duty/999999",
        ((audit.SECURITY_ALERT, "duty-cancel", FAILED, ""),),
        user="auditor",
        status=404,
    ),
    ("POST", "/api/viewer-timings"): NotPatientData(
        "viewer timings: an event name, a duration, a slide's opaque id"
    ),
    # --- WSI validation studies (owner: wsi); unknown studies are 404 before the policy is asked on their slides
    ("POST", "/api/validation-studies"): NotPatientData(
        "a validation study: its pathologist and application"
    ),
    ("GET", "/api/validation-studies"): NotPatientData(
        "the caller's validation studies (owner, application, bounds)"
    ),
    ("POST", "/api/validation-studies/{study_id}/cases"): Audited(
        "POST",
        "/api/validation-studies/999999/cases",
        (),
        user="auditor",
        send="json",
        body={"slide_id": "unknown"},
        status=404,
    ),
    ("GET", "/api/validation-studies/{study_id}/cases/{case_id}"): Audited(
        "GET", "/api/validation-studies/999999/cases/1", (), user="auditor", status=404
    ),
    ("POST", "/api/validation-studies/{study_id}/cases/{case_id}/glass"): Audited(
        "POST",
        "/api/validation-studies/999999/cases/1/glass",
        (),
        user="auditor",
        send="json",
        body={"diagnosis": "benign"},
        status=404,
    ),
    ("POST", "/api/validation-studies/{study_id}/cases/{case_id}/digital"): Audited(
        "POST",
        "/api/validation-studies/999999/cases/1/digital",
        (),
        user="auditor",
        send="json",
        body={"diagnosis": "benign"},
        status=404,
    ),
    ("GET", "/api/validation-studies/{study_id}/report"): NotPatientData(
        "concordance figures and case numbers, no diagnosis or patient"
    ),
    # --- access-control records (owner: access): unknown ids or the auditor, so no other entry's data changes ---
    ("GET", "/api/patients/{master_id}/consent"): Audited(
        "GET",
        "/api/patients/1/consent",
        ((audit.PATIENT_RECORD, "read:consent", DENIED, ""),),
        user="auditor",
        status=403,
    ),
    ("POST", "/api/patients/{master_id}/consent"): Audited(
        "POST",
        "/api/patients/1/consent",
        ((audit.PATIENT_RECORD, "update:consent", DENIED, ""),),
        user="auditor",
        send="json",
        body={"sharing": "refused", "method": "paper"},
        status=403,
    ),
    ("GET", "/api/patient/consent"): Audited(
        "GET", "/api/patient/consent", ((audit.PATIENT_RECORD, "read:consent", OK, ""),), user="patient"
    ),
    ("POST", "/api/patient/consent"): Audited(
        "POST",
        "/api/patient/consent",
        ((audit.PATIENT_RECORD, "update:consent", OK, ""),),
        user="patient",
        send="json",
        body={"sharing": "granted"},
        status=201,
    ),
    ("GET", "/api/patients/{master_id}/care-relationships"): Audited(
        "GET",
        "/api/patients/1/care-relationships",
        ((audit.PATIENT_RECORD, "read:care", DENIED, ""),),
        user="auditor",
        status=403,
    ),
    ("POST", "/api/patients/{master_id}/care-relationships"): Audited(
        "POST",
        "/api/patients/1/care-relationships",
        ((audit.PATIENT_RECORD, "update:care", DENIED, ""),),
        user="auditor",
        send="json",
        body={"professional": "someone", "kind": "treating"},
        status=403,
    ),
    ("POST", "/api/care-relationships/{relationship_id}/end"): Audited(
        "POST", "/api/care-relationships/999999/end", (), user="auditor", status=404
    ),
    # --- patients' portal access codes (owner: patient access): as the auditor, whom the policy refuses ---
    ("POST", "/api/access-codes"): Audited(
        "POST",
        "/api/access-codes",
        ((audit.PATIENT_RECORD, "create:patient-access", DENIED, P),),
        user="auditor",
        send="json",
        body={"patient": "SITE-A/AUD0001", "email": "p@example.org"},
        status=403,
    ),
    ("GET", "/api/access-codes"): Audited(
        "GET",
        "/api/access-codes?patient={patient}",
        ((audit.PATIENT_RECORD, "read:patient-access", DENIED, P),),
        user="auditor",
        status=403,
    ),
    ("POST", "/api/access-codes/{code_id}/revoke"): Audited(
        "POST",
        "/api/access-codes/999999/revoke",
        (),
        user="auditor",
        send="json",
        body={"reason": "audit walk"},
        status=404,
    ),
    ("GET", "/api/studies/{study_uid}/confidentiality"): Audited(
        "GET", "/api/studies/{study}/confidentiality", ((audit.PATIENT_RECORD, "read:study", OK, P),)
    ),
    ("POST", "/api/studies/{study_uid}/confidentiality"): Audited(
        "POST",
        "/api/studies/{study}/confidentiality",
        ((audit.PATIENT_RECORD, "update:confidentiality", OK, P),),
        send="json",
        body={"release": ["PSY"]},
    ),
    ("POST", "/api/break-glass"): Audited(
        "POST",
        "/api/break-glass",
        ((audit.PATIENT_RECORD, "create:break-glass", DENIED, ""),),
        user="auditor",
        send="json",
        body={"master_id": 1, "reason": "emergency in the operating room"},
        status=403,
    ),
    ("GET", "/api/break-glass"): NotPatientData("the caller's own emergency accesses (ids, times, reasons)"),
    ("POST", "/api/break-glass/{access_id}/end"): Audited(
        "POST", "/api/break-glass/999999/end", (), user="auditor", status=404
    ),
    # --- multi-head microscope (owner: wsi): opening and joining are audited per slide (INSTANCES_ACCESSED),
    # tested in test_multihead; here unknown slides and sessions, so nothing is read ---
    ("POST", "/api/multihead"): Audited(
        "POST",
        "/api/multihead",
        (),
        user="auditor",
        send="json",
        body={"slide_id": "unknown", "invitees": []},
        status=404,
    ),
    ("GET", "/api/multihead/{session_id}"): Audited(
        "GET", "/api/multihead/unknown", (), user="auditor", status=404
    ),
    ("POST", "/api/multihead/{session_id}/invite"): Audited(
        "POST",
        "/api/multihead/unknown/invite",
        (),
        user="auditor",
        send="json",
        body={"invitees": ["radiologist"]},
        status=404,
    ),
    ("DELETE", "/api/multihead/{session_id}"): Audited(
        "DELETE", "/api/multihead/unknown", (), user="auditor", status=404
    ),
    ("GET", "/ws/multihead/{session_id}"): NotPatientData(
        "WebSocket, not callable over plain HTTP; each join asks the policy per slide and is audited "
        "(INSTANCES_ACCESSED, denials too), tested in test_multihead"
    ),
    # --- in-app notifications (owner: professional portal): the caller's own; unknown ids answer 404 ---
    ("GET", "/api/inbox"): Audited("GET", "/api/inbox", ((audit.QUERY, "search:inbox", OK, ""),)),
    ("GET", "/api/inbox/counts"): NotPatientData("the caller's own unread counts: numbers, no title"),
    ("POST", "/api/inbox/{notification_id}/read"): Audited(
        "POST", "/api/inbox/999999/read", ((audit.PATIENT_RECORD, "update:inbox", OK, ""),), status=404
    ),
    ("POST", "/api/inbox/{notification_id}/acknowledge"): Audited(
        "POST", "/api/inbox/999999/acknowledge", ((audit.PATIENT_RECORD, "update:inbox", OK, ""),), status=404
    ),
    ("GET", "/api/patients/{master_id}/timeline"): Audited(
        "GET",
        "/api/patients/1/timeline",
        ((audit.PATIENT_RECORD, "read:patient", DENIED, ""),),
        user="auditor",
        status=403,
    ),
    ("GET", "/api/search"): Audited(
        "GET", "/api/search?q=AUD0001", ((audit.QUERY, "search:patient", OK, ""),)
    ),
    # --- screening (owner: mammo): as the auditor, whom the policy refuses, or unknown ids (404, no event) ---
    **_SCREENING,
    **_HL7_ROUTES,
    **_DOCUMENTS,
    **_TUMOR_BOARDS,
    **_STORAGE,
    **_RETENTION,
    **_NOTIFY_ROUTES,
}

#: DIMSE services that touch patient data, with the events one operation adds (see the test for the calls).
DIMSE: dict[str, tuple[tuple[str, str, str, str], ...]] = {
    # The first instance of a new patient also registers them in the MPI (the event names them issuer/PatientID).
    "C-STORE": ((audit.PATIENT_RECORD, "identity-new", OK, P), (audit.IMPORT, "create:instance", OK, P)),
    "C-FIND": ((audit.QUERY, "search:study", OK, ""),),
    "C-MOVE": ((audit.INSTANCES_TRANSFERRED, "read:study", OK, P),),
    "C-GET": ((audit.INSTANCES_TRANSFERRED, "read:study", OK, P),),
}
