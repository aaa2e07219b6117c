"""``archipel mammo import`` line by line: the birth date is kept and checks the woman (against the MPI, the
other lines and earlier imports), a French exam ACR 1-2 at L1 is not decided without its L2 read, and L2
assessments need their reader. Each refusal names its line and reason, and stores nothing of it."""

from __future__ import annotations

import csv
import json
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import select

from archipel.mammo.models import Episode, Reading
from archipel.platform.runtime import Runtime
from tests.access_support import ensure_master
from tests.test_mammo_metrics import COLUMNS, run, sqlite_only

CENTRE = "CENTRE-A"


def line(
    episode: str, patient: str, born: str, l1: tuple[int, int], l2: tuple[str, str, str], **kw: str
) -> dict[str, str]:
    row = {
        "episode_id": episode, "issuer": CENTRE, "patient_id": patient, "birth_date": born,
        "screen_date": "2025-03-01", "round": "subsequent", "site": CENTRE, "l1_reader": "centre-0",
        "l1_right": str(l1[0]), "l1_left": str(l1[1]), "density": "2", "l2_reader": l2[0], "l2_right": l2[1],
        "l2_left": l2[2], "decision": "normal", "outcome": "none",
    }  # fmt: skip
    return {**row, **kw}


def write(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    return path


def episodes(runtime: Runtime) -> dict[str, Episode]:
    with runtime.db.sessions() as s:
        return {str(e.external_id): e for e in s.execute(select(Episode)).scalars()}


@sqlite_only
def test_history_lines_are_checked_against_the_woman_and_the_french_protocol(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    known = ensure_master(runtime.db, CENTRE, "H1", "HISTORYONE", "19600501")
    ensure_master(runtime.db, CENTRE, "H3", "HISTORYTHREE", "19550101")
    read_by_l2 = ("second-0", "1", "1")
    rows = [
        line("HX1", "H1", "1960-05-01", (1, 2), read_by_l2),  # line 2
        line("HX2", "H1", "1960-05-01", (2, 2), read_by_l2, screen_date="2027-03-01"),  # line 3
        line("HX3", "H2", "1970-01-01", (1, 1), read_by_l2),  # line 4: not in the MPI
        line("HX4", "H2", "1971-02-02", (1, 1), read_by_l2),  # line 5: another birth date, same number
        line("HX5", "H3", "1955-02-02", (1, 1), read_by_l2),  # line 6: not the MPI's birth date
        line("HX6", "H4", "1965-07-07", (1, 2), ("", "", "")),  # line 7: ACR 1-2 at L1, no L2
        line(
            "HX7", "H5", "1965-07-07", (4, 1), ("", "1", ""), decision="recall"
        ),  # line 8: L2 with no reader
        line("HX8", "H6", "", (4, 1), ("", "", ""), decision="recall"),  # line 9: a positive L1 needs no L2
    ]
    code, output = run(runtime, monkeypatch, "mammo", "import", str(write(tmp_path / "h.csv", rows)),
                       "--protocol", "fr-depistage")  # fmt: skip
    assert code == 1, output
    output = " ".join(output.split())  # the console wraps long lines
    assert "imported 4, refused 4" in output
    assert (
        "line 5: birth_date 1971-02-02 differs from 1970-01-01, given for CENTRE-A/H2 in episode HX3"
        in output
    )
    assert "line 6: birth_date 1955-02-02 is not the MPI's 1955-01-01 for CENTRE-A/H3" in output
    assert (
        "line 7: L1 is ACR 1-2 on both breasts, so the exam is decided after its L2 read; l2_reader is empty"
        in output
    )
    assert "line 8: l2_right given but l2_reader is empty (an L2 read needs its reader)" in output

    stored = episodes(runtime)
    assert sorted(stored) == ["HX1", "HX2", "HX3", "HX8"]
    assert stored["HX1"].birth_date == date(1960, 5, 1) and stored["HX1"].master_id == known
    assert stored["HX3"].birth_date == date(1970, 1, 1) and stored["HX3"].master_id is None
    assert stored["HX8"].birth_date is None
    with runtime.db.sessions() as s:
        roles = s.execute(select(Reading.role).where(Reading.episode_id == stored["HX8"].id)).scalars()
        assert list(roles) == ["l1"]

    # A later file is checked against the birth dates kept by the first import.
    later = [
        line("HX9", "H2", "1972-03-03", (1, 1), read_by_l2, screen_date="2027-03-01"),
        line("HX10", "H2", "1970-01-01", (1, 1), read_by_l2, screen_date="2027-03-01"),
    ]
    code, output = run(runtime, monkeypatch, "mammo", "import", str(write(tmp_path / "later.csv", later)),
                       "--protocol", "fr-depistage")  # fmt: skip
    assert code == 1, output
    output = " ".join(output.split())
    assert "imported 1, refused 1" in output
    assert (
        "line 2: birth_date 1972-03-03 differs from 1970-01-01, given for CENTRE-A/H2 in episode HX3"
        in output
    )
    assert sorted(episodes(runtime)) == ["HX1", "HX10", "HX2", "HX3", "HX8"]


@sqlite_only
def test_blinded_history_refuses_second_assessments_without_their_reader(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [
        line("BX1", "B1", "1960-05-01", (1, 1), ("second-0", "1", "2")),
        line("BX2", "B2", "1960-05-01", (1, 1), ("", "", "2")),
        line("BX3", "B3", "1960-05-01", (1, 1), ("", "", "")),
    ]
    code, output = run(runtime, monkeypatch, "mammo", "import", str(write(tmp_path / "b.csv", rows)),
                       "--protocol", "eu-blinded")  # fmt: skip
    assert code == 1, output
    output = " ".join(output.split())
    assert "imported 1, refused 2" in output
    assert "line 3: l2_left given but l2_reader is empty" in output
    assert "line 4: the blinded protocol has two reads; l2_reader is empty" in output
    assert sorted(episodes(runtime)) == ["BX1"]


@sqlite_only
def test_diagnosed_on_is_optional_and_kept_on_the_outcome(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from archipel.mammo.models import ScreeningOutcome

    old = [c for c in COLUMNS if c != "diagnosed_on"]
    # A file of before the column: its interval cancer imports undated.
    path = tmp_path / "old.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=old)
        w.writeheader()
        w.writerow(line("DX-OLD", "DX1", "", (1, 1), ("second-0", "1", "1"), outcome="interval_cancer"))
    code, output = run(runtime, monkeypatch, "mammo", "import", str(path), "--protocol", "fr-depistage")
    assert code == 0 and "imported 1, refused 0" in output, output
    dated = line("DX-NEW", "DX2", "", (1, 1), ("second-0", "1", "1"), outcome="interval_cancer",
                 diagnosed_on="2026-02-01")  # fmt: skip
    bad = line("DX-BAD", "DX3", "", (1, 1), ("second-0", "1", "1"), outcome="interval_cancer",
               diagnosed_on="2026-02-30")  # fmt: skip
    code, output = run(runtime, monkeypatch, "mammo", "import", str(write(tmp_path / "new.csv", [dated, bad])),
                       "--protocol", "fr-depistage")  # fmt: skip
    assert "imported 1, refused 1" in output and "line 3: diagnosed_on '2026-02-30' is not a date" in output
    eps = episodes(runtime)
    assert "DX-BAD" not in eps
    with runtime.db.sessions() as s:
        got = {
            o.episode_id: o.diagnosed_on
            for o in s.execute(select(ScreeningOutcome)).scalars()
            if o.episode_id in (eps["DX-OLD"].id, eps["DX-NEW"].id)
        }
    assert got == {eps["DX-OLD"].id: None, eps["DX-NEW"].id: date(2026, 2, 1)}
    code, output = run(runtime, monkeypatch, "mammo", "metrics", "--programme", "fr-depistage")
    figures = json.loads(output)
    assert figures["interval_cancers"] == 2 and figures["interval_cancers_undated"] == 1
    assert figures["interval_cancers_by_period"] == {"first_12_months": 1, "12_months_to_end": 0}
