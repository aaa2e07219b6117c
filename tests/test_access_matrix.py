"""The access matrix: roles x relationships x organisation x consent x confidentiality x actions, each cell with
its expected allow or deny, run in full against the pure ``access.allow`` and, for a real subset, end to end
through HTTP (QIDO-RS results, counts and paging, WADO-RS retrieve) and DIMSE (dcmtk findscu and movescu against
``archipel serve``). Every run shows zero unexpected allows and zero unexpected denies.

The expectations are written from ``docs/access-policy.md`` in :func:`expected`, independently of the code.
"""

from __future__ import annotations

import itertools
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import pydicom
import pytest
from fastapi.testclient import TestClient

from archipel.app import create_app
from archipel.platform import access, care
from archipel.platform.access import Facts, Resource
from archipel.platform.authn import Principal
from archipel.platform.care import CareLink
from archipel.platform.db import Database
from archipel.platform.http import current_principal
from archipel.platform.runtime import Runtime
from archipel.radiology.archive import Archive
from archipel.radiology.samples import SyntheticPatient, ct_series, to_bytes
from tests.access_support import break_glass, ensure_master, mark, relate, set_consent
from tests.dimse_peers import storescp, write_files
from tests.support import ArchipelServer

PRODUCER = "SITE-A"
OTHER = "SITE-B"
MASTER, OTHER_MASTER = 1, 2

CLINICAL = ("radiologist", "pathologist", "surgeon", "screening-reader", "treating-doctor", "technician")
#: Every actor of the matrix: user roles, patients (their own record or another's) and DICOM nodes.
ACTORS = (
    *CLINICAL,
    "identity-officer",
    "admin",
    "auditor",
    "patient-own",
    "patient-other",
    "legal-representative-own",
    "node-producing-site",
    "node-other-site",
    "node-regional",
)
ORGANISATIONS = ("producing-site", "other-site", "no-site")
RELATIONSHIPS = ("none", "care", "named", "break-glass")
CONSENTS = ("not-recorded", "granted", "refused")
CONFIDENTIALITY = ("none", "MASQUE_PS", "INVISIBLE_PATIENT", "INVISIBLE_REPRESENTANTS_LEGAUX", "PSY")
ACTIONS = ("read", "search", "create", "set-confidentiality", "record-consent", "break-glass")
PRODUCERS = {"radiologist", "pathologist", "technician"}
RECORDERS = {"radiologist", "pathologist", "surgeon", "treating-doctor", "screening-reader"}
GLASS_BREAKERS = {"radiologist", "pathologist", "surgeon", "treating-doctor", "admin"}


@dataclass(frozen=True)
class Cell:
    """One cell of the matrix."""

    actor: str
    organisation: str
    relationship: str
    consent: str
    confidentiality: str
    action: str

    @property
    def interface(self) -> str:
        """Nodes act over DIMSE, people over HTTP."""
        return "DIMSE" if self.actor.startswith("node-") else "HTTP"


def expected(c: Cell) -> bool:
    """The policy as ``docs/access-policy.md`` states it, cell by cell."""
    actor, conf, action = c.actor, c.confidentiality, c.action
    own_site = c.organisation == "producing-site"
    if action == "create":
        return actor.startswith("node-") or actor in PRODUCERS or actor == "admin"
    if action == "break-glass":
        return actor in GLASS_BREAKERS
    if action == "record-consent":
        if actor in ("patient-own", "legal-representative-own", "admin"):
            return True
        return actor in RECORDERS and own_site
    if action == "set-confidentiality":
        if actor in ("patient-own", "legal-representative-own"):
            return conf in ("none", "MASQUE_PS")
        return actor in RECORDERS and own_site
    # read / search of one study
    if actor == "node-producing-site":
        return True
    if actor == "node-other-site":
        return False
    if actor == "node-regional":
        return c.consent != "refused" and conf not in ("MASQUE_PS", "PSY")
    if actor == "patient-own":
        return conf != "INVISIBLE_PATIENT"
    if actor == "legal-representative-own":
        return conf not in ("INVISIBLE_PATIENT", "INVISIBLE_REPRESENTANTS_LEGAUX")
    if actor in ("patient-other", "identity-officer", "auditor"):
        return False
    broke_glass = c.relationship == "break-glass" and actor in GLASS_BREAKERS
    if actor == "admin":
        return broke_glass and conf != "MASQUE_PS"
    related = c.relationship in ("care", "named")
    shared = related and (c.consent != "refused" or c.relationship == "named")
    if conf == "MASQUE_PS":
        return own_site
    if conf == "PSY":
        return (own_site and (related or broke_glass)) or shared or broke_glass
    return own_site or shared or broke_glass


