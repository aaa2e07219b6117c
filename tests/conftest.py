"""Shared fixtures: a runtime on SQLite and, when it answers, on PostgreSQL; a running server; test data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from archipel.migrations import upgrade
from archipel.platform import settings as settings_mod
from archipel.platform.db import forget_databases
from archipel.platform.jobs import reset_celery
from archipel.platform.runtime import Runtime, get_runtime, reset_runtime
from archipel.radiology.archive import Archive
from archipel.radiology.samples import SyntheticPatient
from tests.auth_helpers import Clock, client
from tests.support import ArchipelServer, create_pg_database, postgres_available

_PG = postgres_available()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The index URL: an SQLite file, then a fresh PostgreSQL database when the server answers."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'index.sqlite'}"
        return
    if not _PG:
        pytest.skip("PostgreSQL does not answer on 127.0.0.1:5432")
    url, drop = create_pg_database()
    try:
        yield url
    finally:
        forget_databases()
        drop()


@pytest.fixture
def runtime(db_url: str, tmp_path: Path) -> Iterator[Runtime]:
    """A migrated runtime whose data dir is a temporary folder."""
    settings_mod.configure(data_dir=tmp_path / "data", database_url=db_url)
    reset_runtime()
    reset_celery()
    rt = get_runtime()
    upgrade(db_url)
    try:
        yield rt
    finally:
        reset_runtime()
        forget_databases()


@pytest.fixture
def clock(runtime: Runtime) -> Clock:
    """The runtime's clock, set to a fixed start and moved by hand by the test."""
    c = Clock()
    runtime.clock = c
    return c


@pytest.fixture
def http(runtime: Runtime) -> Iterator[TestClient]:
    """The application in this process, over HTTPS, on the test's runtime."""
    with client() as c:
        yield c


@pytest.fixture
def archive(runtime: Runtime) -> Archive:
    """The archive's write side over the test runtime."""
    return Archive(runtime.db, runtime.blobs, runtime.settings.duplicate_policy)


@pytest.fixture
def patient() -> SyntheticPatient:
    """An invented patient of site SITE-A."""
    return SyntheticPatient(
        patient_id="PA0001", name="TESTPATIENT^Alpha", birth_date="19700101", sex="F", issuer="SITE-A"
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArchipelServer]:
    """A running ``archipel serve`` on SQLite with an embedded broker, a radiologist and an admin account,
    and dcmtk's default AE titles registered as nodes of SITE-A."""
    srv = ArchipelServer(tmp_path_factory.mktemp("server") / "data")
    srv.data.mkdir(parents=True)
    srv.add_user("radiologist", "radiologist", "SITE-A")
    srv.add_user("admin", "admin")
    for aet in ("STORESCU", "FINDSCU", "MOVESCU", "GETSCU", "ECHOSCU", "PYNETDICOM"):
        srv.add_node(aet, site="SITE-A")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
