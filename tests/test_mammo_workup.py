"""The recall of the French programme through HTTP: the letters to the woman, her GP and the L1 radiologist (the
imaging centre's address, and the radiologist's own when their account has one) in the outbox, then the
deferred work-up form, refused until the episode is recalled, with bad forms refused and nothing stored, a
suspicious work-up followed by the biopsy's result, and the outcome that feeds the programme's metrics."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from archipel.mammo.models import DeferredWorkup, ScreeningOutcome
from archipel.platform.audit import AuditEvent
from archipel.platform.authn import User
from archipel.platform.notify import OutboxMessage
from archipel.platform.runtime import Runtime
from tests.access_support import ensure_master
from tests.auth_helpers import Clock, client, make_account
from tests.test_mammo_api import CENTRE, NORMAL_READ, POSITIVE_LEFT, Programme, l1_form, stow, woman

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

CENTRE_DESK = "recalls@centre-a.example.org"
WORKUP = "/api/mammo/episodes/{}/deferred-workup"
SUSPICIOUS = {
    "radiologist": "radio-centre",
    "performed_on": "2026-03-20",
    "diagnostic_views": [{"view": "L-CC", "modifier": "spot"}, {"view": "L-ML", "modifier": "magnification"}],
    "ultrasound": True,
    "biopsy": "core-needle",
    "biopsy_laterality": "L",
    "right_assessment": 1,
    "left_assessment": 4,
    "conclusion": "suspicious",
}
CANCER = {
    **SUSPICIOUS,
    "performed_on": "2026-03-27",
    "diagnostic_views": [],
    "ultrasound": False,
    "mri": True,
    "left_assessment": 6,
    "conclusion": "cancer",
    "pathology": "cancer_invasive",
    "size_mm": 14,
}


@pytest.fixture
def prog(runtime: Runtime) -> Iterator[Programme]:
    clock = Clock(datetime(2026, 3, 6, 9, 0, tzinfo=UTC))
    runtime.clock = clock
    with client() as http:
        yield Programme(runtime, http, clock, {}, {})


def read_by_l2(p: Programme, n: int, read: dict[str, Any], **form: Any) -> int:
    """An L1 form, its four views by STOW, and the L2 read; returns the episode's id (not decided yet)."""
    mg = woman(n)
    ensure_master(p.rt.db, CENTRE, mg.patient_id, f"MAMMO{mg.patient_id}", "19600101")
    r = p.post("centre", "/api/mammo/l1-forms", l1_form(mg, NORMAL_READ, **form))
    assert r.status_code == 201, r.text
    stow(p, mg, f"workup-{n}")
    episode = p.get("centre", f"/api/mammo/episodes/{r.json()['id']}").json()
    task = episode["tasks"][0]["id"]
    assert p.post("l2a", f"/api/mammo/tasks/{task}/claim").status_code == 200
    assert p.post("l2a", f"/api/mammo/tasks/{task}/reading", read).status_code == 201
    return int(episode["id"])


def letters_of(p: Programme, decided: dict[str, Any]) -> dict[str, OutboxMessage]:
    with p.rt.db.sessions() as s:
        rows = s.execute(select(OutboxMessage).where(OutboxMessage.id.in_(decided["letters"]))).scalars()
        return {m.recipient: m for m in rows}


def stored(p: Programme) -> tuple[int, int]:
    with p.rt.db.sessions() as s:
        return (
            s.execute(select(func.count()).select_from(DeferredWorkup)).scalar_one(),
            s.execute(select(func.count()).select_from(ScreeningOutcome)).scalar_one(),
        )


def test_a_recall_reaches_the_l1_radiologist_through_the_centre_and_their_account(prog: Programme) -> None:
    p = prog
    p.setup("fr", "fr-depistage")

    # The L1 radiologist's account has no e-mail address: the centre's recall address of the form is used.
    first = read_by_l2(p, 11, POSITIVE_LEFT, centre_contact=CENTRE_DESK)
    decided = p.post("l2a", f"/api/mammo/episodes/{first}/decision").json()["decision"]
    assert decided["decision"] == "recall"
    letters = letters_of(p, decided)
    assert sorted(letters) == sorted(["woman@example.org", "gp@example.org", CENTRE_DESK])
    to_centre = letters[CENTRE_DESK]
    assert to_centre.subject == "Screening recall" and "deferred work-up" in to_centre.body
    assert f"Screening episode {first}" in to_centre.body and "TESTMAMMO" not in to_centre.body

    # Once the account has an address, the radiologist is told as well as the centre.
    with p.rt.db.write() as s:
        s.execute(select(User).where(User.username == "radio-centre")).scalar_one().email = "rc@example.org"
    second = read_by_l2(p, 12, POSITIVE_LEFT, centre_contact=CENTRE_DESK)
    decided = p.post("l2a", f"/api/mammo/episodes/{second}/decision").json()["decision"]
    assert sorted(letters_of(p, decided)) == sorted(
        ["woman@example.org", "gp@example.org", "rc@example.org", CENTRE_DESK]
    )

    # A normal result is no recall: no letter to L1.
    third = read_by_l2(p, 13, NORMAL_READ, centre_contact=CENTRE_DESK)
    decided = p.post("l2a", f"/api/mammo/episodes/{third}/decision").json()["decision"]
    assert decided["decision"] == "normal"
    assert sorted(letters_of(p, decided)) == ["gp@example.org", "woman@example.org"]


