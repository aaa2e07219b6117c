"""L1 forms for live intake from CSV, through ``archipel mammo forms import`` and ``POST /api/mammo/l1-forms/import``:
forms for exams arrived (matched to their study, an L2 task) and to come (on the reconciliation list, then
matched when the images arrive), a positive L1 that goes to no L2, and files with bad lines refused whole, every
line's reason listed and nothing stored; the policy's refusal of a line audited; a re-import refused."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from archipel.cli import app
from archipel.mammo import intake, reconciliation
from archipel.mammo.models import (
    Episode,
    ReaderQualification,
    Reading,
    ReadingTask,
)
from archipel.mammo.models import (
    Programme as ProgrammeRow,
)
from archipel.platform import audit
from archipel.platform.audit import AuditEvent
from archipel.platform.runtime import Runtime
from archipel.radiology.archive import Archive
from archipel.radiology.samples import mammo_study, to_bytes
from tests.access_support import ensure_master
from tests.auth_helpers import Clock, client
from tests.test_mammo_api import CENTRE, EXAM, Programme, stow, woman

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

L1 = "radio-centre"
HEADER = ["issuer", "patient_id", "site", "round", "screen_date", "l1_reader", "study_uid", "woman_contact",
          "gp_contact", "centre_contact", "priority", "batch", "history", "clinical_exam", "immediate_workup",
          "ultrasound", "workup_result", "right_assessment", "left_assessment", "right_result", "left_result",
          "density", "findings", "quality", "further_tests"]  # fmt: skip
FINDING = [{"type": "mass", "laterality": "L", "quadrant": "UOQ", "views": [{"view": "L-CC", "x": 10, "y": 20}],
            "suspicion": 4}]  # fmt: skip


def line(patient: str, **kw: str) -> dict[str, str]:
    row = {
        "issuer": CENTRE, "patient_id": patient, "site": CENTRE, "round": "first", "screen_date": EXAM,
        "l1_reader": L1, "woman_contact": "woman@example.org", "gp_contact": "gp@example.org",
        "centre_contact": "recalls@centre-a.example.org", "priority": "2", "batch": "B-07",
        "history": "no family history", "clinical_exam": "normal", "immediate_workup": "no", "ultrasound": "no",
        "right_assessment": "1", "left_assessment": "2", "density": "2",
    }  # fmt: skip
    return {**row, **kw}


def csv_bytes(rows: list[dict[str, str]], header: list[str] = HEADER) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=header, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue().encode()


def counts(rt: Runtime) -> tuple[int, int, int]:
    with rt.db.sessions() as s:
        return (
            s.execute(select(func.count()).select_from(Episode)).scalar_one(),
            s.execute(select(func.count()).select_from(Reading)).scalar_one(),
            s.execute(select(func.count()).select_from(ReadingTask)).scalar_one(),
        )


def cli(runtime: Runtime, monkeypatch: pytest.MonkeyPatch, *args: str) -> Any:
    monkeypatch.setenv("ARCHIPEL_DATABASE_URL", runtime.settings.effective_database_url)
    return CliRunner().invoke(app, [*args, "--data", str(runtime.settings.data_dir)])


def store_study(rt: Runtime, patient_id: str, key: str) -> str:
    """The four views of a woman's exam stored in the archive (as C-STORE would), seen by the intake."""
    mg = woman(int(patient_id[2:]))
    ensure_master(rt.db, CENTRE, mg.patient_id, f"MAMMO{mg.patient_id}", "19600101")
    images = mammo_study(mg, key=key, study_date=EXAM.replace("-", ""))
    archive = Archive(rt.db, rt.blobs)
    for ds in images:
        archive.store(to_bytes(ds))
    return str(images[0].StudyInstanceUID)


def episode_of(rt: Runtime, patient_id: str) -> tuple[Episode, list[str], list[str]]:
    """The woman's episode, its tasks' roles and its reads' roles."""
    with rt.db.sessions() as s:
        ep = s.execute(select(Episode).where(Episode.patient_id == patient_id)).scalar_one()
        tasks = s.execute(select(ReadingTask.role).where(ReadingTask.episode_id == ep.id)).scalars()
        reads = s.execute(select(Reading.role).where(Reading.episode_id == ep.id)).scalars()
        return ep, list(tasks), list(reads)


