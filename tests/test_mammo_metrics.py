"""Programme metrics on a generated history of 2,400 episodes with known outcomes, loaded by ``archipel mammo import``
and printed by ``archipel mammo metrics``; every figure is checked against a value computed here from the
generated rows, independently of the code under test."""

from __future__ import annotations

import csv
import io
import json
import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from archipel.cli.common import app
from archipel.mammo.metrics import cohen_kappa
from archipel.mammo.models import Episode, Programme, Reading, ScreeningDecision, ScreeningOutcome
from archipel.platform.runtime import Runtime

sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

COLUMNS = [
    "episode_id", "issuer", "patient_id", "birth_date", "screen_date", "round", "site", "l1_reader", "l1_right",
    "l1_left", "density", "l2_reader", "l2_right", "l2_left", "decision", "outcome", "diagnosed_on",
]  # fmt: skip
CENTRE_READERS = [f"centre-{i}" for i in range(6)]
SECOND_READERS = [f"second-{i}" for i in range(4)]
START = date(2025, 1, 1)


@dataclass(frozen=True)
class Row:
    """One generated episode, as written to the file."""

    episode_id: str
    screen_date: date
    round: str
    l1: tuple[str, int, int]
    l2: tuple[str, int, int] | None
    decision: str
    outcome: str
    diagnosed_on: date | None = None

    def csv(self, n: int) -> dict[str, str]:
        l2 = self.l2 or ("", "", "")
        return {
            "episode_id": self.episode_id, "issuer": "CENTRE-A", "patient_id": f"P{n:05d}", "birth_date": "1960-05-01",
            "screen_date": self.screen_date.isoformat(), "round": self.round, "site": "CENTRE-A",
            "l1_reader": self.l1[0], "l1_right": str(self.l1[1]), "l1_left": str(self.l1[2]),
            "density": "abcd"[n % 4] if n % 2 else "1234"[n % 4], "l2_reader": l2[0], "l2_right": str(l2[1]),
            "l2_left": str(l2[2]), "decision": self.decision, "outcome": self.outcome,
            "diagnosed_on": self.diagnosed_on.isoformat() if self.diagnosed_on else "",
        }  # fmt: skip


def _acr(rng: random.Random, positive: bool) -> tuple[int, int]:
    if not positive:
        return rng.choice([1, 2]), rng.choice([1, 2])
    side = rng.choice([0, 1])
    score = rng.choice([0, 3, 4, 5])
    other = rng.choice([1, 2])
    return (score, other) if side == 0 else (other, score)


