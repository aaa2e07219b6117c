"""Notify reaches people outside the platform: e-mail over a real SMTP server, SMS through an e-mail gateway or
an HTTP gateway; a failed delivery stays queued with its error."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from archipel.platform import notify
from archipel.platform.runtime import Runtime
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


def test_sms_go_to_an_http_gateway_as_json(runtime: Runtime) -> None:
    received: list[dict[str, str]] = []

    class Gateway(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(202)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        _queue(runtime, "sms", "+33600000000")
        url = f"http://127.0.0.1:{server.server_address[1]}/send"
        assert notify.deliver_pending(runtime.db, notify.sender_for(url, runtime.settings.data_dir)) == 1
    finally:
        server.shutdown()
        server.server_close()
    assert received == [
        {
            "channel": "sms",
            "to": "+33600000000",
            "subject": "Your results",
            "body": "Your one-time code is 123456",
        }
    ]
