"""Notify retries: a failed message waits an exponential backoff, its attempts are spread over hours, and once
they run out it is listed as failed and an operator requeues it (``archipel notify``, ``/api/admin/notify``)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient

from archipel.platform import notify
from archipel.platform.runtime import Runtime
from tests.auth_helpers import Clock, bearer, login, make_account
from tests.support import archipel_cmd, free_port


class _Inbox:
    def __init__(self) -> None:
        self.recipients: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.recipients.extend(envelope.rcpt_tos)
        return "250 OK"


class _MailServer:
    """An aiosmtpd server on a fixed port, started and stopped by the test (down, then up)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.inbox = _Inbox()
        self.controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}?from=archipel@example.org"

    def up(self) -> None:
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def down(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def mail() -> Iterator[_MailServer]:
    server = _MailServer()
    try:
        yield server
    finally:
        server.down()


def _queue(runtime: Runtime, recipient: str) -> int:
    with runtime.db.write() as s:
        return notify.enqueue(s, "email", recipient, "Results", "Your results are ready", purpose="test").id


def _row(runtime: Runtime, message_id: int) -> notify.OutboxMessage:
    with runtime.db.sessions() as s:
        row = s.get(notify.OutboxMessage, message_id)
        assert row is not None
        s.expunge(row)
        return row


def test_a_failed_message_waits_its_backoff_and_goes_once_the_mail_server_is_up(
    runtime: Runtime, clock: Clock, mail: _MailServer
) -> None:
    runtime.settings.notify_url = mail.url
    runtime.settings.notify_retry_seconds = 30
    message_id = _queue(runtime, "gp@example.org")
    start = clock.now

    assert notify.deliver_now(runtime.db, runtime.settings, clock) == 0  # nobody listens yet
    failed = _row(runtime, message_id)
    assert (failed.attempts, failed.error) == (1, "ConnectionRefusedError")
    assert failed.next_attempt_at == start + timedelta(seconds=30) and failed.failed_at is None

    mail.up()
    clock.advance(seconds=29)
    assert notify.deliver_now(runtime.db, runtime.settings, clock) == 0  # not due yet: not even tried
    assert _row(runtime, message_id).attempts == 1 and mail.inbox.recipients == []
    clock.advance(seconds=1)
    assert notify.deliver_now(runtime.db, runtime.settings, clock) == 1
    sent = _row(runtime, message_id)
    assert mail.inbox.recipients == ["gp@example.org"]
    assert (sent.attempts, sent.error, sent.next_attempt_at, sent.body) == (2, "", None, "")


def test_waits_double_up_to_their_cap_and_a_spent_budget_leaves_the_message_failed(
    runtime: Runtime, clock: Clock, mail: _MailServer
) -> None:
    runtime.settings.notify_url = mail.url  # down throughout
    runtime.settings.notify_max_attempts = 5
    runtime.settings.notify_retry_seconds = 30
    runtime.settings.notify_retry_max_seconds = 100
    message_id = _queue(runtime, "gp@example.org")
    waits = []
    for _ in range(5):
        assert notify.deliver_now(runtime.db, runtime.settings, clock) == 0
        row = _row(runtime, message_id)
        if row.next_attempt_at is None:
            break
        waits.append((row.next_attempt_at - clock.now).total_seconds())
        clock.now = row.next_attempt_at
    assert waits == [30, 60, 100, 100]
    row = _row(runtime, message_id)
    assert (row.attempts, row.failed_at, row.sent_at) == (5, clock.now, None) and row.body
    clock.advance(days=1)
    mail.up()
    assert notify.deliver_now(runtime.db, runtime.settings, clock) == 0  # failed: the sweep leaves it
    assert _row(runtime, message_id).attempts == 5 and mail.inbox.recipients == []
    assert [m.id for m in notify.list_messages(runtime.db, failed_only=True)] == [message_id]


def test_the_default_budget_spreads_attempts_over_half_a_day() -> None:
    policy = notify.Retry()
    total = sum((policy.wait_after(n) for n in range(1, policy.max_attempts)), timedelta())
    assert policy.max_attempts == 20 and policy.wait_after(1) == timedelta(seconds=30)
    assert timedelta(hours=12) < total < timedelta(hours=14)
    assert policy.wait_after(19) == timedelta(hours=1)


def test_failed_messages_are_listed_and_requeued_from_the_command_line(
    runtime: Runtime, clock: Clock, mail: _MailServer
) -> None:
    runtime.settings.notify_url = mail.url
    runtime.settings.notify_max_attempts = 1
    lost = _queue(runtime, "lost.recipient@example.org")
    assert notify.deliver_now(runtime.db, runtime.settings, clock) == 0  # down: failed at once
    waiting = _queue(runtime, "waiting.recipient@example.org")
    env = {"ARCHIPEL_DATABASE_URL": runtime.settings.effective_database_url, "ARCHIPEL_NOTIFY_URL": mail.url}

    def cli(*args: str) -> Any:
        return archipel_cmd("notify", *args, data=runtime.settings.data_dir, env=env, check=False)

    listed = cli("list", "--failed")
    assert listed.returncode == 0, listed.stderr[-2000:]
    header, *lines = listed.stdout.strip().splitlines()
    assert header.split("\t")[:4] == ["id", "state", "channel", "to"]
    assert [line.split("\t")[:4] for line in lines] == [[str(lost), "failed", "email", "l***@example.org"]]
    assert "ConnectionRefusedError" in lines[0]
    assert "lost.recipient" not in listed.stdout and "Your results" not in listed.stdout
    every = cli("list").stdout.strip().splitlines()[1:]
    assert [(line.split("\t")[0], line.split("\t")[1]) for line in every] == [
        (str(waiting), "waiting"),
        (str(lost), "failed"),
    ]

    assert cli("retry").returncode != 0  # neither ids nor --all-failed
    unknown = cli("retry", "999999")
    assert unknown.returncode == 2 and "no message 999999" in unknown.stderr

    mail.up()
    done = cli("retry", str(lost), "--now")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "1 message(s) requeued" in done.stderr and "1 sent now" in done.stderr
    assert mail.inbox.recipients == ["lost.recipient@example.org"]
    row = _row(runtime, lost)
    assert row.sent_at is not None and row.failed_at is None and row.body == ""
    assert cli("list", "--failed").stdout.strip().splitlines()[1:] == []
    again = cli("retry", str(lost))
    assert again.returncode == 2 and "sent already" in again.stderr


def test_all_failed_messages_are_requeued_at_once_and_the_sweep_sends_them(
    runtime: Runtime, clock: Clock, mail: _MailServer
) -> None:
    runtime.settings.notify_url = mail.url
    runtime.settings.notify_max_attempts = 1
    ids = [_queue(runtime, f"r{n}@example.org") for n in range(3)]
    assert notify.deliver_now(runtime.db, runtime.settings, clock) == 0
    env = {"ARCHIPEL_DATABASE_URL": runtime.settings.effective_database_url}
    done = archipel_cmd(
        "notify", "retry", "--all-failed", data=runtime.settings.data_dir, env=env, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"3 message(s) requeued: {' '.join(map(str, ids))}" in done.stderr
    mail.up()
    assert notify.deliver_now(runtime.db, runtime.settings, clock) == 3
    assert sorted(mail.inbox.recipients) == [f"r{n}@example.org" for n in range(3)]


def test_an_administrator_lists_and_requeues_failed_messages_over_http(
    runtime: Runtime, clock: Clock, http: TestClient, mail: _MailServer
) -> None:
    runtime.settings.notify_url = mail.url
    runtime.settings.notify_max_attempts = 1
    lost = _queue(runtime, "lost.recipient@example.org")
    assert notify.deliver_now(runtime.db, runtime.settings, clock) == 0
    admin = make_account(runtime, "notify-admin", role="admin", site="")
    other = make_account(runtime, "notify-radiologist", role="radiologist")
    as_admin = bearer(login(http, admin, clock.now).json()["access_token"])
    as_other = bearer(login(http, other, clock.now).json()["access_token"])

    assert http.get("/api/admin/notify/outbox?failed=true", headers=as_other).status_code == 403
    assert http.post(f"/api/admin/notify/outbox/{lost}/retry", headers=as_other).status_code == 403
    r = http.get("/api/admin/notify/outbox?failed=true", headers=as_admin)
    assert r.status_code == 200, r.text
    [shown] = r.json()
    assert (shown["id"], shown["state"], shown["to"], shown["attempts"]) == (
        lost,
        "failed",
        "l***@example.org",
        1,
    )
    assert "body" not in shown and shown["error"] == "ConnectionRefusedError"

    assert http.post("/api/admin/notify/outbox/999999/retry", headers=as_admin).status_code == 404
    r = http.post(f"/api/admin/notify/outbox/{lost}/retry", headers=as_admin)
    assert r.status_code == 200 and r.json() == {"requeued": [lost]}
    assert http.get("/api/admin/notify/outbox?failed=true", headers=as_admin).json() == []
    mail.up()
    assert notify.deliver_now(runtime.db, runtime.settings, clock) == 1
    assert mail.inbox.recipients == ["lost.recipient@example.org"]
    assert http.post(f"/api/admin/notify/outbox/{lost}/retry", headers=as_admin).status_code == 409
    assert http.post("/api/admin/notify/outbox/retry-failed", headers=as_admin).json() == {"requeued": []}