def generate(n: int, protocol: str, seed: int) -> list[Row]:
    """``n`` episodes: positive L1 goes straight to recall (French programme) or to a second read."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        day = START + timedelta(days=rng.randrange(365))
        l1_positive = rng.random() < 0.06
        l1 = (rng.choice(CENTRE_READERS), *_acr(rng, l1_positive))
        l2: tuple[str, int, int] | None = None
        if protocol == "eu-blinded" or not l1_positive:
            l2_positive = rng.random() < (0.5 if l1_positive else 0.04)
            l2 = (rng.choice(SECOND_READERS), *_acr(rng, l2_positive))
        positive = l1_positive or (l2 is not None and max(l2[1:]) >= 3) or (l2 is not None and 0 in l2[1:])
        decision = "recall" if positive else ("technical_recall" if rng.random() < 0.01 else "normal")
        if decision == "recall":
            outcome = rng.choices(["cancer_invasive", "cancer_in_situ", "benign", "none"], [12, 4, 60, 24])[0]
        elif decision == "normal":
            outcome = "interval_cancer" if rng.random() < 0.01 else "none"
        else:
            outcome = "none"
        diagnosed = None
        if outcome == "interval_cancer":
            # Undated, in the first 12 months, from 12 to 24 months, or after the 24-month interval (not one).
            span = rng.choice([None, (1, 330), (400, 700), (760, 900)])
            diagnosed = day + timedelta(days=rng.randint(*span)) if span else None
        rnd = "first" if rng.random() < 0.3 else "subsequent"
        rows.append(Row(f"E{i:05d}", day, rnd, l1, l2, decision, outcome, diagnosed))
    return rows


def write(path: Path, rows: list[Row], bad: list[dict[str, str]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for n, row in enumerate(rows):
            w.writerow(row.csv(n))
        for b in bad:
            w.writerow(b)


def positive(a: int, b: int) -> bool:
    return a not in (1, 2) or b not in (1, 2)


def expected(rows: list[Row], protocol: str = "fr-depistage") -> dict[str, object]:
    """The figures by their definitions, straight from the generated rows (a 24-month interval, the generated
    dates being well away from its ends: 730 days is under 24 months)."""
    screened = len(rows)
    recalls = [r for r in rows if r.decision == "recall"]
    detected = [r for r in recalls if r.outcome in ("cancer_invasive", "cancer_in_situ")]
    first_only = [r for r in detected if r.l2 is not None and positive(*r.l1[1:]) and not positive(*r.l2[1:])]
    second_only = [
        r for r in detected if r.l2 is not None and not positive(*r.l1[1:]) and positive(*r.l2[1:])
    ]
    # France: found by L2 only; blinded: found by one reader only, whichever.
    l2_only = second_only + (first_only if protocol == "eu-blinded" else [])
    interval = [r for r in rows if r.outcome == "interval_cancer"]
    undated = [r for r in interval if r.diagnosed_on is None]
    early = [r for r in interval if r.diagnosed_on and (r.diagnosed_on - r.screen_date).days <= 330]
    late = [r for r in interval if r.diagnosed_on and 400 <= (r.diagnosed_on - r.screen_date).days <= 700]
    after = [r for r in interval if r.diagnosed_on and (r.diagnosed_on - r.screen_date).days >= 760]
    assert len(undated) + len(early) + len(late) + len(after) == len(interval)
    by_round = {}
    for rnd in ("first", "subsequent"):
        part = [r for r in rows if r.round == rnd]
        by_round[rnd] = sum(1 for r in part if r.decision == "recall") / len(part)
    return {
        "screened": screened,
        "recall_rate": len(recalls) / screened,
        "recall_rate_by_round": by_round,
        "cancer_detection_rate": len(detected) * 1000 / screened,
        "ppv_recall": len(detected) / len(recalls),
        "l2_only_cancer_share": len(l2_only) / len(detected),
        "cti_rate": sum(1 for r in rows if r.decision == "technical_recall") / screened,
        "interval_cancers": len(undated) + len(early) + len(late),
        "interval_cancer_rate": (len(undated) + len(early) + len(late)) * 1000 / screened,
        "interval_cancers_by_period": {"first_12_months": len(early), "12_months_to_end": len(late)},
        "interval_cancers_undated": len(undated),
        "interval_cancers_after_interval": len(after),
        "single_reader_detected_cancers": {"first_only": len(first_only), "second_only": len(second_only)},
    }


def expected_readers(rows: list[Row], days: int, protocol: str) -> dict[str, dict[str, object]]:
    """Per reader: reads, the annualised volume the minimum counts (L2 reads in France, every blind read in the
    blinded protocol), recall rate and cancers found."""
    reads: dict[str, list[tuple[Row, bool]]] = defaultdict(list)
    counted: dict[str, int] = defaultdict(int)
    for r in rows:
        for role, read in (("first", r.l1), ("second", r.l2)):
            if read is not None:
                reads[read[0]].append((r, positive(*read[1:])))
                counted[read[0]] += protocol == "eu-blinded" or role == "second"
    out = {}
    for reader, done in reads.items():
        out[reader] = {
            "reads": len(done),
            "annualised_reads": counted[reader] * 365 / days,
            "recall_rate": sum(1 for _, p in done if p) / len(done),
            "cancers_found": sum(
                1 for r, p in done if p and r.decision == "recall" and r.outcome.startswith("cancer_")
            ),
        }
    return out


def kappa_by_hand(rows: list[Row], a: str, b: str) -> tuple[int, float]:
    """Cohen's kappa of readers ``a`` and ``b`` from the 2x2 table of the episodes both read."""
    n11 = n10 = n01 = n00 = 0
    for r in rows:
        if r.l2 is None or {r.l1[0], r.l2[0]} != {a, b}:
            continue
        ans = {r.l1[0]: positive(*r.l1[1:]), r.l2[0]: positive(*r.l2[1:])}
        n11 += ans[a] and ans[b]
        n10 += ans[a] and not ans[b]
        n01 += not ans[a] and ans[b]
        n00 += not ans[a] and not ans[b]
    n = n11 + n10 + n01 + n00
    po = (n11 + n00) / n
    pe = ((n11 + n10) * (n11 + n01) + (n01 + n00) * (n10 + n00)) / (n * n)
    return n, (po - pe) / (1 - pe)


