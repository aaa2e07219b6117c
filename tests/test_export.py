"""``archipel export`` and the import of its packages: a study or a patient written out as DICOM media (DICOMDIR,
checked by dcmtk and pydicom) or a BagIt bag (checked by the bagit library), and imported into an empty
platform with the same bytes, UIDs, structure, documents and master patient; a tampered bag is refused whole;
the export is access-checked and audited once per study."""

from __future__ import annotations

import io
import subprocess
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import bagit
import pytest
from fastapi.testclient import TestClient
from pydicom import dcmread
from pydicom.fileset import FileSet
from sqlalchemy import select
from typer.testing import CliRunner

from archipel.app import create_app
from archipel.cli.common import app
from archipel.platform import access, audit
from archipel.platform.audit import AuditEvent
from archipel.platform.authn import Principal, create_user
from archipel.platform.http import current_principal
from archipel.platform.identity.service import master_of
from archipel.platform.runtime import Runtime, get_runtime
from archipel.radiology import documents
from archipel.radiology.archive import Archive
from archipel.radiology.documents_models import Document
from archipel.radiology.models import Instance, Series, Study
from archipel.radiology.samples import SyntheticPatient, ct_series, mr_series, to_bytes
from archipel.radiology.tasks import export_job
from tests.access_support import ensure_master

RADIOLOGIST = Principal("dr-amandier", "radiologist", site="SITE-A")


def _cli(monkeypatch: pytest.MonkeyPatch, database_url: str, data: Path, *args: str) -> tuple[int, str]:
    import archipel.cli  # noqa: F401  (registers the commands)

    monkeypatch.setenv("ARCHIPEL_DATABASE_URL", database_url)
    result = CliRunner().invoke(app, [*args, "--data", str(data)])
    # The console may wrap a long line at any width (it can be made before this test runs): compare words.
    return result.exit_code, " ".join((result.stdout + result.stderr).split())


