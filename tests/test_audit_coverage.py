"""Every HTTP route and DIMSE service that touches patient data writes exactly the audit events it should.

The routes are walked from the application itself, so a new route without an entry in
tests/audit_expectations.py fails here, and the failure says which line to add. Calls go to a real
``archipel serve``; DIMSE goes through dcmtk (storescu, findscu, movescu, getscu).
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.routing import iter_route_contexts
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from archipel.platform.audit import AuditEvent
from archipel.platform.db import Database
from archipel.radiology.samples import SyntheticPatient, ct_series, to_bytes
from tests.audit_expectations import DIMSE, ROUTES, Audited, Ctx, NotPatientData
from tests.dicomweb_messages import stow_body
from tests.dimse_peers import dcmtk, storescp, write_files
from tests.support import ArchipelServer, wait_until

pytestmark = pytest.mark.e2e

PATIENT = SyntheticPatient("AUD0001", "AUDIT^Patient", "19700101", "F", issuer="SITE-A")
Event = tuple[str, str, str, str]


def app_routes() -> list[tuple[str, str]]:
    """Every (method, path) the application serves, HEAD left out (it mirrors GET)."""
    from archipel.app import create_app

    found = []
    for route in iter_route_contexts(create_app().routes):
        for method in sorted((route.methods or {"GET"}) - {"HEAD"}) or ["HEAD"]:
            found.append((method, str(route.path)))
    return found


def test_every_route_has_an_audit_expectation() -> None:
    missing = [r for r in app_routes() if r not in ROUTES]
    lines = "\n".join(
        f'    ("{m}", "{p}"): Audited("{m}", "{p}", ((audit.EVENT, "verb:kind", OK, P),)),  # or NotPatientData("why")'
        for m, p in missing
    )
    assert not missing, (
        f"{len(missing)} route(s) have no audit expectation. Add to ROUTES in tests/audit_expectations.py:\n{lines}"
    )
    stale = sorted(set(ROUTES) - set(app_routes()))
    assert not stale, f"ROUTES lists routes the app no longer serves: {stale}"


@dataclass
class World:
    """The running server, its index, and the stored test study."""

    server: ArchipelServer
    db: Database
    ctx: Ctx
    files: list[Path]
    patient_token: str


def _patient_token(server: ArchipelServer) -> str:
    made = server.cli("patients", "access-code", "SITE-A", PATIENT.patient_id, "--email", "p@example.org")
    code = re.search(r"([0-9A-Z]{4}-){4}[0-9A-Z]{4}", made.stdout + made.stderr)
    assert code is not None, made.stdout
    httpx.post(server.url + "/api/patient/access", json={"code": code.group(0)}).raise_for_status()
    # the one-time code is sent just after the answer
    folder = server.data / "outbox"

    def sent() -> re.Match[str] | None:
        files = sorted(folder.iterdir()) if folder.exists() else []
        return re.search(r"one-time code is (\d{6})", files[-1].read_text()) if files else None

    wait_until(lambda: sent() is not None, 30, "the one-time code in the outbox")
    otp = sent()
    assert otp is not None
    r = httpx.post(server.url + "/api/patient/verify", json={"code": code.group(0), "otp": otp.group(1)})
    r.raise_for_status()
    return str(r.json()["access_token"])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("audit-coverage")
    server = ArchipelServer(base / "data")
    server.data.mkdir(parents=True)
    server.add_user("radiologist", "radiologist", "SITE-A")
    server.add_user("auditor", "auditor", "REGION")
    for aet in ("STORESCU", "FINDSCU", "MOVESCU", "GETSCU"):
        server.add_node(aet, site="SITE-A")
    server.start()
    db = Database(f"sqlite:///{(server.data / 'index.sqlite').resolve()}")
    try:
        cts = ct_series(PATIENT, 2, rows=16, cols=16)
        files = write_files(base / "sent", cts)
        ctx = Ctx(
            patient="SITE-A/AUD0001",
            patient_id=PATIENT.patient_id,
            study=str(cts[0].StudyInstanceUID),
            series=str(cts[0].SeriesInstanceUID),
            instance=str(cts[0].SOPInstanceUID),
        )
        yield World(server, db, ctx, files, "")
    finally:
        db.dispose()
        server.stop()


def _last_id(db: Database) -> int:
    with db.sessions() as s:
        return int(s.execute(select(func.coalesce(func.max(AuditEvent.id), 0))).scalar_one())


def _events_after(db: Database, mark: int, ctx: Ctx) -> list[Event]:
    with db.sessions() as s:
        rows = s.execute(select(AuditEvent).where(AuditEvent.id > mark).order_by(AuditEvent.id)).scalars()
        return [
            (e.event_type, e.action, e.outcome, "{patient}" if e.patient == ctx.patient else e.patient)
            for e in rows
        ]


def _expect(world: World, mark: int, expected: tuple[Event, ...], what: str) -> None:
    got: list[Event] = []

    def arrived() -> bool:
        got[:] = _events_after(world.db, mark, world.ctx)
        return len(got) >= len(expected)

    with contextlib.suppress(AssertionError):  # too few events: the assertion below shows which
        wait_until(arrived, 60, f"{len(expected)} audit event(s) from {what}")
    assert tuple(got) == expected, (
        f"{what} wrote {got}, expected {list(expected)}.\n"
        f"If the new behaviour is right, set its entry in tests/audit_expectations.py to: {tuple(got)!r}"
    )


def _dimse_store(world: World) -> None:
    srv = world.server
    dcmtk(
        "storescu",
        "-aet",
        "STORESCU",
        "-aec",
        srv.aet,
        "127.0.0.1",
        str(srv.dicom_port),
        *map(str, world.files),
    )


def _dimse_find(world: World) -> None:
    srv = world.server
    dcmtk(
        "findscu", "-S", "-aet", "FINDSCU", "-aec", srv.aet,
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"PatientID={world.ctx.patient_id}", "-k", "StudyInstanceUID",
        "127.0.0.1", str(srv.dicom_port),
    )  # fmt: skip


def _dimse_move(world: World, tmp: Path) -> None:
    srv = world.server
    with storescp(tmp / "moved", aet="AUDITSCP") as dest:
        srv.add_node(dest.aet, port=dest.port)
        dcmtk(
            "movescu", "-S", "-aet", "MOVESCU", "-aem", dest.aet, "-aec", srv.aet,
            "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={world.ctx.study}",
            "127.0.0.1", str(srv.dicom_port),
        )  # fmt: skip


def _dimse_get(world: World, tmp: Path) -> None:
    srv = world.server
    out = tmp / "got"
    out.mkdir()
    dcmtk(
        "getscu", "-S", "-aet", "GETSCU", "-aec", srv.aet, "-od", str(out),
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={world.ctx.study}",
        "127.0.0.1", str(srv.dicom_port),
    )  # fmt: skip


def test_dimse_services_write_the_expected_events(world: World, tmp_path: Path) -> None:
    # C-STORE first: it stores the study every other call works on.
    for service, call in (
        ("C-STORE", lambda: _dimse_store(world)),
        ("C-FIND", lambda: _dimse_find(world)),
        ("C-MOVE", lambda: _dimse_move(world, tmp_path)),
        ("C-GET", lambda: _dimse_get(world, tmp_path)),
    ):
        mark = _last_id(world.db)
        call()
        _expect(world, mark, DIMSE[service], service)


def _call(world: World, entry: Audited) -> httpx.Response:
    srv, ctx = world.server, world.ctx
    url = srv.url + entry.url.format(**vars(ctx))
    if entry.user == "patient":
        if not world.patient_token:
            world.patient_token = _patient_token(srv)
        headers = {"Authorization": f"Bearer {world.patient_token}"}
    else:
        headers = srv.headers(entry.user)
    headers.update(entry.headers)
    data = world.files[0].read_bytes()
    if entry.send == "json":
        return httpx.request(entry.method, url, json=entry.body, headers=headers, timeout=60)
    if entry.send == "stow":
        boundary = f"audit-{uuid.uuid4().hex}"
        headers["Content-Type"] = f'multipart/related; type="application/dicom"; boundary={boundary}'
        fresh = ct_series(PATIENT, 1, rows=16, cols=16)[0]  # a new instance in the test study
        fresh.SOPInstanceUID = fresh.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        fresh.StudyInstanceUID, fresh.SeriesInstanceUID = ctx.study, ctx.series
        body = stow_body([to_bytes(fresh)], boundary)
        return httpx.request(entry.method, url, content=body, headers=headers, timeout=60)
    if entry.send == "upload":
        return httpx.request(entry.method, url, files={"file": ("ct.dcm", data)}, headers=headers, timeout=60)
    return httpx.request(entry.method, url, headers=headers, timeout=60)


@pytest.mark.parametrize(
    "route", sorted(k for k, v in ROUTES.items() if isinstance(v, Audited)), ids=lambda r: f"{r[0]} {r[1]}"
)
def test_each_route_writes_exactly_its_expected_events(world: World, route: tuple[str, str]) -> None:
    entry = ROUTES[route]
    assert isinstance(entry, Audited)
    if _study_missing(world):
        _dimse_store(world)  # the route tests may run alone, without the DIMSE test before them
    srv = world.server
    # Log in before the mark so that the log-in's own events stay out of the window.
    if entry.user == "patient" and not world.patient_token:
        world.patient_token = _patient_token(srv)
    elif entry.user != "patient":
        srv.token(entry.user)
    mark = _last_id(world.db)
    response = _call(world, entry)
    assert response.status_code == entry.status, f"{route}: {response.status_code} {response.text[:300]}"
    _expect(world, mark, entry.events, f"{route[0]} {route[1]}")


def _study_missing(world: World) -> bool:
    from archipel.radiology.models import Study

    with world.db.sessions() as s:
        return s.execute(select(Study.id).where(Study.study_uid == world.ctx.study)).first() is None


def test_not_patient_data_entries_say_why() -> None:
    for route, entry in ROUTES.items():
        if isinstance(entry, NotPatientData):
            assert entry.reason.strip(), f"{route}: say why it touches no patient data"