def test_the_deferred_work_up_form_records_the_outcome_after_the_biopsy(prog: Programme) -> None:
    p = prog
    p.setup("fr", "fr-depistage")
    eid = read_by_l2(p, 21, POSITIVE_LEFT, centre_contact=CENTRE_DESK)

    # Before the decision there is no recall to work up: 409, nothing stored.
    r = p.post("centre", WORKUP.format(eid), SUSPICIOUS)
    assert r.status_code == 409 and "follows a recall" in r.json()["detail"]
    assert stored(p) == (0, 0)
    p.later(days=1)
    assert p.post("l2a", f"/api/mammo/episodes/{eid}/decision").status_code == 201

    # Bad forms are refused with their reason, and store nothing.
    bad = [
        ({**SUSPICIOUS, "biopsy": "none", "biopsy_laterality": None}, "goes to a biopsy"),
        ({**SUSPICIOUS, "biopsy_laterality": None}, "names the breast"),
        ({**CANCER, "pathology": None}, "proven by a biopsy"),
        ({**SUSPICIOUS, "conclusion": "normal"}, "a normal work-up has both breasts ACR 1-2"),
        ({**SUSPICIOUS, "left_assessment": 7}, "less than or equal to 6"),
        ({**SUSPICIOUS, "diagnostic_views": [{"view": "L-XX"}]}, "not a laterality and view"),
        ({**SUSPICIOUS, "biopsy": "laser"}, "unknown biopsy"),
        ({**SUSPICIOUS, "diagnostic_views": [], "ultrasound": False, "biopsy": "none",
          "biopsy_laterality": None, "left_assessment": 2, "conclusion": "benign"}, "lists the exams done"),
    ]  # fmt: skip
    for body, reason in bad:
        r = p.post("centre", WORKUP.format(eid), body)
        assert r.status_code == 422 and reason in r.text, (body, r.text)
    r = p.post("centre", WORKUP.format(eid), {**SUSPICIOUS, "performed_on": "2026-03-01"})
    assert r.status_code == 422 and "before the recall" in r.json()["detail"]
    assert stored(p) == (0, 0)

    # A radiologist of another centre may not record it: 403, audited as a denial.
    p.accounts["other"] = make_account(p.rt, "radio-ailleurs", "radiologist", "CENTRE-B")
    r = p.post("other", WORKUP.format(eid), SUSPICIOUS)
    assert r.status_code == 403
    with p.rt.db.sessions() as s:
        denied = s.execute(
            select(AuditEvent).where(AuditEvent.outcome == "denied", AuditEvent.actor == "radio-ailleurs")
        ).scalars()
        assert [(e.action, e.object) for e in denied] == [
            ("update:screening-episode", f"deferred work-up of screening episode {eid}")
        ]
    assert stored(p) == (0, 0)

    # The suspicious work-up: its exams and assessments are kept, the outcome waits for the pathology.
    r = p.post("centre", WORKUP.format(eid), SUSPICIOUS)
    assert r.status_code == 201, r.text
    w = r.json()
    assert w["outcome"] is None and w["conclusion"] == "suspicious" and w["site"] == CENTRE
    assert w["diagnostic_views"] == SUSPICIOUS["diagnostic_views"] and w["biopsy_laterality"] == "L"
    assert (w["right_assessment"], w["left_assessment"], w["recorded_by"]) == (1, 4, "radio-centre")
    assert stored(p) == (1, 0)
    m = p.get("coord", "/api/mammo/metrics?programme=fr").json()
    assert m["recall_rate"] == 1.0 and m["cancer_detection_rate"] == 0.0

    # The biopsy's result: a cancer, which is the episode's outcome and a screen-detected cancer.
    p.later(days=7)
    r = p.post("centre", WORKUP.format(eid), CANCER)
    assert r.status_code == 201, r.text
    outcome = r.json()["outcome"]
    assert outcome["outcome"] == "cancer_invasive" and outcome["biopsy"] is True
    assert "core-needle biopsy L" in outcome["workup"] and "MRI" in outcome["workup"]
    with p.rt.db.sessions() as s:
        row = s.get(ScreeningOutcome, outcome["id"])
        assert row is not None and row.episode_id == eid and row.size_mm == 14
        assert row.diagnosed_on is not None and row.diagnosed_on.isoformat() == "2026-03-27"
    m = p.get("coord", "/api/mammo/metrics?programme=fr").json()
    assert m["cancer_detection_rate"] == 1000.0 and m["ppv_recall"] == 1.0

    # A final work-up is recorded once.
    r = p.post("centre", WORKUP.format(eid), {**CANCER, "pathology": "cancer_in_situ"})
    assert r.status_code == 409 and "final work-up already" in r.json()["detail"]
    assert stored(p) == (2, 1)

    # Both forms are read back, the final conclusion said; the L2 reader holding the case may read them.
    listed = p.get("centre", WORKUP.format(eid)).json()
    assert [x["conclusion"] for x in listed["workups"]] == ["suspicious", "cancer"]
    assert listed["final"] == "cancer" and listed["workups"][1]["pathology"] == "cancer_invasive"
    assert p.get("other", WORKUP.format(eid)).status_code == 403
    with p.rt.db.sessions() as s:
        done = s.execute(
            select(AuditEvent.action, AuditEvent.outcome).where(
                AuditEvent.object == f"deferred work-up of screening episode {eid}",
                AuditEvent.actor == "radio-centre",
            )
        ).all()
    # Each form that passed the policy: the one before the decision, the misdated one, the two stored, the third.
    assert [tuple(e) for e in done].count(("update:screening-episode", "success")) == 5
    assert ("read:screening-episode", "success") in [tuple(e) for e in done]


