"""``archipel nodes remote``: a registered DICOM node becomes a remote PACS that the prefetch queries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from archipel.platform.authn import Principal
from archipel.platform.db import Database
from archipel.radiology import tumorboard
from tests.prefetch_peers import person
from tests.support import archipel_cmd

WIDE = {"COLUMNS": "200"}  # one table row per node


def test_a_registered_node_is_made_a_remote_pacs_listed_and_removed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    archipel_cmd(
        "nodes", "add", "PACS-NORD", "--host", "127.0.0.1", "--port", "11112", "--site", "CHU-NORD", data=data
    )

    done = archipel_cmd(
        "nodes",
        "remote",
        "PACS-NORD",
        "--host",
        "127.0.0.1",
        "--retrieve",
        "get",
        "--timeout",
        "5",
        data=data,
    )
    assert "retrieved by get" in done.stderr + done.stdout
    listed = archipel_cmd("nodes", "remotes", data=data, env=WIDE).stdout
    assert "PACS-NORD" in listed and "CHU-NORD" in listed and "get" in listed

    removed = archipel_cmd("nodes", "remote", "PACS-NORD", "--host", "127.0.0.1", "--remove", data=data)
    assert "no longer" in removed.stderr + removed.stdout
    assert "PACS-NORD" not in archipel_cmd("nodes", "remotes", data=data, env=WIDE).stdout


def test_bad_remote_settings_are_refused_with_the_reason(tmp_path: Path) -> None:
    data = tmp_path / "data"
    archipel_cmd("nodes", "add", "PACS-WEB", "--host", "127.0.0.1", "--site", "CHU-SUD", data=data)

    unknown = archipel_cmd("nodes", "remote", "NOPE", "--host", "127.0.0.1", data=data, check=False)
    assert unknown.returncode != 0 and "no registered node NOPE" in unknown.stderr
    no_url = archipel_cmd(
        "nodes", "remote", "PACS-WEB", "--host", "127.0.0.1", "--retrieve", "dicomweb", data=data, check=False
    )
    assert no_url.returncode != 0 and "--dicomweb-url" in no_url.stderr
    method = archipel_cmd(
        "nodes", "remote", "PACS-WEB", "--host", "127.0.0.1", "--retrieve", "ftp", data=data, check=False
    )
    assert method.returncode != 0 and "move, get, dicomweb" in method.stderr


def test_sessions_and_their_patients_prefetch_are_listed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    archipel_cmd("db", "upgrade", data=data)
    db = Database(f"sqlite:///{(data / 'index.sqlite').resolve()}")
    try:
        doctor = Principal(subject="dr-cli", role="radiologist", site="SITE-A", kind="user")
        master = person(db, [("SITE-A", "A-CLI-1")], "TESTCLI")
        when = datetime.now(UTC) + timedelta(days=1)
        session = tumorboard.create_session(
            db, doctor, tumorboard.NewSession("RCP digestif", when, "Salle 4")
        )
        tumorboard.register_patient(db, doctor, session, master, reason="RCP", send=False)
    finally:
        db.dispose()

    listed = archipel_cmd("tumor-boards", "list", data=data, env=WIDE).stdout
    assert "RCP digestif" in listed and "SITE-A" in listed and "viewer" in listed
    status = archipel_cmd("tumor-boards", "status", str(session), data=data, env=WIDE).stdout
    assert str(master) in status and "queued" in status
    missing = archipel_cmd("tumor-boards", "status", "4242", data=data, check=False)
    assert missing.returncode == 1 and "no tumor board session 4242" in missing.stderr
