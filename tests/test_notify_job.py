"""The ``notify`` job: a worker's beat sweeps the outbox, and a message that failed is sent on a later sweep."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from archipel.platform import notify, schedule
from archipel.platform.db import Database
from archipel.platform.notify_tasks import DELIVER_TASK
from tests.support import archipel_cmd, free_port, wait_until


class _Inbox:
    def __init__(self) -> None:
        self.recipients: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.recipients.extend(envelope.rcpt_tos)
        return "250 OK"


def test_the_outbox_sweep_is_a_periodic_task_on_the_notify_queue_with_a_setting_for_its_period() -> None:
    import archipel.platform.notify_tasks  # noqa: F401

    entry = schedule.beat_schedule()[DELIVER_TASK]
    assert entry["options"] == {"queue": "notify"}
    assert entry["schedule"] == 30.0

    class Fast:
        notify_sweep_seconds = 0.5

    assert schedule.beat_schedule(Fast())[DELIVER_TASK]["schedule"] == 0.5
    with pytest.raises(ValueError, match="positive"):
        schedule.every(0, "some.task", queue="notify")


@pytest.mark.e2e
def test_a_worker_with_beat_retries_a_failed_message_until_the_mail_server_answers(tmp_path: Path) -> None:
    data = tmp_path / "data"
    smtp_port = free_port()
    env = {
        "ARCHIPEL_NOTIFY_URL": f"smtp://127.0.0.1:{smtp_port}?from=archipel@example.org",
        "ARCHIPEL_NOTIFY_SWEEP_SECONDS": "0.5",
        # retried every second while the server is down (the default backoff starts at 30 s)
        "ARCHIPEL_NOTIFY_RETRY_SECONDS": "0.5",
        "ARCHIPEL_NOTIFY_RETRY_MAX_SECONDS": "1",
    }
    archipel_cmd("db", "upgrade", data=data, env=env)
    db = Database(f"sqlite:///{(data / 'index.sqlite').resolve()}")
    with db.write() as s:
        message_id = notify.enqueue(s, "email", "gp@example.org", "Results", "ready", purpose="test").id

    def outbox_row() -> notify.OutboxMessage:
        with db.session() as s:
            row = s.execute(
                select(notify.OutboxMessage).where(notify.OutboxMessage.id == message_id)
            ).scalar_one()
            s.expunge(row)
            return row

    worker = subprocess.Popen(
        [sys.executable, "-m", "archipel.cli", "worker", "--queues", "notify", "--beat", "--no-drop-folder"],
        env={**os.environ, **env, "ARCHIPEL_DATA": str(data)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    try:
        # Nobody listens on the SMTP port yet: the sweep fails, and the message stays queued with its error.
        wait_until(lambda: outbox_row().attempts >= 1, timeout=90, what="a first delivery attempt")
        failed = outbox_row()
        assert failed.sent_at is None and failed.error and failed.next_attempt_at is not None

        controller.start()
        wait_until(lambda: outbox_row().sent_at is not None, timeout=60, what="the retried delivery")
        assert inbox.recipients == ["gp@example.org"]
        assert outbox_row().body == ""
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)
        if controller.loop.is_running():
            controller.stop()
        db.dispose()