BAD = [
    {**dict.fromkeys(COLUMNS, ""), "episode_id": "BAD1", "issuer": "CENTRE-A", "patient_id": "X1",
     "screen_date": "2025-02-30", "round": "first", "site": "CENTRE-A", "l1_reader": "centre-0", "l1_right": "1",
     "l1_left": "1", "density": "a", "decision": "normal", "outcome": "none"},
    {**dict.fromkeys(COLUMNS, ""), "episode_id": "BAD2", "issuer": "CENTRE-A", "patient_id": "X2",
     "screen_date": "2025-03-01", "round": "first", "site": "CENTRE-A", "l1_reader": "centre-0", "l1_right": "7",
     "l1_left": "1", "density": "a", "decision": "normal", "outcome": "none"},
    {**dict.fromkeys(COLUMNS, ""), "episode_id": "BAD3", "issuer": "CENTRE-A", "patient_id": "X3",
     "screen_date": "2025-03-01", "round": "first", "site": "CENTRE-A", "l1_reader": "centre-0", "l1_right": "1",
     "l1_left": "1", "density": "a", "l2_reader": "centre-0", "l2_right": "1", "l2_left": "1",
     "decision": "normal", "outcome": "none"},
    {**dict.fromkeys(COLUMNS, ""), "episode_id": "E00001", "issuer": "CENTRE-A", "patient_id": "X4",
     "screen_date": "2025-03-01", "round": "first", "site": "CENTRE-A", "l1_reader": "centre-0", "l1_right": "1",
     "l1_left": "1", "density": "a", "l2_reader": "second-0", "l2_right": "1", "l2_left": "1",
     "decision": "normal", "outcome": "none"},
    {**dict.fromkeys(COLUMNS, ""), "episode_id": "BAD5", "issuer": "CENTRE-A", "patient_id": "X5",
     "screen_date": "2025-03-01", "round": "first", "site": "CENTRE-A", "l1_reader": "centre-0", "l1_right": "1",
     "l1_left": "1", "density": "a", "l2_reader": "second-0", "l2_right": "1", "l2_left": "1",
     "decision": "normal", "outcome": "interval_cancer", "diagnosed_on": "2025-02-28"},
]  # fmt: skip