def principal_of(actor: str, organisation: str) -> Principal:
    """The principal acting in a cell."""
    site = {"producing-site": PRODUCER, "other-site": OTHER, "no-site": ""}[organisation]
    if actor == "node-producing-site":
        return Principal("NODE_A", "node", PRODUCER, kind="node")
    if actor == "node-other-site":
        return Principal("NODE_B", "node", OTHER, kind="node")
    if actor == "node-regional":
        return Principal("REGIONAL", "node", "*", kind="node")
    if actor.startswith("patient-"):
        return Principal("SITE-A/P1", "patient", kind="patient")
    if actor == "legal-representative-own":
        return Principal("SITE-A/P1", "legal-representative", kind="patient")
    return Principal(f"user-{actor}", actor, site)


def facts_of(c: Cell) -> Facts:
    """What the policy would load for the cell."""
    links: dict[int, CareLink] = {}
    if c.relationship in ("care", "named"):
        links[MASTER] = CareLink(frozenset({care.CARE_TEAM}), c.relationship == "named")
    own = {"patient-own": MASTER, "legal-representative-own": MASTER, "patient-other": OTHER_MASTER}
    return Facts(
        care=MappingProxyType(links),
        break_glass=frozenset({MASTER}) if c.relationship == "break-glass" else frozenset(),
        refused=frozenset({MASTER}) if c.consent == "refused" else frozenset(),
        own_masters=frozenset({own[c.actor]}) if c.actor in own else frozenset(),
        patient_sites=frozenset({PRODUCER}),
    )


def resource_of(c: Cell) -> tuple[str, Resource]:
    """The action and resource a cell is about: a study of the producing site, or its access records."""
    codes = frozenset() if c.confidentiality == "none" else frozenset({c.confidentiality})
    study = Resource(
        "study", site=PRODUCER, patient="SITE-A/P1", ident="1.2.3", master=MASTER, confidentiality=codes
    )
    if c.action in ("read", "search"):
        return c.action, study
    if c.action == "create":
        return access.CREATE, study
    if c.action == "set-confidentiality":
        return access.UPDATE, Resource(
            access.CONFIDENTIALITY, site=PRODUCER, master=MASTER, confidentiality=codes
        )
    if c.action == "record-consent":
        return access.UPDATE, Resource(access.CONSENT, master=MASTER)
    return access.CREATE, Resource(access.BREAK_GLASS, master=MASTER)


def cells() -> Iterator[Cell]:
    """The full cartesian table."""
    for values in itertools.product(ACTORS, ORGANISATIONS, RELATIONSHIPS, CONSENTS, CONFIDENTIALITY, ACTIONS):
        yield Cell(*values)


def test_the_full_matrix_has_no_unexpected_allow_and_no_unexpected_deny() -> None:
    unexpected_allows: list[tuple[Cell, str]] = []
    unexpected_denies: list[tuple[Cell, str]] = []
    total = 0
    for cell in cells():
        total += 1
        action, resource = resource_of(cell)
        decision = access.allow(principal_of(cell.actor, cell.organisation), action, resource, facts_of(cell))
        if decision.allowed and not expected(cell):
            unexpected_allows.append((cell, decision.reason))
        elif not decision.allowed and expected(cell):
            unexpected_denies.append((cell, decision.reason))
    assert total == len(ACTORS) * 3 * 4 * 3 * 5 * len(ACTIONS)
    assert unexpected_allows == [], (
        f"{len(unexpected_allows)} unexpected allows, e.g. {unexpected_allows[:5]}"
    )
    assert unexpected_denies == [], (
        f"{len(unexpected_denies)} unexpected denies, e.g. {unexpected_denies[:5]}"
    )


def test_every_read_by_break_the_glass_carries_its_own_audit_purpose() -> None:
    for cell in cells():
        if cell.action != "read" or not expected(cell):
            continue
        action, resource = resource_of(cell)
        decision = access.allow(principal_of(cell.actor, cell.organisation), action, resource, facts_of(cell))
        only_glass = cell.actor == "admin" or (
            cell.relationship == "break-glass"
            and cell.organisation != "producing-site"
            and cell.actor in GLASS_BREAKERS
        )
        if only_glass:
            assert decision.purpose == "break-glass", cell


