"""What an orchestrator probes: ``/readyz`` (index, blob store, broker), the worker's heartbeat file through
``archipel worker-probe``, the DICOM listener through ``archipel dicom-probe``; and the refusal to start a shared
deployment on keys that each process would make in its own data dir."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner, Result

from archipel.cli import app
from archipel.platform import worker_heartbeat
from archipel.platform.jobs import reset_celery
from archipel.platform.runtime import Runtime
from archipel.platform.settings import Settings
from archipel.radiology.dimse.listener import start_listener
from tests.support import free_port, wait_until

# The probes do not depend on the kind of index: one is enough.
on_sqlite = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def _cli(*args: str, env: Mapping[str, str | None] | None = None) -> Result:
    """Run an ``archipel`` command in this process (the probes and the refusal build no runtime)."""
    return CliRunner().invoke(app, list(args), env=env)


class _BrokenStore:
    """A blob store whose volume went away."""

    def exists(self, key: str) -> bool:
        raise OSError(5, "Input/output error")


@on_sqlite
def test_readyz_answers_200_when_every_part_answers_and_503_naming_the_part_that_does_not(
    runtime: Runtime, http: TestClient
) -> None:
    ready = http.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ready", "parts": ["blob_store", "broker", "database"]}

    runtime.settings.broker_url = f"redis://127.0.0.1:{free_port()}/0"
    runtime.settings.__dict__.pop("effective_broker_url", None)  # a cached property: read the new URL
    reset_celery()
    store, runtime.blobs = runtime.blobs, _BrokenStore()  # type: ignore[assignment]
    try:
        unready = http.get("/readyz")
    finally:
        runtime.blobs = store
        reset_celery()
    assert unready.status_code == 503
    body = unready.json()
    assert body["status"] == "unready"
    assert set(body["failed"]) == {"broker", "blob_store"}
    assert "Connection refused" in body["failed"]["broker"]
    assert body["failed"]["blob_store"].startswith("OSError")
    assert "redis://" not in unready.text  # a URL may carry a password: never shown


@on_sqlite
def test_healthz_stays_up_while_readyz_reports_a_lost_broker(runtime: Runtime, http: TestClient) -> None:
    runtime.settings.broker_url = f"redis://127.0.0.1:{free_port()}/0"
    runtime.settings.__dict__.pop("effective_broker_url", None)
    reset_celery()
    try:
        assert http.get("/healthz").status_code == 200
        assert http.get("/readyz").status_code == 503
    finally:
        reset_celery()


def test_a_heartbeat_is_alive_while_fresh_and_dead_when_stale_or_missing(tmp_path: Path) -> None:
    beat = tmp_path / "worker.alive"
    assert "no heartbeat file" in (worker_heartbeat.problem(beat) or "")
    worker_heartbeat.touch(beat)
    assert worker_heartbeat.problem(beat, max_age=60) is None
    stale = worker_heartbeat.problem(beat, max_age=60, now=time.time() + 120)
    assert stale is not None and "stuck" in stale


@pytest.mark.e2e
@on_sqlite
def test_worker_probe_passes_while_a_worker_runs_and_fails_once_it_stopped(
    runtime: Runtime, tmp_path: Path
) -> None:
    data = runtime.settings.data_dir
    env = {
        **os.environ,
        "ARCHIPEL_DATA": str(data),
        "ARCHIPEL_DATABASE_URL": runtime.settings.effective_database_url,
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "archipel.cli", "worker", "--queues", "notify", "--no-drop-folder"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    beat = worker_heartbeat.heartbeat_path(Settings(data_dir=data))
    try:
        wait_until(lambda: worker_heartbeat.problem(beat) is None, timeout=60, what="the worker's heartbeat")
        assert _cli("worker-probe", "--data", str(data)).exit_code == 0
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)
    probe = _cli("worker-probe", "--data", str(data))
    assert probe.exit_code == 1 and "no heartbeat file" in probe.output


@on_sqlite
def test_dicom_probe_passes_against_a_listener_and_fails_on_a_closed_port(runtime: Runtime) -> None:
    listener = start_listener(runtime, "127.0.0.1", 0)
    data = str(runtime.settings.data_dir)
    try:
        assert _cli("dicom-probe", "--port", str(listener.port), "--data", data).exit_code == 0
    finally:
        listener.stop()
    closed = _cli("dicom-probe", "--port", str(free_port()), "--timeout", "2", "--data", data)
    assert closed.exit_code == 1 and "no answer in DICOM" in closed.output


def test_shared_deployments_refuse_to_start_on_keys_made_in_the_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    unset: dict[str, str | None] = {"ARCHIPEL_SECRET_KEY": None, "ARCHIPEL_AUDIT_SIGNING_KEY": None}
    on_postgres = {**unset, "ARCHIPEL_DATABASE_URL": "postgresql+psycopg://archipel@db.invalid/archipel"}
    for command in ("api", "dicom"):
        refused = _cli(command, "--data", str(data), env=on_postgres)
        assert refused.exit_code == 2, refused.output
        assert "the index is not the embedded SQLite" in refused.output
        assert "ARCHIPEL_SECRET_KEY and ARCHIPEL_AUDIT_SIGNING_KEY" in refused.output
    assert not data.exists()  # refused before anything was made

    production = {**unset, "ARCHIPEL_PRODUCTION": "true", "ARCHIPEL_SECRET_KEY": "s" * 48}
    worker = _cli("worker", "--data", str(data), env=production)
    assert worker.exit_code == 2, worker.output
    assert "ARCHIPEL_PRODUCTION is on" in worker.output and "set ARCHIPEL_AUDIT_SIGNING_KEY" in worker.output


def test_the_embedded_defaults_need_no_secret_from_the_environment(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert not settings.shared_deployment
    assert settings.missing_shared_secrets() == ["ARCHIPEL_SECRET_KEY", "ARCHIPEL_AUDIT_SIGNING_KEY"]
    assert Settings(data_dir=tmp_path, database_url="postgresql+psycopg://h/db").shared_deployment
    assert Settings(data_dir=tmp_path, production=True).shared_deployment
