"""In-app notifications: a professional sees, reads and acknowledges their own; nobody else sees them."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from archipel.app import create_app
from archipel.platform import inbox
from archipel.platform.audit import AuditEvent
from archipel.platform.authn import Principal
from archipel.platform.db import utcnow
from archipel.platform.http import current_principal
from archipel.platform.runtime import Runtime


def _client(principal: Principal) -> TestClient:
    app = create_app()
    app.dependency_overrides[current_principal] = lambda: principal
    return TestClient(app)


def _user(name: str, role: str = "radiologist") -> Principal:
    return Principal(name, role, "SITE-A", auth_time=utcnow(), method="password+totp")


def _notify(rt: Runtime, username: str, **kw: object) -> int:
    with rt.db.write() as s:
        return inbox.notify_user(
            s, username, kind="critical-result", title="Critical result", body="b", **kw
        ).id  # type: ignore[arg-type]


def test_a_critical_result_is_listed_first_and_stays_open_until_acknowledged(runtime: Runtime) -> None:
    plain = _notify(runtime, "dr-requester")
    critical = _notify(runtime, "dr-requester", requires_ack=True, link="/app/study.html?study=1.2.3")
    c = _client(_user("dr-requester"))
    got = c.get("/api/inbox").json()
    assert (got["unread"], got["awaiting_ack"]) == (2, 1)
    assert [n["id"] for n in got["notifications"]] == [critical, plain]
    with runtime.db.sessions() as s:
        assert [n.id for n in inbox.awaiting_acknowledgement(s, kind="critical-result")] == [critical]

    r = c.post(f"/api/inbox/{critical}/acknowledge")
    assert r.status_code == 200, r.text
    first = r.json()
    assert first["acknowledged_by"] == "dr-requester" and first["read_at"] is not None
    again = c.post(f"/api/inbox/{critical}/acknowledge").json()
    assert again["acknowledged_at"] == first["acknowledged_at"]
    with runtime.db.sessions() as s:
        assert inbox.awaiting_acknowledgement(s) == []

    # A notification that asks for no acknowledgement cannot be acknowledged; it can be read.
    r = c.post(f"/api/inbox/{plain}/acknowledge")
    assert r.status_code == 409 and "needs no acknowledgement" in r.json()["detail"]
    assert c.post(f"/api/inbox/{plain}/read").status_code == 200
    got = c.get("/api/inbox").json()
    assert (got["unread"], got["awaiting_ack"]) == (0, 0)
    assert c.get("/api/inbox", params={"unread": "true"}).json()["notifications"] == []


def test_another_user_cannot_see_read_or_acknowledge_my_notifications(runtime: Runtime) -> None:
    mine = _notify(runtime, "dr-owner", requires_ack=True)
    for other in (_user("dr-other"), _user("chief", "admin")):
        c = _client(other)
        assert c.get("/api/inbox").json() == {
            "unread": 0,
            "awaiting_ack": 0,
            "latest": 0,
            "notifications": [],
        }
        for step in ("read", "acknowledge"):
            r = c.post(f"/api/inbox/{mine}/{step}")
            assert r.status_code == 404 and r.json()["detail"] == f"no notification {mine}"
    with runtime.db.sessions() as s:
        n = s.get(inbox.Notification, mine)
        assert n is not None and n.read_at is None and n.acknowledged_at is None
        probes = s.scalars(
            select(AuditEvent).where(AuditEvent.action == "update:inbox", AuditEvent.object == str(mine))
        ).all()
    assert {e.actor for e in probes} == {"dr-other", "chief"}


def test_patients_have_no_professional_inbox(runtime: Runtime) -> None:
    c = _client(Principal("patient-1", "patient", kind="patient"))
    r = c.get("/api/inbox")
    assert r.status_code == 403 and "professionals" in r.json()["detail"]


def test_a_notification_needs_a_recipient_and_a_short_title(runtime: Runtime) -> None:
    with runtime.db.write() as s:
        for bad in ({"username": ""}, {"title": "x" * 300}):
            args = {"username": "dr-a", "title": "t", **bad}
            try:
                inbox.notify_user(s, args["username"], kind="sla", title=args["title"], body="")
            except ValueError:
                continue
            raise AssertionError(f"accepted {bad}")


def test_the_bell_polls_counts_that_name_no_patient_and_are_not_audited(runtime: Runtime) -> None:
    c = _client(_user("dr-bell"))
    assert c.get("/api/inbox/counts").json() == {"unread": 0, "awaiting_ack": 0, "latest": 0}
    first = _notify(runtime, "dr-bell", requires_ack=True)
    _notify(runtime, "someone-else")
    with runtime.db.sessions() as s:
        events_before = s.execute(select(func.count()).select_from(AuditEvent)).scalar_one()
    assert c.get("/api/inbox/counts").json() == {"unread": 1, "awaiting_ack": 1, "latest": first}
    with runtime.db.sessions() as s:
        assert s.execute(select(func.count()).select_from(AuditEvent)).scalar_one() == events_before
    # The list the bell then fetches carries the same latest id, so the page knows it is up to date.
    assert c.get("/api/inbox").json()["latest"] == first
