"""Fixity: every stored object is re-read against the SHA-256 its references expect; a corrupt or missing one
raises an alert (audit, admins' inbox, log) and is repaired from the replica or the other tier; ``archipel storage
verify`` prints the summary and fails when something is still wrong; admins see the state over HTTP."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy import select

from archipel.platform import audit, fixity
from archipel.platform.audit import AuditEvent
from archipel.platform.inbox import Notification
from archipel.platform.preservation import CORRUPT, OK, REPAIRED, PreservedBlob
from archipel.platform.runtime import Runtime
from archipel.platform.storage_tasks import runtime_stores, tier_and_replicate, verify_as_job
from tests.auth_helpers import Clock, bearer, client, login, make_account
from tests.lifecycle_support import age_study, folder_store, hot, lifecycle_runtime, run_storage, store_study


@pytest.fixture
def rt(runtime: Runtime, tmp_path: Path) -> Runtime:
    return lifecycle_runtime(runtime, tmp_path)


def statuses(rt: Runtime, keys: list[str]) -> list[str]:
    with rt.db.sessions() as s:
        found = dict(s.execute(select(PreservedBlob.key, PreservedBlob.status)).all())
    return [found.get(k, "") for k in keys]


def alerts(rt: Runtime) -> list[tuple[str, str, str]]:
    with rt.db.sessions() as s:
        rows = s.execute(
            select(AuditEvent.action, AuditEvent.outcome, AuditEvent.object)
            .where(AuditEvent.event_type == audit.SECURITY_ALERT, AuditEvent.action.like("fixity:%"))
            .order_by(AuditEvent.id)
        ).all()
    return [(a, o, obj) for a, o, obj in rows]


def test_a_corrupt_and_a_deleted_object_are_found_alerted_and_repaired_from_the_replica(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    make_account(rt, "admin-fixity", "admin", "")
    _, keys, payloads = store_study(rt, "FIX001", count=3)
    assert tier_and_replicate(rt)[1]["replication"] == {"replicated": 3, "failed": 0}
    assert all(folder_store(rt, "replica").get(k) == p for k, p in zip(keys, payloads, strict=True))
    flipped = bytearray(payloads[0])
    flipped[200] ^= 0x01
    hot(rt).path(keys[0]).write_bytes(bytes(flipped))
    hot(rt).delete(keys[1])

    with caplog.at_level(logging.WARNING, logger="archipel.storage"):
        code, output = run_storage(rt, monkeypatch, "verify", "--all")

    assert code == 0, output
    assert "checked 3: ok 1, repaired 2, missing 0, corrupt 0" in output
    assert [hot(rt).get(k) for k in keys] == payloads
    assert statuses(rt, keys) == [REPAIRED, REPAIRED, OK]
    assert sorted(alerts(rt)) == sorted(
        [
            ("fixity:corrupt", audit.SUCCESS, f"blob blobs/{keys[0]}"),
            ("fixity:missing", audit.SUCCESS, f"blob blobs/{keys[1]}"),
        ]
    )
    with rt.db.sessions() as s:
        [note] = s.execute(select(Notification).where(Notification.recipient == "admin-fixity")).scalars()
    assert note.kind == "fixity" and "2 stored objects were wrong and are repaired" in note.title
    assert keys[0] in note.body and "repaired from the replica" in note.body
    logged = [r.getMessage() for r in caplog.records if "event=fixity_problem" in r.getMessage()]
    assert len(logged) == 2 and all("status=repaired repaired_from=replica" in line for line in logged)
    assert any(f"key={keys[0]} tier=hot found=corrupt" in line for line in logged)
    # The next check finds everything good again.
    assert run_storage(rt, monkeypatch, "verify", "--all")[1].count("ok 3, repaired 0")


def test_verify_fails_when_no_good_copy_is_left_and_the_problem_stays_open(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, keys, _ = store_study(rt, "FIX002")
    hot(rt).path(keys[0]).write_bytes(b"not the stored bytes")  # never replicated: nothing to repair from

    code, output = run_storage(rt, monkeypatch, "verify", "--all")

    assert code == 1, output
    assert "checked 2: ok 1, repaired 0, missing 0, corrupt 1" in output
    assert f"corrupt  blobs/{keys[0]}" in output and "no good copy to repair from" in output
    assert alerts(rt) == [("fixity:corrupt", audit.FAILURE, f"blob blobs/{keys[0]}")]
    status = fixity.fixity_status(rt.db)
    assert [p["key"] for p in status["open_problems"]] == [keys[0]]
    assert status["open_problems"][0]["status"] == CORRUPT
    assert status["last_run"]["result"]["corrupt"] == 1 and status["last_run"]["state"] == "succeeded"


def test_an_archived_object_corrupt_in_the_archive_is_repaired_from_the_replica(rt: Runtime) -> None:
    study_uid, keys, payloads = store_study(rt, "FIX003")
    age_study(rt, study_uid, 3 * 365)
    tier_and_replicate(rt)  # replicated, then moved to the archive
    archive = folder_store(rt, "archive")
    archive.path(keys[1]).write_bytes(b"bit rot")

    plan = fixity.fixity_plan(rt.db, rt.clock(), rt.settings.fixity_cycle_days, everything=True)
    _, summary = verify_as_job(rt, plan)

    assert (summary.checked, summary.repaired, summary.unresolved) == (2, 1, 0)
    assert archive.get(keys[1]) == payloads[1] and not hot(rt).exists(keys[1])


def test_a_daily_run_checks_the_oldest_share_of_the_cycle_and_every_overdue_object(rt: Runtime) -> None:
    for n in range(5):
        store_study(rt, f"FIX1{n:02d}")  # 10 blobs
    cycle = rt.settings.fixity_cycle_days
    stores = runtime_stores(rt)
    first = fixity.fixity_plan(rt.db, rt.clock(), cycle)
    assert len(first) == 10  # never checked: all overdue
    fixity.run_fixity(rt.db, stores, rt.clock(), first[:4])
    assert isinstance(rt.clock, Clock)
    rt.clock.advance(days=1)
    fixity.run_fixity(rt.db, stores, rt.clock(), first[4:])

    rt.clock.advance(days=1)
    daily = fixity.fixity_plan(rt.db, rt.clock(), cycle)
    assert [t.key for t in daily] == [first[0].key]  # ceil(10 / 90): the one checked longest ago
    rt.clock.advance(days=cycle)
    assert len(fixity.fixity_plan(rt.db, rt.clock(), cycle)) == 10  # all overdue again
    assert len(fixity.fixity_plan(rt.db, rt.clock(), cycle, sample=3)) == 3


def test_admins_see_the_last_run_and_the_open_problems_over_http(rt: Runtime) -> None:
    admin = make_account(rt, "admin-storage", "admin", "")
    _, keys, _ = store_study(rt, "FIX004")
    hot(rt).delete(keys[0])  # never replicated: missing for good
    plan = fixity.fixity_plan(rt.db, rt.clock(), rt.settings.fixity_cycle_days, everything=True)
    job_id, _ = verify_as_job(rt, plan)

    with client() as http:
        r = http.get(
            "/api/storage/fixity", headers=bearer(login(http, admin, rt.clock()).json()["access_token"])
        )

    assert r.status_code == 200, r.text
    body = r.json()
    assert body["last_run"]["id"] == job_id and body["last_run"]["result"]["missing"] == 1
    assert body["by_tier"] == {"hot": 2} and body["objects"] == 2
    assert [(p["key"], p["status"]) for p in body["open_problems"]] == [(keys[0], "missing")]
    # Audited; the refusal of anyone else is in test_audit_coverage.
    with rt.db.sessions() as s:
        outcomes = s.execute(
            select(AuditEvent.actor, AuditEvent.outcome).where(AuditEvent.object == "storage fixity")
        ).all()
    assert [tuple(o) for o in outcomes] == [("admin-storage", "success")]