def test_a_denial_says_why() -> None:
    radiologist = Principal("r", "radiologist", OTHER)
    masked = Resource("study", site=PRODUCER, master=MASTER, confidentiality=frozenset({"MASQUE_PS"}))
    assert "MASQUE_PS" in access.allow(radiologist, access.READ, masked).reason
    refused = Facts(
        care=MappingProxyType({MASTER: CareLink(frozenset({"care-team"}), False)}),
        refused=frozenset({MASTER}),
    )
    plain = Resource("study", site=PRODUCER, master=MASTER)
    assert "refused sharing" in access.allow(radiologist, access.READ, plain, refused).reason
    admin = Principal("a", "admin")
    assert "without break-the-glass" in access.allow(admin, access.READ, plain).reason


# --- End to end: a real subset through the interfaces -------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A stored study and the facts of its patient, as the matrix names them."""

    key: str
    site: str
    consent: str
    confidentiality: str


#: One study per case: P5 has a second, sensitive one (its patient-level count must not leak) and P7 a second one
#: not yet released to the patient.
CASES = (
    Case("P1", PRODUCER, "not-recorded", "none"),
    Case("P2", PRODUCER, "granted", "MASQUE_PS"),
    Case("P3", PRODUCER, "not-recorded", "PSY"),
    Case("P4", OTHER, "refused", "none"),
    Case("P5", OTHER, "granted", "none"),
    Case("P5", OTHER, "granted", "PSY"),
    Case("P7", OTHER, "not-recorded", "none"),
    Case("P7", OTHER, "not-recorded", "INVISIBLE_PATIENT"),
    Case("P8", OTHER, "not-recorded", "MASQUE_PS"),
)
#: Who acts end to end, at which site, and their relationship with each patient.
PEOPLE: dict[str, tuple[str, str, dict[str, str]]] = {
    "rad-a": ("radiologist", PRODUCER, {"P4": "care", "P8": "care", "P3": "care"}),
    "doc-n": ("treating-doctor", "", {"P4": "named", "P5": "care"}),
    "admin-bg": ("admin", "", {"P5": "break-glass", "P8": "break-glass"}),
    "admin": ("admin", "", {}),
    "auditor": ("auditor", "", {}),
}


def _expected_for(actor: str, organisation_site: str, relations: dict[str, str], case: Case) -> bool:
    organisation = (
        "no-site"
        if not organisation_site
        else ("producing-site" if organisation_site == case.site else "other-site")
    )
    cell = Cell(
        actor, organisation, relations.get(case.key, "none"), case.consent, case.confidentiality, "read"
    )
    return expected(cell)


@dataclass
class World:
    """Stored studies by case index, patient ids by key, and masters by key."""

    studies: list[str]
    patient_ids: dict[str, str]
    masters: dict[str, int]


#: Family names far apart, so that the MPI never links two test patients.
SURNAMES = ("ARNOUX", "BELKACEM", "CHEVALIER", "DIALLO", "ESPINOSA", "FOURNIER", "GUERIN")


def _patients(tag: str) -> dict[str, SyntheticPatient]:
    out = {}
    for n, key in enumerate(sorted({c.key for c in CASES})):
        site = next(c.site for c in CASES if c.key == key)
        name = f"{SURNAMES[n]}{tag}^{key}"
        out[key] = SyntheticPatient(f"MX{tag}{key}", name, f"19{50 + 7 * n}0{n + 1}1{n}", "F", site)
    return out


def _datasets(tag: str) -> tuple[dict[str, SyntheticPatient], list[list[pydicom.Dataset]]]:
    patients = _patients(tag)
    return patients, [
        ct_series(patients[c.key], 1, rows=8, cols=8, accession=f"MX{i}") for i, c in enumerate(CASES)
    ]


def _apply_facts(db: Database, patients: dict[str, SyntheticPatient], studies: list[str]) -> dict[str, int]:
    """Link every patient to a master, record consent and codes; returns masters by key."""
    masters = {
        k: ensure_master(db, p.issuer, p.patient_id, p.name.split("^")[0], p.birth_date)
        for k, p in patients.items()
    }
    for case, study in zip(CASES, studies, strict=True):
        if case.consent != "not-recorded":
            set_consent(db, masters[case.key], case.consent)
        if case.confidentiality != "none":
            mark(db, study, case.confidentiality)
    return masters