def run(runtime: Runtime, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    monkeypatch.setenv("ARCHIPEL_DATABASE_URL", runtime.settings.effective_database_url)
    result = CliRunner().invoke(app, [*args, "--data", str(runtime.settings.data_dir)])
    return result.exit_code, result.stdout


def check_figures(got: dict[str, Any], rows: list[Row], protocol: str) -> None:
    """Every programme and reader figure of ``got`` against the hand-computed ones."""
    for key, value in expected(rows, protocol).items():
        assert got[key] == pytest.approx(value), key
    days = (max(r.screen_date for r in rows) - min(r.screen_date for r in rows)).days + 1
    readers = {r["reader"]: r for r in got["readers"]}
    assert set(readers) == set(CENTRE_READERS + SECOND_READERS)
    for reader, figures in expected_readers(rows, days, protocol).items():
        for key, value in figures.items():
            assert readers[reader][key] == pytest.approx(value), (reader, key)
    pairs = {tuple(p["readers"]): p for p in got["reader_pairs"]}
    assert len(pairs) == len(CENTRE_READERS) * len(SECOND_READERS)
    for a, b in combinations(sorted(CENTRE_READERS + SECOND_READERS), 2):
        if (a, b) in pairs:
            n, kappa = kappa_by_hand(rows, a, b)
            assert pairs[(a, b)]["episodes"] == n
            assert pairs[(a, b)]["kappa"] == pytest.approx(kappa)
            assert readers[a]["kappa"][b] == pytest.approx(kappa)


def check_csv(output: str, rows: list[Row], got: dict[str, Any]) -> None:
    """The CSV export: each figure with its numerator, denominator and definition, then the readers' blocks."""
    table = list(csv.DictReader(io.StringIO(output)))
    assert list(table[0]) == ["reader", "metric", "numerator", "denominator", "value", "unit", "definition"]
    programme = {r["metric"]: r for r in table if r["reader"] == ""}
    recalls = sum(1 for r in rows if r.decision == "recall")
    detected = sum(1 for r in rows if r.decision == "recall" and r.outcome.startswith("cancer_"))
    assert programme["screened"]["value"] == str(len(rows))
    rate = programme["recall_rate"]
    assert (rate["numerator"], rate["denominator"]) == (str(recalls), str(len(rows)))
    assert float(rate["value"]) == pytest.approx(recalls / len(rows))
    assert "recalled for further assessment" in rate["definition"]
    cdr = programme["cancer_detection_rate"]
    assert (cdr["numerator"], cdr["denominator"], cdr["unit"]) == (
        str(detected),
        str(len(rows)),
        "per 1,000 screened",
    )
    assert float(cdr["value"]) == pytest.approx(detected * 1000 / len(rows))
    ppv = programme["ppv_recall"]
    assert (ppv["numerator"], ppv["denominator"]) == (str(detected), str(recalls))
    for metric in ("recall_rate_first_round", "recall_rate_subsequent_round", "l2_only_cancer_share", "cti_rate",
                   "interval_cancer_rate", "interval_cancers_first_12_months", "exam_to_l2_days.median"):  # fmt: skip
        assert programme[metric]["definition"], metric
    key = {"l2_only_cancer_share": "l2_only_cancer_share", "interval_cancer_rate": "interval_cancer_rate",
           "cti_rate": "cti_rate"}  # fmt: skip
    for metric, name in key.items():
        assert float(programme[metric]["value"]) == pytest.approx(got[name]), metric
    reader = got["readers"][0]
    block = {r["metric"]: r for r in table if r["reader"] == reader["reader"]}
    assert block["reads"]["value"] == str(reader["reads"])
    assert float(block["recall_rate"]["value"]) == pytest.approx(reader["recall_rate"])
    assert block["recall_rate"]["denominator"] == str(reader["reads"])
    assert block["cancers_found"]["value"] == str(reader["cancers_found"])
    assert {m for m in block if m.startswith("kappa.")} == {f"kappa.{o}" for o in reader["kappa"]}


@sqlite_only
def test_programme_metrics_match_the_hand_computed_figures(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = generate(2400, "fr-depistage", seed=6)
    history = tmp_path / "history.csv"
    write(history, rows, BAD)
    code, output = run(runtime, monkeypatch, "mammo", "import", str(history), "--protocol", "fr-depistage")
    assert code == 1  # refused lines are reported with a failing status
    assert "imported 2400, refused 5" in output
    first_bad = len(rows) + 2
    assert f"line {first_bad}: screen_date '2025-02-30' is not a date" in output
    assert f"line {first_bad + 1}: l1_right '7' is not an ACR assessment 0-5" in output
    assert f"line {first_bad + 2}: the same reader cannot make both reads" in output
    assert f"line {first_bad + 3}: episode E00001 is imported already" in output
    assert f"line {first_bad + 4}: diagnosed_on is before screen_date" in output
    # Importing the file again adds nothing.
    code, output = run(runtime, monkeypatch, "mammo", "import", str(history), "--protocol", "fr-depistage")
    assert "imported 0, refused 2405" in output

    code, output = run(runtime, monkeypatch, "mammo", "metrics", "--format", "json")
    assert code == 0, output
    got = json.loads(output)
    check_figures(got, rows, "fr-depistage")

    # A period: only the episodes screened in it.
    code, output = run(runtime, monkeypatch, "mammo", "metrics", "--from", "2025-04-01", "--to", "2025-06-30")
    window = [r for r in rows if date(2025, 4, 1) <= r.screen_date <= date(2025, 6, 30)]
    assert json.loads(output)["screened"] == len(window)
    assert json.loads(output)["recall_rate"] == pytest.approx(expected(window)["recall_rate"])
    code, output = run(runtime, monkeypatch, "mammo", "metrics", "--format", "csv")
    check_csv(output, rows, got)
    code, output = run(runtime, monkeypatch, "mammo", "metrics", "--from", "2025-06-30", "--to", "2025-04-01")
    assert code == 2


@sqlite_only
def test_blinded_statistics_use_the_blind_reads_only(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = generate(2000, "eu-blinded", seed=7)
    history = tmp_path / "blinded.csv"
    write(history, rows, [])
    code, output = run(runtime, monkeypatch, "mammo", "import", str(history), "--protocol", "eu-blinded")
    assert code == 0 and "imported 2000, refused 0" in output
    # Arbitration reads on some episodes do not count in the readers' statistics.
    with runtime.db.write() as s:
        for ep in s.query(Episode).limit(20):
            s.add(Reading(episode_id=ep.id, role="arbitration", reader="arbitrator", blind=False,
                          right_assessment=4, left_assessment=1, right_result="", left_result="", density="b",
                          findings="[]", quality="{}", form="{}", submitted_at=runtime.clock()))  # fmt: skip
    code, output = run(runtime, monkeypatch, "mammo", "metrics", "--programme", "eu-blinded")
    got = json.loads(output)
    assert "arbitrator" not in {r["reader"] for r in got["readers"]}
    check_figures(got, rows, "eu-blinded")
    # Both directions count: cancers the first reader alone found, and the second alone.
    single = got["single_reader_detected_cancers"]
    assert single["first_only"] > 0 and single["second_only"] > 0
    assert got["l2_only_cancer_share_meaning"].startswith("single-reader-only")
    code, output = run(
        runtime, monkeypatch, "mammo", "metrics", "--programme", "eu-blinded", "--format", "csv"
    )
    check_csv(output, rows, got)


def test_cohen_kappa_of_known_tables() -> None:
    # 20 agree positive, 15 agree negative, 5 + 10 disagree (a textbook 2x2 table): kappa = 0.4.
    table = [(True, True)] * 20 + [(True, False)] * 5 + [(False, True)] * 10 + [(False, False)] * 15
    assert cohen_kappa(table) == pytest.approx(0.4)
    assert cohen_kappa([(True, True)] * 3) is None
    assert cohen_kappa([]) is None


@sqlite_only
def test_archipel_import_matches_an_mg_study_to_its_episode(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from archipel.mammo import episodes
    from archipel.mammo.models import Programme
    from archipel.mammo.reading import register
    from archipel.mammo.schemas import EpisodeBody
    from archipel.radiology.samples import SyntheticPatient, mammo_study

    mg = SyntheticPatient("MGCLI01", "TESTMAMMO^Cli", "19610101", "F", issuer="CENTRE-A")
    with runtime.db.write() as s:
        prog = Programme(code="eu", protocol="eu-blinded")
        s.add(prog)
        s.flush()
        body = EpisodeBody(programme="eu", issuer="CENTRE-A", patient_id=mg.patient_id, site="CENTRE-A",
                           round="first", screen_date=date(2026, 3, 5))  # fmt: skip
        eid = register(s, prog, body, runtime.clock()).id
    folder = tmp_path / "mg"
    folder.mkdir()
    for n, ds in enumerate(mammo_study(mg, key="cli-1")):
        ds.save_as(folder / f"{n}.dcm", enforce_file_format=True)
    code, output = run(runtime, monkeypatch, "import", str(folder))
    assert code == 0, output
    with runtime.db.sessions() as s:
        assert [st.study_uid for st in episodes.studies_of(s, eid)] != []
        assert sorted(t.role for t in episodes.tasks_of(s, eid)) == ["first", "second"]


def _episode(
    s: Session,
    prog: Programme,
    woman: str,
    day: date,
    reads: list[tuple[str, str, int | str, int | str]],
    decision: str,
    outcome: str = "none",
    retake_of: Episode | None = None,
    diagnosed_on: date | None = None,
) -> Episode:
    """An episode stored as the workflow leaves it: reads ``(role, reader, right, left)`` (ACR, or ``cti`` for a
    breast technically insufficient), decision, outcome."""
    at = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    ep = Episode(programme_id=prog.id, issuer="CENTRE-A", patient_id=woman, site="CENTRE-A", round="subsequent",
                 screen_date=day, status="decided", retake_of=retake_of.id if retake_of else None,
                 created_at=at)  # fmt: skip
    s.add(ep)
    s.flush()
    for role, reader, right, left in reads:
        results = ["cti" if x == "cti" else "" for x in (right, left)]
        acr = [1 if x == "cti" else int(x) for x in (right, left)]
        s.add(Reading(episode_id=ep.id, role=role, reader=reader, blind=role in ("first", "second"),
                      right_assessment=acr[0], left_assessment=acr[1], right_result=results[0],
                      left_result=results[1], density="b", findings="[]", quality="{}", form="{}",
                      submitted_at=at))  # fmt: skip
    s.add(
        ScreeningDecision(episode_id=ep.id, decision=decision, reasons="[]", decided_by="test", decided_at=at)
    )
    if outcome != "none":
        s.add(ScreeningOutcome(episode_id=ep.id, outcome=outcome, diagnosed_on=diagnosed_on, recorded_by="test",
                               recorded_at=at))  # fmt: skip
    s.flush()
    return ep


def _carry_l1(s: Session, original: Episode, retake: Episode) -> None:
    """The L1 read carried over to the retake, as ``decision.retake_for`` copies it."""
    l1 = s.query(Reading).filter_by(episode_id=original.id, role="l1").one()
    copy = {c.key: getattr(l1, c.key) for c in Reading.__table__.columns if c.key not in ("id", "episode_id")}
    s.add(Reading(**{**copy, "episode_id": retake.id}))
    s.flush()


@sqlite_only
def test_a_french_retake_is_part_of_the_womans_screening_not_another_one(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    with runtime.db.write() as s:
        prog = Programme(code="fr-retakes", protocol="fr-depistage")
        s.add(prog)
        s.flush()
        # A: L2 finds a breast technically insufficient (a technical recall); the retake, a week later, is normal.
        a = _episode(s, prog, "A", date(2025, 3, 3), [("l1", "centre-0", 1, 1), ("l2", "second-0", "cti", 1)],
                     "technical_recall")  # fmt: skip
        a2 = _episode(s, prog, "A", date(2025, 3, 10), [("l2", "second-1", 1, 2)], "normal", retake_of=a)
        _carry_l1(s, a, a2)
        # B: the same, and the retake is a recall that finds a cancer.
        b = _episode(s, prog, "B", date(2025, 3, 4), [("l1", "centre-0", 2, 1), ("l2", "second-0", "cti", "cti")],
                     "technical_recall")  # fmt: skip
        b2 = _episode(s, prog, "B", date(2025, 3, 12), [("l2", "second-1", 4, 1)], "recall",
                      "cancer_invasive", retake_of=b)  # fmt: skip
        _carry_l1(s, b, b2)
        # C normal, D recalled by L2 and benign.
        _episode(
            s, prog, "C", date(2025, 3, 5), [("l1", "centre-1", 1, 1), ("l2", "second-0", 1, 1)], "normal"
        )
        _episode(s, prog, "D", date(2025, 3, 6), [("l1", "centre-1", 1, 2), ("l2", "second-1", 1, 4)], "recall",
                 "benign")  # fmt: skip
    code, output = run(runtime, monkeypatch, "mammo", "metrics", "--programme", "fr-retakes")
    assert code == 0, output
    got = json.loads(output)
    # Four women screened: two technical recalls, two recalls (B after her retake, D), one cancer (B's).
    assert got["screened"] == 4 and got["technical_recalls"] == 2 and got["cti_rate"] == 0.5
    assert got["recalls"] == 2 and got["recall_rate"] == 0.5 and got["cancer_detection_rate"] == 250.0
    assert got["ppv_recall"] == 0.5 and got["l2_only_cancer_share"] == 1.0  # B: L1 negative, the retake's L2
    readers = {r["reader"]: r for r in got["readers"]}
    # centre-0 made two L1 reads (A and B), not four; the technically insufficient L2 reads count as reads.
    assert readers["centre-0"]["reads"] == 2 and readers["centre-1"]["reads"] == 2
    assert readers["second-0"]["reads"] == 3 and readers["second-0"]["recall_rate"] == 0.0
    assert readers["second-1"]["reads"] == 3 and readers["second-1"]["recall_rate"] == pytest.approx(2 / 3)
    assert readers["second-1"]["cancers_found"] == 1 and readers["centre-0"]["cancers_found"] == 0
    # Agreement is on each woman's L1 and final L2: centre-0 meets second-1 (the retakes), not second-0.
    pairs = {tuple(p["readers"]): p["episodes"] for p in got["reader_pairs"]}
    assert pairs == {("centre-0", "second-1"): 2, ("centre-1", "second-0"): 1, ("centre-1", "second-1"): 1}
    # A period holding only the first exams still counts the retakes with them.
    code, output = run(
        runtime, monkeypatch, "mammo", "metrics", "--programme", "fr-retakes", "--to", "2025-03-06"
    )
    assert json.loads(output)["screened"] == 4 and json.loads(output)["recalls"] == 2


NORMAL_READS: list[tuple[str, str, int | str, int | str]] = [
    ("l1", "centre-0", 1, 1),
    ("l2", "second-0", 1, 2),
]


def _figures(runtime: Runtime, monkeypatch: pytest.MonkeyPatch, programme: str) -> dict[str, Any]:
    code, output = run(runtime, monkeypatch, "mammo", "metrics", "--programme", programme)
    assert code == 0, output
    return dict(json.loads(output))


@sqlite_only
def test_interval_cancers_count_within_the_screening_interval_by_period(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from archipel.mammo.decision import record_outcome
    from archipel.mammo.episodes import ScreeningError
    from archipel.mammo.schemas import OutcomeBody

    day = date(2025, 1, 31)
    with runtime.db.write() as s:
        prog = Programme(code="fr-interval", protocol="fr-depistage", interval_months=24)
        s.add(prog)
        s.flush()
        for woman, diagnosed in (
            ("I1", date(2026, 1, 30)),  # 11 months 30 days: the first 12 months
            ("I2", date(2026, 1, 31)),  # 12 months to the day: the second period
            ("I3", date(2027, 1, 30)),  # the last day of the 24 months
            ("I4", date(2027, 1, 31)),  # 24 months: after the interval, the next screening's
            ("I5", None),  # reported without a date
        ):
            _episode(s, prog, woman, day, NORMAL_READS, "normal", "interval_cancer", diagnosed_on=diagnosed)
        _episode(s, prog, "I6", day, NORMAL_READS, "normal")
        recalled = _episode(
            s, prog, "I7", day, [("l1", "centre-0", 1, 1), ("l2", "second-0", 4, 1)], "recall"
        )
        normal = _episode(s, prog, "I8", day, NORMAL_READS, "normal")
        # Refused: an interval cancer after a recall, and a diagnosis before the screening; nothing is stored.
        with pytest.raises(ScreeningError) as refused:
            record_outcome(s, recalled, OutcomeBody(outcome="interval_cancer"), "test", runtime.clock())
        assert refused.value.status == 422 and "it was recall" in str(refused.value)
        early = OutcomeBody(outcome="interval_cancer", diagnosed_on=date(2025, 1, 30))
        with pytest.raises(ScreeningError) as refused:
            record_outcome(s, normal, early, "test", runtime.clock())
        assert refused.value.status == 422 and "before the screening of 2025-01-31" in str(refused.value)
        assert (
            s.query(ScreeningOutcome)
            .filter(ScreeningOutcome.episode_id.in_([recalled.id, normal.id]))
            .count()
            == 0
        )
        prog_id = prog.id
    got = _figures(runtime, monkeypatch, "fr-interval")
    assert got["screened"] == 8 and got["interval_months"] == 24
    assert got["interval_cancers"] == 4 and got["interval_cancer_rate"] == pytest.approx(4 * 1000 / 8)
    assert got["interval_cancers_by_period"] == {"first_12_months": 1, "12_months_to_end": 2}
    assert got["interval_cancers_undated"] == 1 and got["interval_cancers_after_interval"] == 1
    # The UK's 36-month interval takes I4 in.
    with runtime.db.write() as s:
        uk = s.get(Programme, prog_id)
        assert uk is not None
        uk.interval_months = 36
    got = _figures(runtime, monkeypatch, "fr-interval")
    assert got["interval_cancers"] == 5 and got["interval_cancers_by_period"]["12_months_to_end"] == 3


@sqlite_only
def test_a_french_l2_consensus_is_the_screenings_l2_read(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    with runtime.db.write() as s:
        prog = Programme(code="fr-consensus", protocol="fr-depistage")
        s.add(prog)
        s.flush()
        # C1: L2 reads it normal and asks for a consensus, which is positive; a cancer is found.
        _episode(s, prog, "C1", date(2025, 4, 1), [("l1", "centre-0", 1, 1), ("l2", "second-0", 1, 1),
                 ("l2-consensus", "second-1", 4, 1)], "recall", "cancer_invasive")  # fmt: skip
        # C2: L2 positive, the consensus normal.
        _episode(s, prog, "C2", date(2025, 4, 2), [("l1", "centre-0", 1, 1), ("l2", "second-0", 4, 1),
                 ("l2-consensus", "second-1", 1, 1)], "normal")  # fmt: skip
    got = _figures(runtime, monkeypatch, "fr-consensus")
    assert got["recalls"] == 1 and got["screen_detected_cancers"] == 1
    # Found by L2 only: L1 negative, the L2 consensus positive (the read that asked for it was negative).
    assert got["l2_only_cancer_share"] == 1.0
    assert got["single_reader_detected_cancers"] == {"first_only": 0, "second_only": 1}
    readers = {r["reader"]: r for r in got["readers"]}
    assert readers["second-1"]["reads"] == 2 and readers["second-1"]["recall_rate"] == 0.5
    assert readers["second-1"]["cancers_found"] == 1 and readers["second-0"]["cancers_found"] == 0
    assert readers["second-0"]["reads"] == 2 and readers["second-0"]["recall_rate"] == 0.5
    # Agreement is between L1 and the consensus that decided.
    assert {tuple(p["readers"]): p["episodes"] for p in got["reader_pairs"]} == {("centre-0", "second-1"): 2}


@sqlite_only
def test_delays_match_the_hand_computed_medians_and_means(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    day = date(2025, 5, 1)
    exam = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    # (received, L2 read, result sent), in days after the exam; the deadline is 15 days after it.
    timings = [(1.0, 3.0, 11.0), (2.0, 5.0, 14.0), (4.5, 10.0, 18.5)]
    with runtime.db.write() as s:
        prog = Programme(code="fr-delays", protocol="fr-depistage", result_deadline_days=15)
        s.add(prog)
        s.flush()
        for n, (received, l2, sent) in enumerate(timings):
            ep = _episode(s, prog, f"D{n}", day, NORMAL_READS, "normal")
            ep.received_at = exam + timedelta(days=received)
            ep.result_sent_at = exam + timedelta(days=sent)
            read = s.query(Reading).filter_by(episode_id=ep.id, role="l2").one()
            read.submitted_at = exam + timedelta(days=l2)
        _episode(s, prog, "D-unsent", day, [("l1", "centre-0", 1, 1)], "normal")  # no L2 read, nothing sent
    delays = _figures(runtime, monkeypatch, "fr-delays")["delays"]
    assert delays["exam_to_received_days"] == {"median": 2.0, "mean": pytest.approx(7.5 / 3), "n": 3}
    assert delays["exam_to_l2_days"] == {"median": 5.0, "mean": 6.0, "n": 3}
    assert delays["received_to_result_days"] == {"median": 12.0, "mean": pytest.approx(36 / 3), "n": 3}
    # Sent on day 11 and 14 (within 15 days), on day 18.5 (late).
    assert delays["result_within_deadline"] == pytest.approx(2 / 3)
    assert delays["results_sent"] == 3 and delays["results_sent_within_deadline"] == 2