def _run(runtime: Runtime, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    return _cli(monkeypatch, runtime.settings.effective_database_url, runtime.settings.data_dir, *args)


def _archive(runtime: Runtime, patient: SyntheticPatient) -> tuple[str, dict[str, tuple[str, str, str]]]:
    """Two studies of ``patient`` stored, and a signed report; returns the CT study UID and, per SOP Instance
    UID, (SHA-256, Series UID, Study UID) as stored."""
    archive = Archive(runtime.db, runtime.blobs)
    ct, mr = ct_series(patient, 3), mr_series(patient, 2)
    for ds in [*ct, *mr]:
        archive.store(to_bytes(ds))
    ensure_master(runtime.db, patient.issuer, patient.patient_id)
    documents.register(
        runtime.db, runtime.blobs, RADIOLOGIST, issuer=patient.issuer, patient_id=patient.patient_id,
        type_code="18748-4", title="Compte rendu scanner", content=b"Pas d'anomalie.",
        content_type="text/plain", author="Dr Amandier", organisation="Centre A", site="SITE-A",
        status="final", study_uids=[str(ct[0].StudyInstanceUID)],
    )  # fmt: skip
    return str(ct[0].StudyInstanceUID), _stored(runtime)


def _stored(runtime: Runtime) -> dict[str, tuple[str, str, str]]:
    with runtime.db.sessions() as s:
        rows = s.execute(
            select(Instance.sop_uid, Instance.sha256, Instance.blob_key, Series.series_uid, Study.study_uid)
            .join(Series, Instance.series_pk == Series.id)
            .join(Study, Series.study_pk == Study.id)
        ).all()
    for row in rows:
        assert row.blob_key == row.sha256
    return {r.sop_uid: (r.sha256, r.series_uid, r.study_uid) for r in rows}


def _exports(runtime: Runtime) -> list[AuditEvent]:
    with runtime.db.sessions() as s:
        return list(
            s.execute(select(AuditEvent).where(AuditEvent.event_type == audit.EXPORT).order_by(AuditEvent.id))
            .scalars()
            .all()
        )


@pytest.fixture
def empty_platform(tmp_path: Path, _templates: Any) -> tuple[str, Path]:
    """A second platform, empty, to import into: an index copied from the migrated template, a data dir."""
    return _templates.sqlite_copy(tmp_path / "target.sqlite"), tmp_path / "target"


#: Tests of the policy and of bag checks need no second database engine: SQLite only.
sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def test_patient_bag_imported_into_an_empty_platform_restores_bytes_uids_structure_documents_and_master(
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    patient: SyntheticPatient,
    tmp_path: Path,
    empty_platform: tuple[str, Path],
) -> None:
    ct_study, before = _archive(runtime, patient)
    with runtime.db.write() as s:
        s.execute(select(Study).where(Study.study_uid == ct_study)).scalar_one().confidentiality = "|PSY|"
    master = master_of(runtime.db, patient.issuer, patient.patient_id)
    assert master is not None
    blobs = {sop: runtime.blobs.get(sha) for sop, (sha, _, _) in before.items()}
    bag_zip = tmp_path / "out" / "patient.zip"

    code, output = _run(runtime, monkeypatch, "export", "--patient", str(master), "--format", "bagit",
                        "--out", str(bag_zip))  # fmt: skip
    assert code == 0, output
    assert "2 studies, 2 series, 5 instances" in output and "1 documents" in output and "100%" in output
    events = _exports(runtime)
    assert len(events) == 3  # one per study, one for the document
    assert all("format=bagit" in e.detail and e.outcome == audit.SUCCESS for e in events)

    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(bag_zip).extractall(unpacked)
    bag = bagit.Bag(str(unpacked))
    assert bag.is_valid() and bag.version_info == (1, 0)
    assert bag.info["Archipel-Master-Patient"] == str(master) and bag.info["Archipel-Instances"] == "5"
    assert patient.name.split("^")[0] not in (unpacked / "bag-info.txt").read_text()

    url, data = empty_platform
    code, output = _cli(monkeypatch, url, data, "import", str(bag_zip))
    assert code == 0, output
    assert "stored 5," in output and "documents restored 1" in output and "5/5" in output
    target = get_runtime()
    assert _stored(target) == before
    assert {sop: target.blobs.get(sha) for sop, (sha, _, _) in before.items()} == blobs
    restored_master = master_of(target.db, patient.issuer, patient.patient_id)
    assert restored_master is not None
    with target.db.sessions() as s:
        doc = s.execute(select(Document)).scalar_one()
    assert doc.status == "final" and doc.signed_by == RADIOLOGIST.subject and doc.master_id == restored_master
    assert target.blobs.get(doc.blob_key) == b"Pas d'anomalie."
    with target.db.sessions() as s:
        codes = dict(s.execute(select(Study.study_uid, Study.confidentiality)).tuples().all())
    assert codes[ct_study] == "|PSY|" and set(codes.values()) == {"|PSY|", ""}


@sqlite_only
def test_study_as_dicomdir_reads_in_dcmtk_and_pydicom_and_imports_into_an_empty_platform(
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    patient: SyntheticPatient,
    tmp_path: Path,
    empty_platform: tuple[str, Path],
) -> None:
    study_uid, before = _archive(runtime, patient)
    media = tmp_path / "media"
    code, output = _run(runtime, monkeypatch, "export", "--study", study_uid, "--format", "dicomdir",
                        "--out", str(media))  # fmt: skip
    assert code == 0, output
    assert "1 studies, 1 series, 3 instances" in output

    dump = subprocess.run(["dcmdump", str(media / "DICOMDIR")], capture_output=True, text=True, check=True)
    assert dump.stdout.count("(0004,1500)") == 3  # one ReferencedFileID per image record
    check = subprocess.run(
        ["dcmftest", *map(str, sorted(media.rglob("IM*")))], capture_output=True, text=True
    )
    assert check.returncode == 0 and check.stdout.count("yes:") == 3, check.stdout
    fs = FileSet(dcmread(media / "DICOMDIR"))
    assert len(fs) == 3
    for instance in fs:
        assert all(part.isupper() or part.isdigit() for part in Path(instance.path).relative_to(media).parts)
        assert Path(instance.path).read_bytes() == runtime.blobs.get(before[instance.SOPInstanceUID][0])
    assert all("format=dicomdir" in e.detail for e in _exports(runtime)) and len(_exports(runtime)) == 1

    url, data = empty_platform
    code, output = _cli(monkeypatch, url, data, "import", str(media))
    assert code == 0 and "stored 3," in output, output
    assert _stored(get_runtime()) == {k: v for k, v in before.items() if v[2] == study_uid}


@sqlite_only
def test_a_tampered_bag_is_refused_naming_the_file_and_nothing_is_imported(
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    patient: SyntheticPatient,
    tmp_path: Path,
    empty_platform: tuple[str, Path],
) -> None:
    study_uid, _ = _archive(runtime, patient)
    bag = tmp_path / "bag"
    assert _run(runtime, monkeypatch, "export", "--study", study_uid, "--out", str(bag))[0] == 0
    victim = sorted((bag / "data" / "dicom").rglob("*.dcm"))[-1]
    altered = bytearray(victim.read_bytes())
    altered[-1] ^= 0xFF
    victim.write_bytes(bytes(altered))

    url, data = empty_platform
    code, output = _cli(monkeypatch, url, data, "import", str(bag))
    assert code == 1
    assert victim.relative_to(bag).as_posix() in output and "does not match the manifest" in output
    assert "stored 0," in output
    assert _stored(get_runtime()) == {}


@sqlite_only
def test_export_refused_by_the_policy_writes_nothing_and_is_audited_as_denied(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, patient: SyntheticPatient, tmp_path: Path
) -> None:
    study_uid, _ = _archive(runtime, patient)
    with runtime.db.write() as s:
        create_user(s, "dr-other", "radiologist", "a-long-passphrase", site="SITE-B")
    out = tmp_path / "refused.zip"
    code, output = _run(
        runtime, monkeypatch, "export", "--study", study_uid, "--as", "dr-other", "--out", str(out)
    )
    assert code == 1 and "no care relationship" in output and "nothing was exported" in output
    assert not out.exists() and not list(tmp_path.glob(".archipel-export-*"))
    denied = _exports(runtime)
    assert [(e.outcome, e.actor) for e in denied] == [(audit.DENIED, "dr-other")]

    same_site = _run(
        runtime, monkeypatch, "export", "--study", study_uid, "--as", "nobody", "--out", str(out)
    )
    assert same_site[0] == 2 and "no active account" in same_site[1]
    again = _run(runtime, monkeypatch, "export", "--study", "1.2.3.4", "--out", str(out))
    assert again[0] == 1 and "holds no stored instance" in again[1]


def _client(principal: Principal) -> TestClient:
    app = create_app()
    app.dependency_overrides[current_principal] = lambda: principal
    return TestClient(app)


@sqlite_only
def test_http_export_is_a_job_with_progress_whose_zip_only_its_creator_downloads(
    runtime: Runtime, patient: SyntheticPatient
) -> None:
    study_uid, before = _archive(runtime, patient)
    other = Principal("dr-other", "radiologist", site="SITE-B")
    with _client(RADIOLOGIST) as c, _client(other) as intruder:
        refused = intruder.post("/api/exports", json={"study_uid": study_uid, "format": "dicomdir"})
        assert refused.status_code == 403 and "no care relationship" in refused.json()["detail"]
        assert c.post("/api/exports", json={"study_uid": study_uid, "master_id": 1}).status_code == 422
        assert c.post("/api/exports", json={"study_uid": "1.2.3"}).status_code == 404

        asked = c.post("/api/exports", json={"study_uid": study_uid, "format": "dicomdir"})
        assert asked.status_code == 202, asked.text
        job_id = asked.json()["job"]
        assert c.get(f"/api/exports/{job_id}").json()["state"] == "queued"
        assert c.get(f"/api/exports/{job_id}/download").status_code == 409
        export_job(job_id)  # what the worker does with the queued task

        shown = c.get(f"/api/exports/{job_id}").json()
        assert shown["state"] == "succeeded" and shown["progress"] == 100 and shown["done"] == 3
        assert shown["result"]["instances"] == 3 and shown["result"]["format"] == "dicomdir"
        assert intruder.get(f"/api/exports/{job_id}").status_code == 404
        assert intruder.get(f"/api/exports/{job_id}/download").status_code == 404
        got = c.get(shown["download_url"])
        assert got.status_code == 200 and got.headers["content-type"] == "application/zip"

    with zipfile.ZipFile(io.BytesIO(got.content)) as zf:
        names = zf.namelist()
        assert "DICOMDIR" in names and len(names) == 4
        directory = dcmread(io.BytesIO(zf.read("DICOMDIR")))
        files = {str(r.ReferencedSOPInstanceUIDInFile): "/".join(r.ReferencedFileID)
                 for r in directory.DirectoryRecordSequence if "ReferencedFileID" in r}  # fmt: skip
        for sop, name in files.items():
            assert zf.read(name) == runtime.blobs.get(before[sop][0])
    actions = [(e.action, e.outcome, e.actor) for e in _exports(runtime)]
    assert actions == [
        ("export:study", audit.DENIED, "dr-other"),
        ("export:study", audit.SUCCESS, RADIOLOGIST.subject),  # when asked
        ("export:study", audit.SUCCESS, RADIOLOGIST.subject),  # when the job ran, as its creator then
        ("transfer:export", audit.SUCCESS, RADIOLOGIST.subject),
    ]


def test_export_policy_admin_by_operation_others_exactly_what_they_may_read() -> None:
    study = access.Resource(kind="study", site="SITE-A", patient="SITE-A/PA0001", ident="1.2.3", master=7)
    psy = replace(study, confidentiality=frozenset({"PSY"}))

    def decide(principal: Principal, resource: access.Resource = study) -> access.Decision:
        return access.allow(principal, access.EXPORT, resource, access.Facts(own_masters=frozenset({7})))

    admin = decide(Principal("op", "admin"))
    assert admin.allowed and admin.purpose == access.PURPOSE_OPERATIONS
    assert decide(Principal("op", "admin"), psy).allowed  # an archive transfer takes the whole record
    assert decide(RADIOLOGIST).allowed and not decide(RADIOLOGIST, psy).allowed
    assert not decide(Principal("dr-b", "radiologist", site="SITE-B")).allowed
    assert decide(Principal("SITE-A/PA0001", "patient", kind="patient")).allowed
    for role in ("identity-officer", "auditor"):
        assert not decide(Principal("x", role)).allowed
    node = decide(Principal("PACS", "node", site="SITE-A", kind="node"))
    assert not node.allowed and "made by a person" in node.reason
