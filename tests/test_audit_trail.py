"""The audit trail resists tampering: signed checkpoints catch a rebuilt chain, verification says where it breaks,
and retention purges old events while the kept chain still verifies."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update

from archipel.platform import audit
from archipel.platform.audit import AuditEvent
from archipel.platform.audit_checkpoints import (
    AuditCheckpoint,
    CheckpointScheduler,
    PurgeRefused,
    purge,
    write_checkpoint,
)
from archipel.platform.audit_signing import trusted_keys
from archipel.platform.audit_verify import Report, verify_trail
from archipel.platform.authn import Principal
from archipel.platform.runtime import Runtime
from tests.support import archipel_cmd, wait_until

#: Tests that run the command line or a thread need not repeat on PostgreSQL: the chain logic tests do.
sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

WHO = Principal(subject="dr-test", role="radiologist", site="SITE-A")


def _events(rt: Runtime, n: int, start: int = 0) -> None:
    for k in range(start, start + n):
        audit.record(rt.db, WHO, audit.PATIENT_RECORD, "read:study", patient=f"SITE-A/P{k}", master=100 + k)


def _verify(rt: Runtime) -> Report:
    with rt.db.sessions() as s:
        return verify_trail(s, trusted_keys(rt.settings))


def _cli(rt: Runtime, *args: str) -> tuple[int, str]:
    env = {"ARCHIPEL_DATABASE_URL": rt.settings.effective_database_url}
    r = archipel_cmd("audit", *args, data=rt.settings.data_dir, env=env, check=False)
    return r.returncode, r.stdout + r.stderr


@sqlite_only
def test_verify_command_passes_an_intact_signed_chain(runtime: Runtime) -> None:
    _events(runtime, 3)
    code, text = _cli(runtime, "checkpoint")
    assert code == 0 and "event 3" in text
    _events(runtime, 2, start=3)
    code, text = _cli(runtime, "verify")
    assert code == 0, text
    assert "checked 5 events" in text and "audit trail intact" in text
    assert "2 events after the last checkpoint" in text


@sqlite_only
def test_verify_command_names_the_changed_event_and_fails(runtime: Runtime) -> None:
    _events(runtime, 3)
    with runtime.db.write() as s:
        s.execute(update(AuditEvent).where(AuditEvent.id == 2).values(actor="someone-else"))
    code, text = _cli(runtime, "verify")
    assert code == 1
    assert "BROKEN event 2: content changed" in text


def test_a_changed_master_patient_breaks_the_hash(runtime: Runtime) -> None:
    _events(runtime, 2)
    with runtime.db.write() as s:
        s.execute(update(AuditEvent).where(AuditEvent.id == 1).values(master_id=999))
    report = _verify(runtime)
    assert [(p.event_id, p.what.split(":")[0]) for p in report.problems] == [(1, "content changed")]


def test_a_deleted_event_is_named_by_its_id(runtime: Runtime) -> None:
    _events(runtime, 4)
    with runtime.db.write() as s:
        s.execute(delete(AuditEvent).where(AuditEvent.id.in_([2, 3])))
    [problem] = _verify(runtime).problems
    assert problem.event_id == 4
    assert "event(s) 2-3 deleted" in problem.what


def test_deleting_the_oldest_events_without_a_signed_purge_is_found(runtime: Runtime) -> None:
    _events(runtime, 3)
    with runtime.db.write() as s:
        s.execute(delete(AuditEvent).where(AuditEvent.id == 1))
    [problem] = _verify(runtime).problems
    assert problem.event_id == 2 and "without a signed purge" in problem.what


def test_a_chain_rebuilt_without_the_key_is_caught_by_the_checkpoint(runtime: Runtime) -> None:
    _events(runtime, 3)
    assert write_checkpoint(runtime.db, runtime.settings) is not None
    _events(runtime, 3, start=3)
    assert write_checkpoint(runtime.db, runtime.settings) is not None
    _events(runtime, 1, start=6)
    # Someone with write access to the index changes event 5 and recomputes every hash after it.
    with runtime.db.write() as s:
        rows = list(s.execute(select(AuditEvent).order_by(AuditEvent.id)).scalars())
        rows[4].outcome = "denied"
        prev = rows[3].hash
        for e in rows[4:]:
            e.prev_hash = prev
            e.hash = audit.content_hash(e)
            prev = e.hash
    assert audit.verify(runtime.db.sessions().__enter__()) == (True, None)  # the bare chain is fooled ...
    report = _verify(runtime)
    [problem] = report.problems  # ... the second checkpoint is not, and the first still holds
    assert problem.event_id == 6 and problem.checkpoint_id == 2
    assert "chain rebuilt" in problem.what and "events 4-6" in problem.what
    code, text = _cli(runtime, "verify")
    assert code == 1 and "BROKEN event 6, checkpoint 2: chain rebuilt" in text


def test_a_checkpoint_signed_by_another_key_or_deleted_is_found(runtime: Runtime, tmp_path: Path) -> None:
    _events(runtime, 1)
    write_checkpoint(runtime.db, runtime.settings)
    _events(runtime, 1, start=1)
    write_checkpoint(runtime.db, runtime.settings)
    _events(runtime, 1, start=2)
    write_checkpoint(runtime.db, runtime.settings)
    other = runtime.settings.model_copy(update={"audit_signing_key": str(tmp_path / "other.pem")})
    (tmp_path / "other.pem").write_bytes(_new_key_pem())
    _events(runtime, 1, start=3)
    forged = write_checkpoint(runtime.db, other)
    assert forged is not None
    with runtime.db.write() as s:
        s.execute(delete(AuditCheckpoint).where(AuditCheckpoint.id == 2))
    problems = {(p.checkpoint_id, p.what.split(" (")[0]) for p in _verify(runtime).problems}
    assert (3, "does not follow the checkpoint before it") in problems
    assert any(cid == forged.id and what.startswith("signed by unknown key") for cid, what in problems)


def _new_key_pem() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def test_purge_drops_expired_events_and_the_kept_chain_still_verifies(runtime: Runtime) -> None:
    _events(runtime, 3)
    write_checkpoint(runtime.db, runtime.settings)
    _events(runtime, 2, start=3)
    with runtime.db.sessions() as s:
        fourth = s.execute(select(AuditEvent.at).where(AuditEvent.id == 4)).scalar_one()
    days = runtime.settings.audit_retention_days
    result = purge(runtime.db, runtime.settings, now=fourth + timedelta(days=days))
    assert result.purged == 3 and result.anchor is not None and result.anchor.event_id == 3
    _events(runtime, 1, start=5)
    report = _verify(runtime)
    assert report.intact, report.problems
    assert (report.first_event, report.last_event, report.anchor) == (4, 6, result.anchor.id)
    # Far in the future everything is expired, yet the newest event stays so the chain goes on.
    later = purge(runtime.db, runtime.settings, now=fourth + timedelta(days=10 * days))
    assert later.purged == 2
    _events(runtime, 1, start=6)
    assert _verify(runtime).intact
    assert audit.verify(runtime.db.sessions().__enter__()) == (True, None)


def test_purge_refuses_a_broken_chain_and_deletes_nothing(runtime: Runtime) -> None:
    _events(runtime, 3)
    with runtime.db.write() as s:
        s.execute(update(AuditEvent).where(AuditEvent.id == 1).values(detail="edited"))
    with pytest.raises(PurgeRefused) as refused:
        purge(runtime.db, runtime.settings, now=audit.utcnow() + timedelta(days=5000))
    assert refused.value.event_id == 1
    with runtime.db.sessions() as s:
        assert len(list(s.execute(select(AuditEvent.id)).scalars())) == 3


def test_retention_below_six_months_is_refused(tmp_path: Path) -> None:
    env = {"ARCHIPEL_AUDIT_RETENTION_DAYS": "30"}
    r = archipel_cmd("audit", "purge", data=tmp_path / "data", env=env, check=False)
    assert r.returncode != 0
    assert "audit_retention_days" in r.stderr and "183" in r.stderr


@sqlite_only
def test_the_running_scheduler_signs_the_head_after_enough_events(runtime: Runtime) -> None:
    settings = runtime.settings.model_copy(
        update={"audit_checkpoint_events": 3, "audit_checkpoint_seconds": 3600}
    )
    scheduler = CheckpointScheduler(runtime.db, settings, poll_seconds=0.05).start()
    try:
        _events(runtime, 3)

        def signed_head() -> bool:
            with runtime.db.sessions() as s:
                return s.execute(
                    select(AuditCheckpoint.event_id).where(AuditCheckpoint.kind == "head")
                ).first() == (3,)

        wait_until(signed_head, what="a checkpoint of event 3")
    finally:
        scheduler.stop()
    assert _verify(runtime).intact


@sqlite_only
def test_the_signing_key_is_private_to_its_owner(runtime: Runtime) -> None:
    _events(runtime, 1)
    write_checkpoint(runtime.db, runtime.settings)
    key = runtime.settings.data_dir / "audit-signing.pem"
    assert os.stat(key).st_mode & 0o777 == 0o600
