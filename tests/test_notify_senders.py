"""Notify reaches people outside the platform: e-mail over a real SMTP server, SMS through an e-mail gateway or
an HTTP gateway; a failed delivery stays queued with its error."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient
from sqlalchemy import select

from archipel.platform import notify, notify_tasks
from archipel.platform.patient_access import issue_access_code
from archipel.platform.runtime import Runtime
from tests.auth_helpers import Clock
from tests.support import free_port


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[int, _Inbox]]:
    inbox = _Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, inbox
    finally:
        controller.stop()


def _queue(runtime: Runtime, channel: str, recipient: str) -> None:
    with runtime.db.write() as s:
        notify.enqueue(s, channel, recipient, "Your results", "Your one-time code is 123456", purpose="test")


def test_email_goes_out_over_smtp_and_its_body_leaves_the_outbox(
    runtime: Runtime, smtp: tuple[int, _Inbox]
) -> None:
    port, inbox = smtp
    _queue(runtime, "email", "someone@example.org")
    sender = notify.sender_for(
        f"smtp://127.0.0.1:{port}?from=archipel@example.org", runtime.settings.data_dir
    )

    assert notify.deliver_pending(runtime.db, sender) == 1

    [(to, raw)] = inbox.messages
    mail = message_from_bytes(raw)
    assert to == ["someone@example.org"] and mail["From"] == "archipel@example.org"
    assert mail["Subject"] == "Your results" and "123456" in mail.get_payload()
    with runtime.db.sessions() as s:
        row = s.execute(select(notify.OutboxMessage)).scalar_one()
    assert row.sent_at is not None and row.body == ""


def test_sms_go_through_the_email_gateway_of_the_sms_domain(
    runtime: Runtime, smtp: tuple[int, _Inbox]
) -> None:
    port, inbox = smtp
    _queue(runtime, "sms", "+33 6 00 00 00 00")
    url = f"smtp://127.0.0.1:{port}?from=archipel@example.org&sms_domain=sms.example.org"

    assert notify.deliver_pending(runtime.db, notify.sender_for(url, runtime.settings.data_dir)) == 1
    assert inbox.messages[0][0] == ["+33600000000@sms.example.org"]


def test_an_sms_without_a_gateway_or_an_unreachable_server_stays_queued_with_its_error(
    runtime: Runtime,
) -> None:
    _queue(runtime, "sms", "+33600000000")
    no_gateway = notify.sender_for("smtp://127.0.0.1:1?from=a@example.org", runtime.settings.data_dir)
    assert notify.deliver_pending(runtime.db, no_gateway) == 0
    _queue(runtime, "email", "someone@example.org")
    down = notify.sender_for(f"smtp://127.0.0.1:{free_port()}?from=a@example.org", runtime.settings.data_dir)
    assert notify.deliver_pending(runtime.db, down) == 0
    with runtime.db.sessions() as s:
        rows = s.execute(select(notify.OutboxMessage).order_by(notify.OutboxMessage.id)).scalars().all()
    assert [(r.sent_at, r.error) for r in rows] == [
        (None, "UndeliverableMessage"),
        (None, "ConnectionRefusedError"),
    ]
    assert all(r.body for r in rows)  # kept for the next attempt


def test_an_smtp_url_without_a_sender_address_is_refused(runtime: Runtime) -> None:
    with pytest.raises(ValueError, match="from=ADDRESS"):
        notify.sender_for("smtp://127.0.0.1:25", runtime.settings.data_dir)


class _Gateway:
    """A local SMS gateway: records the JSON of each POST and answers 202."""

    def __init__(self) -> None:
        self.received: list[dict[str, str]] = []
        self.paths: list[str] = []
        received, paths = self.received, self.paths

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                paths.append(self.path)
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(202)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/send"


@pytest.fixture
def gateway() -> Iterator[_Gateway]:
    gw = _Gateway()
    thread = threading.Thread(target=gw.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield gw
    finally:
        gw.server.shutdown()
        gw.server.server_close()


def test_sms_go_to_an_http_gateway_as_json(runtime: Runtime, gateway: _Gateway) -> None:
    received = gateway.received
    _queue(runtime, "sms", "+33600000000")
    assert notify.deliver_pending(runtime.db, notify.sender_for(gateway.url, runtime.settings.data_dir)) == 1
    assert received == [
        {
            "channel": "sms",
            "to": "+33600000000",
            "subject": "Your results",
            "body": "Your one-time code is 123456",
        }
    ]


def test_email_over_smtp_and_sms_through_the_http_gateway_are_active_at_once(
    runtime: Runtime, clock: Clock, http: TestClient, smtp: tuple[int, _Inbox], gateway: _Gateway
) -> None:
    port, inbox = smtp
    # The default provider is a mail server nobody listens on: each channel must use its own provider.
    runtime.settings.notify_url = f"smtp://127.0.0.1:{free_port()}?from=default@example.org"
    runtime.settings.notify_email_url = f"smtp://127.0.0.1:{port}?from=archipel@example.org"
    runtime.settings.notify_sms_url = gateway.url
    with runtime.db.write() as s:
        by_mail = issue_access_code(
            s, "SITE-A/PN0001", "email", "patient.one@example.org", now=clock.now, valid_for=timedelta(days=9)
        )
        by_sms = issue_access_code(
            s, "SITE-A/PN0002", "sms", "+33611111111", now=clock.now, valid_for=timedelta(days=9)
        )

    assert http.post("/api/patient/access", json={"code": by_mail}).json()["channel"] == "email"
    assert http.post("/api/patient/access", json={"code": by_sms}).json()["channel"] == "sms"

    [(to, raw)] = inbox.messages
    mail = message_from_bytes(raw)
    assert to == ["patient.one@example.org"] and mail["From"] == "archipel@example.org"
    assert re.search(r"one-time code is \d{6}", mail.get_payload())
    [sms] = gateway.received
    assert (sms["channel"], sms["to"]) == ("sms", "+33611111111")
    assert re.search(r"one-time code is \d{6}", sms["body"])
    # The outbox sweep routes the same way: a results letter by e-mail, an alert by SMS.
    _queue(runtime, "email", "gp@example.org")
    _queue(runtime, "sms", "+33622222222")
    assert notify_tasks.deliver() == 2
    assert [m[0] for m in inbox.messages] == [["patient.one@example.org"], ["gp@example.org"]]
    assert [m["to"] for m in gateway.received] == ["+33611111111", "+33622222222"]


def test_a_channel_without_its_own_provider_uses_notify_url(runtime: Runtime, gateway: _Gateway) -> None:
    runtime.settings.notify_url = gateway.url
    runtime.settings.notify_email_url = f"file://{runtime.settings.data_dir / 'mails'}"
    assert notify.channel_urls(runtime.settings) == {
        "email": runtime.settings.notify_email_url,
        "sms": gateway.url,
    }
    _queue(runtime, "email", "someone@example.org")
    _queue(runtime, "sms", "+33600000000")
    assert notify.deliver_pending(runtime.db, notify.configured_sender(runtime.settings)) == 2
    assert [m["to"] for m in gateway.received] == ["+33600000000"]
    [mail] = (runtime.settings.data_dir / "mails").iterdir()
    assert "To: someone@example.org" in mail.read_text()
