"""Shared fixtures: a runtime on SQLite and, when it answers, on PostgreSQL; a running server; test data."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Close the Chromium that the browser tests of this process shared (see tests/browser.py), if any ran;
    playwright is not imported when none did."""
    shared = sys.modules.get("tests.browser")
    if shared is not None:
        shared.close_shared()


@dataclass
class _Templates:
    """Databases migrated once per test session, cloned for each test instead of migrating it again."""

    folder: Path
    sqlite: Path | None = None
    pg_name: str = ""
    pg_drop: Callable[[], None] | None = None

    def sqlite_copy(self, target: Path) -> str:
        if self.sqlite is None:
            self.sqlite = self.folder / "template.sqlite"
            upgrade(f"sqlite:///{self.sqlite}")
            forget_databases()  # closes the last connection, so the WAL is folded into the file
        shutil.copyfile(self.sqlite, target)
        for suffix in ("-wal",):  # present only if a connection was left open; copied so nothing is lost
            side = self.sqlite.with_name(self.sqlite.name + suffix)
            if side.exists():
                shutil.copyfile(side, target.with_name(target.name + suffix))
        return f"sqlite:///{target}"

    def pg_copy(self) -> tuple[str, Callable[[], None]]:
        if not self.pg_name:
            url, self.pg_drop = create_pg_database()
            upgrade(url)
            forget_databases()  # a template database must have no open connection when it is copied
            self.pg_name = url.rsplit("/", 1)[1]
        return create_pg_database(template=self.pg_name)


@pytest.fixture(scope="session")
def _templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Templates]:
    templates = _Templates(tmp_path_factory.mktemp("db-templates"))
    try:
        yield templates
    finally:
        if templates.pg_drop is not None:
            templates.pg_drop()


def _pg_or_skip() -> None:
    if not _PG:
        pytest.skip("PostgreSQL does not answer on 127.0.0.1:5432")


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty index database: an SQLite file, then a fresh PostgreSQL database when the server answers."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'index.sqlite'}"
        return
    _pg_or_skip()
    url, drop = create_pg_database()
    try:
        yield url
    finally:
        forget_databases()
        drop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, _templates: _Templates) -> Iterator[str]:
    """A migrated index of the test's own: an SQLite file, then a PostgreSQL database when the server answers.

    Each is a copy of a database migrated once per session (the migrations themselves are tested on
    :func:`empty_db_url` by test_migrations)."""
    if request.param == "sqlite":
        yield _templates.sqlite_copy(tmp_path / "index.sqlite")
        return
    _pg_or_skip()
    url, drop = _templates.pg_copy()
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


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArchipelServer]:
    """A running ``archipel serve`` on SQLite with an embedded broker, a radiologist and an admin account,
    and dcmtk's default AE titles registered as nodes of SITE-A.

    One server per test process (per xdist worker), shared by every module that asks for it: starting one
    costs seconds, more under the suite's load. A module using it therefore makes its own patients (IDs of
    its own), adds accounts and nodes under names of its own, and counts only what it made (filters by its
    patients, or a before/after difference); a module that needs other settings or an empty archive, or that
    stops the server, starts an :class:`ArchipelServer` of its own."""
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
