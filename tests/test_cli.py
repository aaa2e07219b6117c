"""The ``archipel`` command line, run as a user would run it."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

from pydicom.fileset import FileSet
from sqlalchemy import create_engine, text

from archipel.radiology.samples import SyntheticPatient, ct_series, mammo_study, mr_series, to_bytes
from tests.support import archipel_cmd


def _count_instances(data: Path) -> int:
    engine = create_engine(f"sqlite:///{data / 'index.sqlite'}")
    with engine.connect() as c:
        n = int(c.execute(text("SELECT count(*) FROM instances")).scalar_one())
    engine.dispose()
    return n


def test_import_folder_zip_and_dicomdir_with_summary_of_refusals(
    tmp_path: Path, patient: SyntheticPatient
) -> None:
    data = tmp_path / "data"
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    for i, ds in enumerate(ct_series(patient, 3)):
        (folder / "sub" / f"ct{i}.dcm").write_bytes(to_bytes(ds))
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.dcm").write_bytes(to_bytes(ct_series(patient, 1)[0])[:500])

    archive_zip = tmp_path / "study.zip"
    with zipfile.ZipFile(archive_zip, "w") as zf:
        for i, ds in enumerate(mr_series(patient, 2)):
            zf.writestr(f"mr/{i}.dcm", to_bytes(ds))

    media = tmp_path / "media"
    fs = FileSet()
    for ds in mammo_study(patient):
        fs.add(ds)
    fs.write(media)

    result = archipel_cmd(
        "import", str(folder), str(archive_zip), str(media), str(tmp_path / "missing"), data=data, check=False
    )
    assert result.returncode == 1, result.stderr
    assert "stored 9," in result.stdout
    assert "notes.txt: not a DICOM Part-10 file" in result.stdout
    assert "broken.dcm: " in result.stdout
    assert "missing: no such file or folder" in result.stdout
    assert "import" in result.stderr and "100%" in result.stderr  # the progress bar ran to the end
    assert _count_instances(data) == 9

    again = archipel_cmd("import", str(archive_zip), data=data)
    assert "stored 0, already stored 2" in again.stdout


def test_users_create_prints_a_generated_password_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = archipel_cmd("users", "create", "dr-a", "--role", "radiologist", data=data)
    assert result.stdout.startswith("password: ")
    assert len(result.stdout.split(": ", 1)[1].strip()) >= 16
    given = archipel_cmd(
        "users",
        "create",
        "dr-b",
        "--role",
        "pathologist",
        "--password-stdin",
        data=data,
        stdin="a-long-passphrase\n",
    )
    assert "password" not in given.stdout
    dup = archipel_cmd("users", "create", "dr-a", "--role", "radiologist", data=data, check=False)
    assert dup.returncode == 2 and "exists already" in dup.stderr
    bad = archipel_cmd("users", "create", "dr-c", "--role", "wizard", data=data, check=False)
    assert bad.returncode == 2 and "unknown role" in bad.stderr


def test_nodes_add_and_list(tmp_path: Path) -> None:
    data = tmp_path / "data"
    archipel_cmd(
        "nodes", "add", "CT_SITE_A", "--host", "127.0.0.1", "--port", "4242", "--site", "SITE-A", data=data
    )
    archipel_cmd(
        "nodes", "add", "PACS_REGION", "--host", "127.0.0.2", "--site", "REGION", "--regional", data=data
    )
    listing = archipel_cmd("nodes", "list", data=data).stdout
    assert "CT_SITE_A" in listing and "4242" in listing and "SITE-A" in listing
    assert "PACS_REGION" in listing and "regional" in listing
    bad = archipel_cmd(
        "nodes", "add", "WAY_TOO_LONG_AE_TITLE", "--host", "h", "--site", "S", data=data, check=False
    )
    assert bad.returncode == 2


def test_db_upgrade_is_idempotent_and_data_defaults_to_the_environment(tmp_path: Path) -> None:
    data = tmp_path / "data"
    archipel_cmd("db", "upgrade", data=data)
    archipel_cmd("db", "upgrade", data=data)
    assert (data / "index.sqlite").exists()


def test_demo_loads_sites_patients_and_ct_mr_mg_studies(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = archipel_cmd("demo", data=data)
    assert "demo data loaded" in result.stdout
    engine = create_engine(f"sqlite:///{data / 'index.sqlite'}")
    with engine.connect() as c:
        modalities = {r[0] for r in c.execute(text("SELECT DISTINCT modality FROM series"))}
        sites = {r[0] for r in c.execute(text("SELECT DISTINCT site FROM studies"))}
    engine.dispose()
    assert {"CT", "MR", "MG"} <= modalities
    assert len(sites) >= 3
    assert (data / "demo-credentials.txt").stat().st_mode & 0o077 == 0
    # the workflows have something to show: a signed report and a draft, a STAT request, a patient access code
    assert "demo reports: 2 documents" in result.stdout and "teleradiology request (STAT)" in result.stdout
    assert re.search(r"access code ([0-9A-Z]{4}-){4}[0-9A-Z]{4}", result.stdout)
    again = archipel_cmd("demo", data=data)
    assert "0 new instances" in again.stdout and "demo reports" not in again.stdout
    engine = create_engine(f"sqlite:///{data / 'index.sqlite'}")
    with engine.connect() as c:
        statuses = sorted(r[0] for r in c.execute(text("SELECT status FROM documents")))
        priorities = [r[0] for r in c.execute(text("SELECT priority FROM telerad_requests"))]
    engine.dispose()
    assert statuses == ["final", "preliminary"] and priorities == ["stat"]


def test_users_get_an_alert_address_and_patients_codes_can_be_for_a_legal_representative(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    archipel_cmd(
        "users", "create", "dr-c", "--role", "treating-doctor", "--email", "dr.c@example.org", data=data
    )
    bad = archipel_cmd(
        "users", "create", "dr-d", "--role", "radiologist", "--email", "nope", data=data, check=False
    )
    assert bad.returncode == 2 and "not an e-mail address" in bad.stderr + bad.stdout
    code = archipel_cmd(
        "patients", "access-code", "SITE-A", "P1", "--email", "p@example.org", "--representative", data=data
    )
    assert "legal representative" in code.stderr + code.stdout
    engine = create_engine(f"sqlite:///{data / 'index.sqlite'}")
    with engine.connect() as c:
        assert (
            c.execute(text("SELECT email FROM users WHERE username = 'dr-c'")).scalar_one()
            == "dr.c@example.org"
        )
        assert (
            c.execute(text("SELECT holder FROM patient_access_codes")).scalar_one() == "legal-representative"
        )
        assert c.execute(text("SELECT count(*) FROM users WHERE username = 'dr-d'")).scalar_one() == 0
    engine.dispose()
