"""The results-letter deadline watch and the list of episodes ready for a decision, through the HTTP API and
the CLI on a test clock: a coordinator sees before the deadline which women's results are at risk or late, and
at which stage each file waits; readers and other programmes' coordinators are refused, on the record."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from archipel.platform.audit import AuditEvent
from archipel.platform.runtime import Runtime
from tests.access_support import ensure_master
from tests.auth_helpers import Clock, client
from tests.test_mammo_api import CENTRE, Programme, woman
from tests.test_mammo_deadlines import deliver, read_by_l2
from tests.test_mammo_metrics import run


@pytest.fixture
def p(runtime: Runtime) -> Iterator[Programme]:
    clock = Clock(datetime(2026, 3, 6, 9, 0, tzinfo=UTC))
    runtime.clock = clock
    with client() as http:
        yield Programme(runtime, http, clock, {}, {})


def registered(p: Programme, n: int, screen_date: str) -> int:
    """An episode of woman ``n`` screened on ``screen_date`` whose images have not arrived."""
    mg = woman(n)
    ensure_master(p.rt.db, CENTRE, mg.patient_id, f"MAMMO{mg.patient_id}", "19600101")
    body = {"programme": "fr", "issuer": CENTRE, "patient_id": mg.patient_id, "site": CENTRE,
            "round": "first", "screen_date": screen_date}  # fmt: skip
    r = p.post("centre", "/api/mammo/episodes", body)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def watch(p: Programme, who: str = "coord", query: str = "") -> dict[str, Any]:
    r = p.get(who, f"/api/mammo/programmes/fr/deadlines{query}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def by_id(answer: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {row["episode_id"]: row for row in answer["episodes"]}


def test_the_coordinator_sees_results_at_risk_and_late_before_the_letters_are_sent(p: Programme) -> None:
    p.setup("fr", "fr-depistage")  # 15 days from the exam to the result; today is 6 March 2026
    fine = registered(p, 71, "2026-03-05")  # due 20 March: 14 days left
    risk = registered(p, 72, "2026-02-22")  # due 9 March: 3 days left
    late = registered(p, 73, "2026-02-15")  # due 2 March: 4 days late
    ready = read_by_l2(p, 74)  # exam 5 March, L1 and L2 read: waits for the decision

    got = watch(p)
    rows = by_id(got)
    assert set(rows) == {fine, risk, late, ready}
    assert [row["episode_id"] for row in got["episodes"]][:2] == [late, risk]  # most urgent first
    assert (rows[fine]["state"], rows[fine]["days_left"], rows[fine]["due"]) == ("fine", 14, "2026-03-20")
    assert (rows[risk]["state"], rows[risk]["days_left"]) == ("at_risk", 3)
    assert (rows[late]["state"], rows[late]["days_left"]) == ("late", -4)
    assert rows[late]["stage"] == "waiting for the images" and rows[late]["patient_id"] == "MG0073"
    assert rows[ready]["stage"] == "ready for the decision"
    assert got["counts"] == {"fine": 2, "at_risk": 1, "late": 1}

    assert [r["episode_id"] for r in watch(p, query="?state=late")["episodes"]] == [late]
    assert {r["episode_id"] for r in watch(p, query="?state=at_risk&warning_days=14")["episodes"]} == {
        fine,
        risk,
        ready,
    }
    assert watch(p, "admin", "?state=at_risk")["counts"]["at_risk"] == 1

    # Ready for a decision: only the complete, undecided file; once decided it waits for its letters.
    r = p.get("coord", "/api/mammo/programmes/fr/ready-for-decision")
    assert r.status_code == 200, r.text
    assert [e["episode_id"] for e in r.json()["episodes"]] == [ready]
    assert p.post("l2a", f"/api/mammo/episodes/{ready}/decision").status_code == 201
    assert p.get("coord", "/api/mammo/programmes/fr/ready-for-decision").json()["episodes"] == []
    assert by_id(watch(p))[ready]["stage"] == "decided: letters not sent yet"

    # The letters leave the outbox: the result is sent and off the watch.
    p.later(hours=1)
    assert deliver(p) == 2
    assert ready not in by_id(watch(p))

    # The days run on: the file that was fine is at risk six days before its deadline with a wider margin.
    p.later(days=11)
    assert by_id(watch(p))[fine]["state"] == "at_risk"


def test_readers_and_other_programmes_coordinators_are_refused_on_the_record(p: Programme) -> None:
    p.setup("fr", "fr-depistage")
    registered(p, 75, "2026-02-20")
    before = len(p.denied("read:screening-programme"))
    for url in ("/api/mammo/programmes/fr/deadlines", "/api/mammo/programmes/fr/ready-for-decision"):
        r = p.get("l2a", url)
        assert r.status_code == 403, r.text
        assert "MG0075" not in r.text
    assert len(p.denied("read:screening-programme")) == before + 2

    # The coordinator of another programme sees none of this one's women.
    r = p.post("admin", "/api/mammo/programmes", {"code": "uk", "protocol": "eu-blinded"})
    assert r.status_code == 201, r.text
    r = p.get("coord", "/api/mammo/programmes/uk/deadlines")
    assert r.status_code == 403, r.text


def test_bad_queries_are_refused_clearly(p: Programme) -> None:
    p.setup("fr", "fr-depistage")
    r = p.get("coord", "/api/mammo/programmes/fr/deadlines?state=overdue")
    assert r.status_code == 422 and "at_risk" in r.text
    assert p.get("coord", "/api/mammo/programmes/fr/deadlines?warning_days=-1").status_code == 422
    assert p.get("admin", "/api/mammo/programmes/nowhere/deadlines").status_code == 404


def test_the_command_line_lists_the_watch_on_the_record(
    p: Programme, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    p.setup("fr", "fr-depistage")
    late = registered(p, 76, "2025-01-10")  # long past its deadline, whatever the real date
    code, output = run(runtime, monkeypatch, "mammo", "deadlines", "--programme", "fr", "--format", "json")
    assert code == 0, output
    rows = json.loads(output)
    assert [(r["episode_id"], r["state"], r["programme"]) for r in rows] == [(late, "late", "fr")]
    code, output = run(runtime, monkeypatch, "mammo", "deadlines", "--programme", "fr")
    assert code == 0 and "1 results not sent: 1 late, 0 at risk" in output
    assert "MG0076" in output
    code, output = run(runtime, monkeypatch, "mammo", "deadlines", "--state", "overdue")
    assert code != 0
    with runtime.db.sessions() as s:
        events = list(
            s.execute(
                select(AuditEvent).where(AuditEvent.object == "results-letter deadlines of fr")
            ).scalars()
        )
    assert len(events) == 2 and all(e.source == "cli" for e in events)


def test_the_watch_warns_the_coordinators_once_when_a_result_turns_at_risk_and_once_when_late(
    p: Programme,
) -> None:
    from archipel.mammo import deadline_warnings
    from archipel.platform.inbox import Notification

    p.setup("fr", "fr-depistage")
    p.h("coord")  # the coordinator's account exists
    risk = registered(p, 77, "2026-02-22")  # due 9 March: at risk on 6 March
    registered(p, 78, "2026-03-05")  # due 20 March: fine

    def warnings() -> list[Notification]:
        with p.rt.db.sessions() as s:
            q = select(Notification).where(Notification.kind == deadline_warnings.KIND)
            return list(s.execute(q.order_by(Notification.id)).scalars())

    assert deadline_warnings.sweep(p.rt.db, p.clock()) == {"at_risk": 1, "late": 0}
    assert deadline_warnings.sweep(p.rt.db, p.clock()) == {"at_risk": 0, "late": 0}  # once per state
    first = warnings()
    assert [(n.recipient, n.title) for n in first] == [
        ("coordinatrice", f"Screening episode #{risk} (fr): the result is due in 3 day(s)")
    ]
    assert "MG0077" not in first[0].title + first[0].body  # the bell names the episode, not the woman
    assert "waiting for the images" in first[0].body

    # Four days on, the first is late (warned again, once) and nothing else has turned yet.
    p.later(days=4)
    assert deadline_warnings.sweep(p.rt.db, p.clock()) == {"at_risk": 0, "late": 1}
    assert deadline_warnings.sweep(p.rt.db, p.clock()) == {"at_risk": 0, "late": 0}
    assert warnings()[-1].title == f"Screening episode #{risk} (fr): the result is 1 day(s) late"
    with p.rt.db.sessions() as s:
        events = list(
            s.execute(select(AuditEvent).where(AuditEvent.action == "notify:screening-programme")).scalars()
        )
    assert [e.patient for e in events] == [f"{CENTRE}/MG0077", f"{CENTRE}/MG0077"]
