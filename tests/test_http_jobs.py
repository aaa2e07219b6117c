"""HTTP authentication, and background import jobs with progress, on the embedded broker and on Redis."""

from __future__ import annotations

import io
import re
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from archipel.radiology.samples import SyntheticPatient, ct_series, to_bytes
from tests.support import ArchipelServer, create_pg_database, postgres_available, redis_available, wait_until


def _zip_of(patient: SyntheticPatient, n: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i, ds in enumerate(ct_series(patient, n)):
            zf.writestr(f"ct/{i:03d}.dcm", to_bytes(ds))
        zf.writestr("README.txt", "not dicom")
    return buf.getvalue()


def _finished_job(srv: ArchipelServer, headers: dict[str, str], job_id: str) -> dict[str, Any]:
    state: dict[str, Any] = {}

    def done() -> bool:
        r = httpx.get(f"{srv.url}/api/jobs/{job_id}", headers=headers)
        r.raise_for_status()
        state.update(r.json())
        return state["state"] in ("succeeded", "failed")

    wait_until(done, 90, f"job {job_id} to finish")
    return state


PUBLIC_ROUTES = {
    "/healthz",
    "/readyz",
    "/api/auth/token",
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    # the other ways in: browser login, OIDC token exchange, patient access code + one-time code
    "/api/auth/session",
    "/api/auth/oidc",
    "/api/auth/oidc/start",
    "/api/auth/oidc/callback",
    "/api/patient/access",
    "/api/patient/verify",
    "/api/patient/session",
    # what the sign-in page offers (no data), and FHIR's capability statement, which clients read before signing in
    "/api/sign-in/options",
    "/fhir/metadata",
}


def test_health_is_public_and_every_other_route_needs_a_token(server: ArchipelServer) -> None:
    from archipel.app import create_app

    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    checked = 0
    # One client, so the few hundred requests reuse a connection rather than open one each.
    with httpx.Client(base_url=server.url) as anonymous:
        for route, operations in create_app().openapi()["paths"].items():
            if route in PUBLIC_ROUTES:
                continue
            path = re.sub(r"\{[^}]+\}", "1", route)
            for method in operations:
                r = anonymous.request(method.upper(), path)
                assert r.status_code == 401, f"{method} {route} answered {r.status_code} without a token"
                assert r.headers["www-authenticate"] == "Bearer"
                checked += 1
    assert checked >= 3


def test_wrong_password_forged_and_expired_tokens_are_refused(server: ArchipelServer) -> None:
    bad = httpx.post(server.url + "/api/auth/token", data={"username": "radiologist", "password": "nope"})
    assert bad.status_code == 401
    forged = jwt.encode(
        {"sub": "radiologist", "role": "admin", "exp": time.time() + 600}, "k" * 40, algorithm="HS256"
    )
    r = httpx.get(server.url + "/api/jobs", headers={"Authorization": f"Bearer {forged}"})
    assert r.status_code == 401 and r.json()["detail"] == "invalid token"
    key = (server.data / "secret.key").read_text().strip()
    expired = jwt.encode(
        {"sub": "radiologist", "role": "radiologist", "exp": time.time() - 5}, key, algorithm="HS256"
    )
    r = httpx.get(server.url + "/api/jobs", headers={"Authorization": f"Bearer {expired}"})
    assert r.status_code == 401 and r.json()["detail"] == "token expired"
    assert httpx.get(server.url + "/api/jobs", headers=server.headers("radiologist")).status_code == 200


def test_uploaded_zip_is_imported_by_a_job_that_shows_progress(
    server: ArchipelServer, patient: SyntheticPatient
) -> None:
    headers = server.headers("radiologist")
    r = httpx.post(
        server.url + "/api/imports",
        headers=headers,
        files={"file": ("study.zip", _zip_of(patient, 6), "application/zip")},
    )
    assert r.status_code == 202, r.text
    job = _finished_job(server, headers, r.json()["job"])
    assert job["state"] == "succeeded", job
    assert job["progress"] == 100.0 and job["done"] == job["total"] == 7
    assert job["result"]["stored"] == 6
    assert job["result"]["refused"][0]["reason"].startswith("not a DICOM Part-10 file")
    listing = server.cli("jobs", r.json()["job"]).stdout
    assert "succeeded" in listing and "100%" in listing


def test_import_is_refused_to_a_role_that_may_not_add_data_and_the_refusal_is_audited(
    server: ArchipelServer,
) -> None:
    name = f"doctor-{uuid.uuid4().hex[:6]}"
    server.add_user(name, "treating-doctor")
    r = httpx.post(
        server.url + "/api/imports",
        headers=server.headers(name),
        files={"file": ("x.dcm", b"x", "application/dicom")},
    )
    assert r.status_code == 403
    assert "may not add patient data" in r.json()["detail"]
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{server.data / 'index.sqlite'}")
    with engine.connect() as c:
        outcome = c.execute(
            text("SELECT outcome FROM audit_events WHERE actor = :a AND event_type = '110107'"), {"a": name}
        ).scalar_one()
    engine.dispose()
    assert outcome == "denied"


@pytest.fixture(scope="module")
def scaled_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArchipelServer]:
    """``archipel serve`` on PostgreSQL with a Redis broker and a real Celery worker."""
    if not (postgres_available() and redis_available()):
        pytest.skip("PostgreSQL and Redis do not both answer on 127.0.0.1")
    url, drop = create_pg_database()
    queue_db = 1 + uuid.uuid4().int % 14
    srv = ArchipelServer(
        tmp_path_factory.mktemp("pg") / "data",
        env={"ARCHIPEL_DATABASE_URL": url, "ARCHIPEL_BROKER_URL": f"redis://127.0.0.1:6379/{queue_db}"},
    )
    srv.data.mkdir(parents=True)
    srv.add_user("radiologist", "radiologist", "SITE-A")
    srv.add_node("STORESCU", site="SITE-A")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        drop()


@pytest.mark.postgres
@pytest.mark.redis
def test_on_postgresql_and_redis_a_celery_worker_runs_the_import(
    scaled_server: ArchipelServer, patient: SyntheticPatient, tmp_path: Path
) -> None:
    headers = scaled_server.headers("radiologist")
    r = httpx.post(
        scaled_server.url + "/api/imports",
        headers=headers,
        files={"file": ("study.zip", _zip_of(patient, 4), "application/zip")},
    )
    assert r.status_code == 202
    job = _finished_job(scaled_server, headers, r.json()["job"])
    assert job["state"] == "succeeded" and job["result"]["stored"] == 4
    log = scaled_server.log.read_text()
    assert "redis://" in log or "Connected to redis" in log
