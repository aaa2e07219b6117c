"""`archipel identity ...` commands, run as a user would (subprocess)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from tests.support import archipel_cmd

HEADER = "local_id,birth_name,used_name,given_names,birth_date,sex,birth_place,postcode,city,phone,ins,ins_status\n"
SITE_A = HEADER + (
    "A1,Kervadouec,,Aurélien,1984-07-19,M,29232,29200,Brestoual,0612345678,,\n"
    "A2,Lagrenaud,,Yvette,19500102,F,,,,,,\n"
    "A3,Plouzanec,,Gwenola,1951-02-30,F,,,,,,\n"  # impossible date
    "A4,Tromelin,,Ewen,1962-05-06,Z,,,,,,\n"  # bad sex
    "A5,too,few,fields\n"
    ",Nolocal,,Anne,1970-01-01,F,,,,,,\n"  # no local_id
    "A7,Kerbrat,,Soazig,1977-03-04,F,,,,,,\n"
)
SITE_B = (
    "local_id;birth_name;given_names;birth_date;sex\n"
    "B1;KERVADOUEC;aurelien;19840719;M\n"
    "B2;Kerbrat;Loeiza;19770304;F\n"
)


def test_import_csv_reports_bad_lines_and_links_the_rest(tmp_path: Path) -> None:
    data = tmp_path / "data"
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text(SITE_A, encoding="utf-8")
    b.write_text(SITE_B, encoding="utf-8")
    refused = archipel_cmd("identity", "import-csv", str(a), "--source", "SITE-A", data=data, check=False)
    assert refused.returncode == 2 and "unknown issuer 'SITE-A'" in refused.stderr
    archipel_cmd("identity", "issuers", "add", "SITE-A", data=data)
    archipel_cmd("identity", "issuers", "add", "SITE-B", data=data)

    first = archipel_cmd("identity", "import-csv", str(a), "--source", "SITE-A", data=data, check=False)
    assert first.returncode == 1, first.stderr
    assert "new 3" in first.stdout and "refused 4" in first.stdout
    assert "line 4: birth date '1951-02-30' does not exist" in first.stdout
    assert "line 5: sex 'Z' is not M, F or unknown" in first.stdout
    assert "line 6: 4 fields where the header has 12" in first.stdout
    assert "line 7: local_id is required" in first.stdout

    second = archipel_cmd("identity", "import-csv", str(b), "--source", "SITE-B", data=data)
    assert "linked 1, review 1" in second.stdout

    links = archipel_cmd("identity", "links", "--format", "csv", data=data)
    rows = list(csv.DictReader(io.StringIO(links.stdout)))
    assert [r["local_id"] for r in rows] == ["A1", "A2", "A7", "B1", "B2"]
    by_id = {r["local_id"]: r for r in rows}
    assert by_id["B1"]["master_id"] == by_id["A1"]["master_id"] and by_id["B1"]["status"] == "linked"
    assert float(by_id["B1"]["score"]) > 0
    assert by_id["B2"]["status"] == "review" and by_id["B2"]["master_id"] != by_id["A7"]["master_id"]

    queue = archipel_cmd("identity", "review", data=data)
    assert "B2" in queue.stdout and "twins" in queue.stdout

    itself = archipel_cmd(
        "identity",
        "merge",
        by_id["A1"]["master_id"],
        by_id["A1"]["master_id"],
        "--reason",
        "test",
        data=data,
        check=False,
    )
    assert itself.returncode == 2 and "into itself" in itself.stderr
    after = archipel_cmd("identity", "links", "--format", "csv", data=data)
    assert after.stdout == links.stdout

    merged = archipel_cmd(
        "identity",
        "merge",
        by_id["B2"]["master_id"],
        by_id["A7"]["master_id"],
        "--reason",
        "same woman: first names swapped at registration",
        data=data,
    )
    merge_id = merged.stdout.split()[1].rstrip(":")
    archipel_cmd("identity", "unmerge", merge_id, "--reason", "two sisters after all", data=data)
    assert archipel_cmd("identity", "links", "--format", "csv", data=data).stdout == links.stdout


def test_import_of_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    res = archipel_cmd(
        "identity",
        "import-csv",
        str(tmp_path / "nope.csv"),
        "--source",
        "S",
        data=tmp_path / "d",
        check=False,
    )
    assert res.returncode == 2 and "no file" in res.stderr