def _relate_people(db: Database, masters: dict[str, int]) -> None:
    for user, (role, site, relations) in PEOPLE.items():
        for key, relation in relations.items():
            if key not in masters:
                continue
            if relation == "break-glass":
                break_glass(db, Principal(user, role, site), masters[key])
            else:
                relate(db, user, masters[key], named=relation == "named")


@pytest.fixture
def world(runtime: Runtime, archive: Archive) -> World:
    """The cases stored through the archive, with their masters, consent, codes and relationships."""
    patients, series = _datasets(uuid.uuid4().hex[:4].upper())
    for datasets in series:
        for ds in datasets:
            archive.store(to_bytes(ds))
    studies = [str(s[0].StudyInstanceUID) for s in series]
    masters = _apply_facts(runtime.db, patients, studies)
    _relate_people(runtime.db, masters)
    return World(studies, {k: p.patient_id for k, p in patients.items()}, masters)


def _client(principal: Principal) -> TestClient:
    app = create_app()
    app.dependency_overrides[current_principal] = lambda: principal
    return TestClient(app)


def _http_principals(world: World) -> dict[str, tuple[Principal, str, dict[str, str]]]:
    out = {u: (Principal(u, role, site), role, rel) for u, (role, site, rel) in PEOPLE.items()}
    p7 = f"{OTHER}/{world.patient_ids['P7']}"
    out["patient-p7"] = (Principal(p7, "patient", kind="patient"), "patient", {})
    return out


def _actor(role: str, principal: Principal, case: Case, world: World) -> str:
    if role == "patient":
        return "patient-own" if principal.subject.endswith(world.patient_ids[case.key]) else "patient-other"
    return role


def test_http_search_counts_paging_and_retrieve_follow_the_matrix(world: World) -> None:
    unexpected: list[str] = []
    for name, (principal, role, relations) in _http_principals(world).items():
        want = {
            world.studies[i]
            for i, case in enumerate(CASES)
            if _expected_for(_actor(role, principal, case, world), principal.site, relations, case)
        }
        with _client(principal) as client:
            r = client.get("/dicom-web/studies", params={"PatientID": "MX*"})
            mine = {s["0020000D"]["Value"][0] for s in (r.json() if r.status_code == 200 else [])} & set(
                world.studies
            )
            if mine != want:
                unexpected.append(
                    f"{name} QIDO: extra {mine - want}, missing {want - mine} ({r.status_code})"
                )
            paged: set[str] = set()
            for offset in range(len(want) + 1):
                page = client.get(
                    "/dicom-web/studies", params={"PatientID": "MX*", "limit": 1, "offset": offset}
                )
                paged |= {s["0020000D"]["Value"][0] for s in (page.json() if page.status_code == 200 else [])}
            if paged & set(world.studies) != want:
                unexpected.append(f"{name} paging leaks or loses: {paged ^ want}")
            for study in world.studies:
                status = client.get(f"/dicom-web/studies/{study}/metadata").status_code
                if (status == 200) != (study in want):
                    unexpected.append(f"{name} WADO {study}: {status}")
    assert unexpected == []


def test_reads_under_break_the_glass_are_audited_with_their_own_purpose(
    runtime: Runtime, world: World
) -> None:
    from sqlalchemy import select

    from archipel.platform.audit import AuditEvent

    p5 = world.studies[4]
    with _client(Principal("admin-bg", "admin")) as client:
        assert client.get(f"/dicom-web/studies/{p5}/metadata").status_code == 200
    with runtime.db.sessions() as s:
        last = s.execute(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(1)).scalar_one()
    assert (last.actor, last.purpose, last.outcome) == ("admin-bg", "break-glass", "success")


# --- DIMSE: a real server, dcmtk findscu and movescu ---------------------------------------------------------

NODES = {"NODE_A": (PRODUCER, False), "NODE_B": (OTHER, False), "REGIONAL": ("REGION", True)}


@dataclass
class DimseWorld:
    """A running server holding the cases, and what was stored."""

    server: ArchipelServer
    studies: list[str]
    patient_ids: dict[str, str]