def test_a_work_up_follows_a_recall_only(prog: Programme) -> None:
    p = prog
    p.setup("fr", "fr-depistage")
    eid = read_by_l2(p, 31, NORMAL_READ)
    assert p.post("l2a", f"/api/mammo/episodes/{eid}/decision").json()["decision"]["decision"] == "normal"
    r = p.post("centre", WORKUP.format(eid), {**SUSPICIOUS, "performed_on": "2026-03-07"})
    assert r.status_code == 409 and "was decided normal" in r.json()["detail"]
    assert stored(p) == (0, 0)
    assert p.post("centre", WORKUP.format(999999), SUSPICIOUS).status_code == 404


def test_the_episode_view_shows_the_work_up_its_state_result_and_outcome(prog: Programme) -> None:
    p = prog
    p.setup("fr", "fr-depistage")
    eid = read_by_l2(p, 24, POSITIVE_LEFT, centre_contact=CENTRE_DESK)
    url = f"/api/mammo/episodes/{eid}"
    assert p.get("centre", url).json()["workup"] is None  # not decided: no work-up to show
    p.later(days=1)
    assert p.post("l2a", f"/api/mammo/episodes/{eid}/decision").status_code == 201
    assert p.get("centre", url).json()["workup"] == {"state": "awaited", "final": None, "outcome": None,
                                                     "forms": []}  # fmt: skip
    assert p.post("centre", WORKUP.format(eid), SUSPICIOUS).status_code == 201
    shown = p.get("centre", url).json()["workup"]
    assert (shown["state"], shown["final"], shown["outcome"]) == ("pathology-awaited", None, None)
    assert [(f["conclusion"], f["left_assessment"]) for f in shown["forms"]] == [("suspicious", 4)]
    assert p.post("centre", WORKUP.format(eid), CANCER).status_code == 201
    shown = p.get("centre", url).json()["workup"]
    assert (shown["state"], shown["final"]) == ("done", "cancer")
    assert shown["outcome"]["outcome"] == "cancer_invasive" and shown["outcome"]["biopsy"] is True
    assert [f["conclusion"] for f in shown["forms"]] == ["suspicious", "cancer"]
    # The view is read under the access policy as before: a radiologist of another centre gets 403, audited.
    p.accounts["elsewhere"] = make_account(p.rt, "radio-loin", "radiologist", "CENTRE-B")
    assert p.get("elsewhere", url).status_code == 403
    with p.rt.db.sessions() as s:
        denied = (
            s.execute(
                select(AuditEvent).where(AuditEvent.actor == "radio-loin", AuditEvent.outcome == "denied")
            )
            .scalars()
            .all()
        )
        assert denied