def test_the_cli_loads_l1_forms_whole_or_not_at_all_and_matches_them_to_their_studies(
    runtime: Runtime, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    intake.install()
    with runtime.db.write() as s:
        prog = ProgrammeRow(code="fr", name="fr", protocol="fr-depistage")
        s.add(prog)
        s.flush()
        s.add(ReaderQualification(programme_id=prog.id, reader=L1, qualification="l1"))
        s.add(ReaderQualification(programme_id=prog.id, reader="lecteur-un", qualification="l2"))
    arrived = store_study(runtime, "MG0101", "forms-1")  # the images came before the form
    with runtime.db.sessions() as s:
        assert [r["study_uid"] for r in reconciliation.reconciliation(s)["studies_without_episode"]] == [arrived]
    before = counts(runtime)

    good = [
        line("MG0101"),  # arrived: matched by woman and day
        line("MG0102"),  # not yet arrived
        line("MG0103", right_assessment="1", left_assessment="4", left_result="positive",
             findings=json.dumps(FINDING), immediate_workup="yes", ultrasound="yes", workup_result="US: mass"),
    ]  # fmt: skip
    bad = [
        *good,
        line("MG0104", right_assessment="7"),  # line 5
        line("MG0105", study_uid="1.2.826.0.1.999"),  # line 6: unknown study, refused when stored
        line("MG0106", left_assessment="4"),  # line 7: positive with no finding
        line("MG0107", l1_reader="lecteur-un"),  # line 8: not qualified as L1
        line("MG0108", ultrasound="maybe"),  # line 9
        line("MG0109", findings="[{"),  # line 10
        line("MG0101"),  # line 11: the same woman and day as line 2
    ]
    path = tmp_path / "forms.csv"
    path.write_bytes(csv_bytes(bad))
    result = cli(runtime, monkeypatch, "mammo", "forms", "import", str(path), "--programme", "fr")
    assert result.exit_code == 1, result.output
    assert "refused 7 line(s); nothing was loaded" in result.stdout
    expected = [
        "line 5: right_assessment: Input should be less than or equal to 5",
        "line 6: no mammography study 1.2.826.0.1.999 in the archive",
        "line 7: the read: Value error, the left breast is positive (ACR 4) but has no finding",
        "line 8: lecteur-un is not qualified as l1 reader in programme fr",
        "line 9: ultrasound 'maybe' is not yes or no",
        "line 10: findings is not JSON",
        "line 11: episode",
    ]
    listed = [ln.strip() for ln in result.stdout.splitlines() if ln.strip().startswith("line ")]
    assert len(listed) == 7 and all(got.startswith(want) for got, want in zip(listed, expected, strict=True))
    assert "has its L1 form already" in listed[-1]
    assert counts(runtime) == before  # nothing half-loaded: not even the good lines
    with runtime.db.sessions() as s:
        assert [r["study_uid"] for r in reconciliation.reconciliation(s)["studies_without_episode"]] == [arrived]

    path.write_bytes(csv_bytes(good))
    result = cli(runtime, monkeypatch, "mammo", "forms", "import", str(path), "--programme", "fr")
    assert result.exit_code == 0, result.output
    assert "loaded 3 L1 form(s): 1 with their images, 2 awaiting images" in result.stdout
    assert "L1 forms" in result.stderr and "100%" in result.stderr  # the progress bar ran to the end

    ep, tasks, reads = episode_of(runtime, "MG0101")
    assert (ep.status, tasks, reads, ep.batch, ep.priority) == ("reading", ["l2"], ["l1"], "B-07", 2)
    assert ep.centre_contact == "recalls@centre-a.example.org"
    ep2, tasks2, _ = episode_of(runtime, "MG0102")
    assert (ep2.status, tasks2) == ("awaiting-images", [])
    ep3, tasks3, _ = episode_of(runtime, "MG0103")
    assert tasks3 == []  # a positive L1 goes to no L2
    with runtime.db.sessions() as s:
        rec = reconciliation.reconciliation(s)
        assert rec["studies_without_episode"] == []
        assert sorted(r["episode_id"] for r in rec["episodes_without_study"]) == sorted([ep2.id, ep3.id])
        form = json.loads(s.execute(select(Reading.form).where(Reading.episode_id == ep3.id)).scalar_one())
        assert form["immediate_workup"] is True and form["workup_result"] == "US: mass"
        events = s.execute(
            select(AuditEvent.action, AuditEvent.patient).where(AuditEvent.event_type == audit.IMPORT)
        ).all()
    assert sorted(p for a, p in events if a == "create:screening-episode") == [
        f"{CENTRE}/MG0101",
        f"{CENTRE}/MG0102",
        f"{CENTRE}/MG0103",
    ]

    # The second woman's images arrive: matched to the form's episode, an L2 task.
    store_study(runtime, "MG0102", "forms-2")
    ep2, tasks2, _ = episode_of(runtime, "MG0102")
    assert (ep2.status, tasks2) == ("reading", ["l2"])

    # The same file again: every line has its form already, nothing changes.
    before = counts(runtime)
    result = cli(runtime, monkeypatch, "mammo", "forms", "import", str(path), "--programme", "fr")
    assert result.exit_code == 1 and result.stdout.count("has its L1 form already") == 3
    assert counts(runtime) == before

    # A file that is not one of L1 forms, or a programme without them, is refused at once.
    path.write_bytes(csv_bytes([line("MG0110")], header=[c for c in HEADER if c != "density"]))
    result = cli(runtime, monkeypatch, "mammo", "forms", "import", str(path), "--programme", "fr")
    assert result.exit_code == 2 and "lacks the column(s) density" in result.stderr
    result = cli(runtime, monkeypatch, "mammo", "forms", "import", str(path), "--programme", "nope")
    assert result.exit_code == 2 and "no screening programme 'nope'" in result.stderr
    assert counts(runtime) == before


@pytest.fixture
def prog(runtime: Runtime) -> Iterator[Programme]:
    clock = Clock(datetime(2026, 3, 6, 9, 0, tzinfo=UTC))
    runtime.clock = clock
    with client() as http:
        yield Programme(runtime, http, clock, {}, {})


def upload(p: Programme, who: str, data: bytes, programme: str = "fr") -> Any:
    return p.http.post(
        f"/api/mammo/l1-forms/import?programme={programme}",
        files={"file": ("forms.csv", data, "text/csv")},
        headers=p.h(who),
    )


def test_an_upload_loads_the_uploaders_forms_and_refuses_a_file_with_a_bad_line(prog: Programme) -> None:
    p = prog
    p.setup("fr", "fr-depistage")
    arrived = stow(p, woman(201), "upload-1")
    before = counts(p.rt)

    good = [line("MG0201", l1_reader=""), line("MG0202", l1_reader="")]
    bad = [
        *good,
        line("MG0203", issuer="CENTRE-B", site="CENTRE-B", l1_reader=""),  # line 4: not the uploader's site
        line("MG0204", l1_reader="lecteur-un"),  # line 5: someone else's form
        line("MG0205", density="e", l1_reader=""),  # line 6
    ]
    r = upload(p, "centre", csv_bytes(bad))
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail["message"] == "refused 3 line(s); nothing was loaded"
    assert [x["line"] for x in detail["refused"]] == [4, 5, 6]
    assert detail["refused"][0]["reason"].startswith("refused by the access policy: ")
    assert "an upload enters the uploader's own forms" in detail["refused"][1]["reason"]
    assert detail["refused"][2]["reason"].startswith("density: ")
    assert counts(p.rt) == before
    denied = p.denied("create:screening-episode")
    assert [e.patient for e in denied] == ["CENTRE-B/MG0203"]

    assert upload(p, "centre", b"\xff\xfe\x00binary").status_code == 422
    r = upload(p, "centre", csv_bytes(good), programme="nope")
    assert r.status_code == 422 and "no screening programme" in r.json()["detail"]
    assert counts(p.rt) == before

    r = upload(p, "centre", csv_bytes(good))
    assert r.status_code == 201, r.text
    loaded = r.json()
    assert loaded["loaded"] == 2 and loaded["awaiting_images"] == 1
    assert [(f["line"], f["status"]) for f in loaded["forms"]] == [(2, "reading"), (3, "awaiting-images")]
    first = p.get("centre", f"/api/mammo/episodes/{loaded['forms'][0]['episode_id']}").json()
    assert first["studies"][0]["study_uid"] == arrived and [t["role"] for t in first["tasks"]] == ["l2"]
    assert [r["reader"] for r in first["readings"]] == [L1]
    rec = p.get("centre", "/api/mammo/reconciliation").json()
    assert [e["episode_id"] for e in rec["episodes_without_study"]] == [loaded["forms"][1]["episode_id"]]
