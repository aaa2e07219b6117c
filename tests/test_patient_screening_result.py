"""A woman reads her screening result in the patient portal (``GET /api/patient/record``, signed in with her
access code and one-time code) once it is released, never before, and never another woman's; through the HTTP
API in process, the exam taken in by STOW-RS and read through the screening API."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from archipel.platform import audit, notify
from archipel.platform.audit import AuditEvent
from archipel.platform.runtime import Runtime
from tests.auth_helpers import Clock, client
from tests.test_mammo_api import NORMAL_READ, POSITIVE_LEFT, Programme, l1_form, sqlite_only, stow, woman
from tests.test_patient_portal import _sign_in

pytestmark = sqlite_only


@pytest.fixture
def p(runtime: Runtime) -> Iterator[Programme]:
    clock = Clock(datetime(2026, 3, 6, 9, 0, tzinfo=UTC))
    runtime.clock = clock
    with client() as http:
        yield Programme(runtime, http, clock, {}, {})


def screening(http: TestClient, headers: dict[str, str]) -> list[dict[str, Any]]:
    r = http.get("/api/patient/record", headers=headers)
    assert r.status_code == 200, r.text
    assert "screening-episode" in r.json()["kinds"]
    return [i for i in r.json()["items"] if i["kind"] == "screening-episode"]


def read_twice(p: Programme, n: int, l2_read: dict[str, Any]) -> int:
    """The woman's exam by STOW, the centre's L1 form (normal), and an L2 read; returns the episode id."""
    mg = woman(n)
    stow(p, mg, f"portal-{n}")
    r = p.post("centre", "/api/mammo/l1-forms", l1_form(mg, NORMAL_READ))
    assert r.status_code == 201, r.text
    eid, task = r.json()["id"], r.json()["tasks"][0]["id"]
    assert p.post("l2a", f"/api/mammo/tasks/{task}/claim").status_code == 200
    assert p.post("l2a", f"/api/mammo/tasks/{task}/reading", l2_read).status_code == 201
    return int(eid)


def test_a_woman_reads_her_released_screening_result_in_the_patient_portal(p: Programme) -> None:
    p.setup("fr", "fr-depistage")
    mine = read_twice(p, 71, POSITIVE_LEFT)
    other = read_twice(p, 72, NORMAL_READ)

    # Read by L1 and L2 but not decided: nothing of it is released to her.
    headers = _sign_in(p.rt, p.clock, p.http, woman(71))
    assert screening(p.http, headers) == []

    # Decided (a recall) and its letters delivered: the result is released, with the decision.
    p.later(days=1)
    r = p.post("l2a", f"/api/mammo/episodes/{mine}/decision")
    assert r.status_code == 201 and r.json()["decision"]["decision"] == "recall", r.text
    outbox = notify.FileSender(p.rt.settings.data_dir / "outbox")
    notify.deliver_pending(p.rt.db, outbox, clock=p.clock)
    headers = _sign_in(p.rt, p.clock, p.http, woman(71))
    [item] = screening(p.http, headers)
    assert item["id"] == str(mine) and item["released"] is True and item["date"] == "2026-03-05"
    assert item["status"] == "recall" and item["detail"]["decision"] == "recall"
    assert item["detail"]["programme"] == "fr" and item["detail"]["result_sent_at"]
    with p.rt.db.sessions() as s:
        reads = s.execute(
            select(AuditEvent).where(
                AuditEvent.action == "read:patient", AuditEvent.actor == "CENTRE-A/MG0071"
            )
        ).scalars()
        assert {e.outcome for e in reads} == {audit.SUCCESS}

    # The other woman's episode, undecided, is in nobody's portal; hers shows only when released too.
    assert screening(p.http, _sign_in(p.rt, p.clock, p.http, woman(72))) == []
    assert p.post("l2a", f"/api/mammo/episodes/{other}/decision").status_code == 201
    notify.deliver_pending(p.rt.db, outbox, clock=p.clock)
    [theirs] = screening(p.http, _sign_in(p.rt, p.clock, p.http, woman(72)))
    assert theirs["id"] == str(other) and theirs["detail"]["decision"] == "normal"
    assert [i["id"] for i in screening(p.http, _sign_in(p.rt, p.clock, p.http, woman(71)))] == [str(mine)]