@pytest.fixture(scope="module")
def dimse_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DimseWorld]:
    """``archipel serve`` with the cases stored by storescu, and three nodes: one per site and a regional one."""
    srv = ArchipelServer(tmp_path_factory.mktemp("matrix") / "data")
    srv.data.mkdir(parents=True)
    for aet, (site, regional) in NODES.items():
        srv.add_node(aet, site=site, regional=regional)
    srv.add_node("STORESCU", site=PRODUCER, regional=True)
    srv.start()
    try:
        patients, series = _datasets(uuid.uuid4().hex[:4].upper())
        files = write_files(tmp_path_factory.mktemp("matrix-files"), [ds for s in series for ds in s])
        sent = subprocess.run(
            [
                "storescu",
                "-aet",
                "STORESCU",
                "-aec",
                srv.aet,
                "127.0.0.1",
                str(srv.dicom_port),
                *map(str, files),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert sent.returncode == 0, sent.stderr
        studies = [str(s[0].StudyInstanceUID) for s in series]
        db = Database(f"sqlite:///{(srv.data / 'index.sqlite').resolve()}")
        try:
            _apply_facts(db, patients, studies)
        finally:
            db.dispose()
        yield DimseWorld(srv, studies, {k: p.patient_id for k, p in patients.items()})
    finally:
        srv.stop()


def _find(world: DimseWorld, out: Path, aet: str, *keys: str, model: str = "-S") -> list[pydicom.Dataset]:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("rsp*.dcm"):
        old.unlink()
    args = ["findscu", model, "-aet", aet, "-aec", world.server.aet, "-X", "-od", str(out), "-to", "60"]
    for key in keys:
        args += ["-k", key]
    done = subprocess.run(
        [*args, "127.0.0.1", str(world.server.dicom_port)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def _node_actor(aet: str) -> str:
    return {"NODE_A": "node-producing-site", "NODE_B": "node-other-site", "REGIONAL": "node-regional"}[aet]


def _node_expects(aet: str, case: Case) -> bool:
    site, regional = NODES[aet]
    actor = (
        "node-regional" if regional else ("node-producing-site" if site == case.site else "node-other-site")
    )
    return expected(Cell(actor, "no-site", "none", case.consent, case.confidentiality, "read"))


@pytest.mark.e2e
def test_c_find_results_and_patient_counts_follow_the_matrix(dimse_world: DimseWorld, tmp_path: Path) -> None:
    unexpected: list[str] = []
    for aet in NODES:
        want = {dimse_world.studies[i] for i, case in enumerate(CASES) if _node_expects(aet, case)}
        found = _find(
            dimse_world, tmp_path / aet, aet, "QueryRetrieveLevel=STUDY", "PatientID=MX*", "StudyInstanceUID"
        )
        got = {str(ds.StudyInstanceUID) for ds in found}
        if got != want:
            unexpected.append(f"{aet}: extra {got - want}, missing {want - got}")
        p5 = dimse_world.patient_ids["P5"]
        patients = _find(
            dimse_world,
            tmp_path / f"{aet}-patients",
            aet,
            "QueryRetrieveLevel=PATIENT",
            f"PatientID={p5}",
            "NumberOfPatientRelatedStudies",
            model="-P",
        )
        visible_p5 = sum(1 for case in CASES if case.key == "P5" and _node_expects(aet, case))
        counts = [int(ds.NumberOfPatientRelatedStudies) for ds in patients]
        if counts != ([visible_p5] if visible_p5 else []):
            unexpected.append(f"{aet}: P5 patient-level counts {counts}, expected {visible_p5}")
    assert unexpected == []


@pytest.mark.e2e
def test_c_move_by_a_regional_consumer_sends_only_shared_data(
    dimse_world: DimseWorld, tmp_path: Path
) -> None:
    srv = dimse_world.server
    with storescp(tmp_path / "received", aet="MATRIXDEST") as dest:
        srv.add_node(dest.aet, port=dest.port, site="REGION", regional=True)
        for i, case in enumerate(CASES):
            before = len(dest.received())
            done = subprocess.run(
                [
                    "movescu",
                    "-S",
                    "-aet",
                    "REGIONAL",
                    "-aec",
                    srv.aet,
                    "-aem",
                    dest.aet,
                    "-to",
                    "60",
                    "-k",
                    "QueryRetrieveLevel=STUDY",
                    "-k",
                    f"StudyInstanceUID={dimse_world.studies[i]}",
                    "127.0.0.1",
                    str(srv.dicom_port),
                ],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, done.stderr
            moved = len(dest.received()) - before
            assert moved == (1 if _node_expects("REGIONAL", case) else 0), (case, done.stdout + done.stderr)
