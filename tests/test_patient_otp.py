"""A patient's one-time code: only that message is sent, after the answer and within a short timeout, and a
valid access code gets at most ``patient_otp_sends_per_hour`` codes an hour."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from archipel.platform import notify
from archipel.platform.patient_access import issue_access_code
from archipel.platform.runtime import Runtime
from tests.auth_helpers import Clock, denied_events
from tests.support import ArchipelServer, wait_until

REF = "SITE-A/PO0001"


def _code(runtime: Runtime, clock: Clock) -> str:
    with runtime.db.write() as s:
        return issue_access_code(
            s, REF, "email", "otp.test@example.org", now=clock.now, valid_for=timedelta(days=9)
        )


def _outbox(runtime: Runtime) -> list[notify.OutboxMessage]:
    with runtime.db.sessions() as s:
        rows = list(s.execute(select(notify.OutboxMessage).order_by(notify.OutboxMessage.id)).scalars())
        for row in rows:
            s.expunge(row)
        return rows


def _last_otp(runtime: Runtime) -> str:
    last = sorted((runtime.settings.data_dir / "outbox").iterdir())[-1]
    found = re.search(r"one-time code is (\d{6})", last.read_text())
    assert found is not None
    return found.group(1)


def test_the_request_sends_its_own_one_time_code_and_leaves_the_rest_of_the_outbox_to_the_sweep(
    runtime: Runtime, clock: Clock, http: TestClient
) -> None:
    with runtime.db.write() as s:
        older = notify.enqueue(s, "email", "gp@example.org", "Results", "ready", purpose="test").id
    code = _code(runtime, clock)

    assert http.post("/api/patient/access", json={"code": code}).status_code == 200

    waiting, otp = _outbox(runtime)
    assert waiting.id == older and (waiting.sent_at, waiting.attempts, waiting.body) == (None, 0, "ready")
    assert otp.purpose == "patient-otp" and otp.sent_at == clock.now and otp.body == ""
    [written] = (runtime.settings.data_dir / "outbox").iterdir()
    assert "To: otp.test@example.org" in written.read_text()


def test_one_time_codes_are_capped_per_access_code_and_the_cap_is_not_a_failed_attempt(
    runtime: Runtime, clock: Clock, http: TestClient
) -> None:
    runtime.settings.patient_otp_sends_per_hour = 3
    code = _code(runtime, clock)
    for _ in range(3):
        assert http.post("/api/patient/access", json={"code": code}).status_code == 200
        clock.advance(minutes=9)
    capped = http.post("/api/patient/access", json={"code": code})
    assert capped.status_code == 429
    assert capped.json()["detail"].startswith("too many one-time codes sent for this access code")
    # the first code went out at 08:00, it is now 08:27: the next one may go at 09:00
    assert capped.headers["retry-after"] == str(33 * 60)
    assert [e.detail for e in denied_events(runtime, "patient-access")] == [capped.json()["detail"]]
    assert len(_outbox(runtime)) == 3  # nothing queued for the refused request
    # The refusal does not lock the code: the last one-time code still opens a session.
    r = http.post("/api/patient/verify", json={"code": code, "otp": _last_otp(runtime)})
    assert r.status_code == 200, r.text
    clock.advance(minutes=33, seconds=1)  # the first send is more than an hour old
    assert http.post("/api/patient/access", json={"code": code}).status_code == 200
    other = _code(runtime, clock)  # the cap is per access code
    assert http.post("/api/patient/access", json={"code": other}).status_code == 200


class _SilentMailServer:
    """Accepts TCP connections and never says a word (an SMTP server stuck before its greeting)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def silent_smtp() -> Iterator[_SilentMailServer]:
    server = _SilentMailServer()
    try:
        yield server
    finally:
        server.close()


@pytest.mark.e2e
def test_a_mail_server_that_never_answers_does_not_delay_the_patients_sign_in(
    tmp_path: Path, silent_smtp: _SilentMailServer
) -> None:
    env = {
        "ARCHIPEL_NOTIFY_URL": f"smtp://127.0.0.1:{silent_smtp.port}?from=archipel@example.org",
        "ARCHIPEL_PATIENT_OTP_SEND_SECONDS": "4",
        "ARCHIPEL_NOTIFY_SWEEP_SECONDS": "3600",  # the sweep stays out of this test
    }
    srv = ArchipelServer(tmp_path / "data", env=env)
    from archipel.platform.db import utcnow

    with srv.index().write() as s:
        code = issue_access_code(
            s, REF, "email", "otp.test@example.org", now=utcnow(), valid_for=timedelta(days=9)
        )
    srv.start()
    try:

        def outbox_row() -> notify.OutboxMessage:
            with srv.index().sessions() as s:
                row = s.execute(select(notify.OutboxMessage)).scalar_one()
                s.expunge(row)
            return row

        started = time.monotonic()
        r = httpx.post(srv.url + "/api/patient/access", json={"code": code}, timeout=30)
        assert r.status_code == 200, r.text
        # The answer came while the server still waits for the mail server's greeting: nothing is recorded
        # yet about the delivery (a send inside the request would have recorded its failed attempt first).
        pending = outbox_row()
        assert (pending.attempts, pending.error, pending.sent_at) == (0, "", None)
        assert time.monotonic() - started < 4

        wait_until(lambda: outbox_row().attempts == 1, timeout=14, what="the timed-out delivery attempt")
        gave_up = time.monotonic() - started
        row = outbox_row()
        assert row.sent_at is None and row.error == "SMTPServerDisconnected"  # smtplib: "timed out"
        assert row.body  # kept for the outbox sweep
        # 4 s of ARCHIPEL_PATIENT_OTP_SEND_SECONDS, not the senders' 15 s
        assert gave_up < 12, f"the send gave up after {gave_up:.1f}s"
    finally:
        srv.stop()
