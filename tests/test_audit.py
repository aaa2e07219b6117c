"""The audit trail is append-only in effect: any change or deletion breaks the hash chain."""

from __future__ import annotations

from sqlalchemy import delete, update

from archipel.platform import audit
from archipel.platform.authn import Principal
from archipel.platform.runtime import Runtime

WHO = Principal(subject="dr-test", role="radiologist", site="SITE-A")


def _three_events(rt: Runtime) -> None:
    for n in range(3):
        audit.record(rt.db, WHO, audit.QUERY, "search:study", patient=f"SITE-A/P{n}")


def test_an_untouched_chain_verifies(runtime: Runtime) -> None:
    _three_events(runtime)
    with runtime.db.sessions() as s:
        assert audit.verify(s) == (True, None)


def test_a_changed_event_is_found_where_it_was_changed(runtime: Runtime) -> None:
    _three_events(runtime)
    with runtime.db.write() as s:
        s.execute(update(audit.AuditEvent).where(audit.AuditEvent.id == 2).values(outcome="denied"))
    with runtime.db.sessions() as s:
        assert audit.verify(s) == (False, 2)


def test_a_deleted_event_breaks_the_chain_at_its_successor(runtime: Runtime) -> None:
    _three_events(runtime)
    with runtime.db.write() as s:
        s.execute(delete(audit.AuditEvent).where(audit.AuditEvent.id == 2))
    with runtime.db.sessions() as s:
        assert audit.verify(s) == (False, 3)
