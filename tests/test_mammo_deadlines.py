"""Screening results within the programme's deadline, through the HTTP API on a test clock: a result is sent
when its letters leave the outbox (not when they are queued, never when none was), and the woman's portal
shows it only then."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from archipel.platform import notify
from archipel.platform.runtime import Runtime
from tests.auth_helpers import Clock, client
from tests.test_mammo_api import NORMAL_READ, Programme, l1_form, stow, woman
from tests.test_patient_portal import _sign_in


class Down:
    """A sender whose provider is unreachable: every letter stays queued."""

    def send(self, message: notify.Message) -> None:
        raise ConnectionError("smtp down")


@pytest.fixture
def prog(runtime: Runtime) -> Iterator[Programme]:
    clock = Clock(datetime(2026, 3, 6, 9, 0, tzinfo=UTC))
    runtime.clock = clock
    with client() as http:
        yield Programme(runtime, http, clock, {}, {})


def deliver(p: Programme, sender: notify.Sender | None = None) -> int:
    outbox = notify.FileSender(p.rt.settings.data_dir / "outbox")
    return notify.deliver_pending(p.rt.db, sender or outbox, clock=p.clock)


def read_by_l2(p: Programme, n: int, **form: Any) -> int:
    """A woman's exam through L1 (normal) and a normal L2 read; returns the episode id, ready for a decision."""
    mg = woman(n)
    stow(p, mg, f"deadline-{n}")
    r = p.post("centre", "/api/mammo/l1-forms", l1_form(mg, NORMAL_READ, **form))
    assert r.status_code == 201, r.text
    eid, task = r.json()["id"], r.json()["tasks"][0]["id"]
    assert p.post("l2a", f"/api/mammo/tasks/{task}/claim").status_code == 200
    assert p.post("l2a", f"/api/mammo/tasks/{task}/reading", NORMAL_READ).status_code == 201
    return int(eid)


def screening_items(http: TestClient, headers: dict[str, str]) -> list[dict[str, Any]]:
    r = http.get("/api/patient/record", headers=headers)
    assert r.status_code == 200, r.text
    return [i for i in r.json()["items"] if i["kind"] == "screening-episode"]


def test_a_result_is_sent_when_its_letters_leave_the_outbox_and_the_portal_waits_for_it(
    prog: Programme,
) -> None:
    p = prog
    p.setup("fr", "fr-depistage")
    eid = read_by_l2(p, 61)
    p.later(days=1)
    # The woman signs in to her portal (its one-time code leaves the outbox before any letter is queued).
    headers = _sign_in(p.rt, p.clock, p.http, woman(61))
    r = p.post("l2a", f"/api/mammo/episodes/{eid}/decision")
    assert r.status_code == 201, r.text
    decided = r.json()["decision"]
    assert decided["decision"] == "normal" and len(decided["letters"]) == 2
    assert decided["result"] == "queued" and decided["result_sent_at"] is None
    assert r.json()["delays"]["received_to_result_days"] is None
    assert screening_items(p.http, headers) == []  # queued: nothing released to her

    # The provider is down: the letters stay queued, the result unsent.
    p.later(hours=2)
    assert deliver(p, Down()) == 0
    ep = p.get("l2a", f"/api/mammo/episodes/{eid}").json()
    assert ep["decision"]["result"] == "queued" and ep["decision"]["within_deadline"] is None

    # It is back a day later: the result is sent at the letters' sent time.
    p.later(days=1)
    assert deliver(p) == 2
    ep = p.get("l2a", f"/api/mammo/episodes/{eid}").json()
    assert ep["decision"]["result"] == "sent" and ep["decision"]["within_deadline"] is True
    assert ep["decision"]["result_sent_at"] == p.clock().isoformat()
    # Received on the first day at 09:00, sent two days and two hours later.
    assert ep["delays"]["received_to_result_days"] == round((2 * 24 + 2) / 24, 2)
    [item] = screening_items(p.http, _sign_in(p.rt, p.clock, p.http, woman(61)))
    assert item["id"] == str(eid) and item["released"] is True
    assert (
        item["detail"]["decision"] == "normal" and item["detail"]["result_sent_at"] == p.clock().isoformat()
    )


def test_a_decision_with_nobody_to_write_to_is_not_a_sent_result(prog: Programme) -> None:
    p = prog
    p.setup("fr", "fr-depistage")
    eid = read_by_l2(p, 62, woman_contact="", gp_contact="")
    r = p.post("l2a", f"/api/mammo/episodes/{eid}/decision")
    assert r.status_code == 201, r.text
    decided = r.json()["decision"]
    assert decided["letters"] == [] and decided["result"] == "no-letter" and decided["result_sent_at"] is None
    assert deliver(p) == 0
    # Past the 15 days: not sent, so not within the deadline, and never released to her.
    p.later(days=20)
    ep = p.get("l2a", f"/api/mammo/episodes/{eid}").json()
    assert ep["decision"]["result"] == "no-letter" and ep["decision"]["within_deadline"] is False
    assert ep["delays"]["received_to_result_days"] is None
    assert screening_items(p.http, _sign_in(p.rt, p.clock, p.http, woman(62))) == []
    m = p.get("coord", "/api/mammo/metrics?programme=fr").json()
    assert m["screened"] == 1 and m["delays"]["received_to_result_days"]["n"] == 0
