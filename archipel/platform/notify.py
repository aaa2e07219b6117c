"""Messages to people (one-time codes, results letters): an outbox table and pluggable senders.

A message is first written to the outbox in the caller's transaction, then handed to the configured sender.
Once sent, its body is blanked in the outbox, so one-time codes do not linger in the database; logs carry the
message id and channel only, never the recipient or the body.

Senders are chosen by URL scheme (``notify_url``): empty or ``file://DIR`` writes one file per message (the
default, in DATA/outbox, mode 0600); ``smtp(s)://`` and ``http(s)://`` (an SMS gateway) are in
``notify_senders``; other schemes register with :func:`register_sender`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

from sqlalchemy import Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from archipel.platform.db import Base, Database, UTCDateTime, utcnow

log = logging.getLogger("archipel.notify")

CHANNELS = ("email", "sms")
#: Deliveries tried before a message is left for an operator to look at (its error stays in the outbox).
MAX_ATTEMPTS = 10
#: How long a sweep holds a message while sending it (an SMTP exchange takes seconds, not minutes).
LEASE = timedelta(minutes=5)


class OutboxMessage(Base):
    """A message waiting to be sent, or sent (then without its body)."""

    __tablename__ = "notify_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    recipient: Mapped[str] = mapped_column(String(255))
    subject: Mapped[str] = mapped_column(String(255), default="")
    body: Mapped[str] = mapped_column(Text, default="")
    purpose: Mapped[str] = mapped_column(String(32), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(String(255), default="")
    #: Until when a sweep holds the message while it sends it; another sweep leaves it alone meanwhile.
    leased_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


@dataclass(frozen=True)
class Message:
    """What a sender delivers."""

    id: int
    channel: str
    recipient: str
    subject: str
    body: str


class Sender(Protocol):
    """Delivers one message, or raises."""

    def send(self, message: Message) -> None: ...


class FileSender:
    """Writes each message to ``DIR/<id>-<channel>.txt`` (mode 0600, fsynced): the embedded default."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def send(self, message: Message) -> None:
        """Write ``message`` as a small RFC 822-like text file."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{message.id:08d}-{message.channel}.txt"
        text = f"To: {message.recipient}\nSubject: {message.subject}\n\n{message.body}\n"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


_factories: dict[str, Callable[[str, Path], Sender]] = {
    "file": lambda url, data_dir: FileSender(Path(urlparse(url).path)),
}


def register_sender(scheme: str, factory: Callable[[str, Path], Sender]) -> None:
    """Make ``notify_url``s of ``scheme`` use senders built by ``factory(url, data_dir)``."""
    _factories[scheme] = factory


def sender_for(url: str, data_dir: Path) -> Sender:
    """The sender configured by ``url`` (empty: files in ``data_dir/outbox``)."""
    if not url:
        return FileSender(data_dir / "outbox")
    # The platform's own network senders (SMTP, webhook) register themselves on import.
    from archipel.platform import notify_senders  # noqa: F401

    scheme = urlparse(url).scheme
    factory = _factories.get(scheme)
    if factory is None:
        raise ValueError(f"no notify sender for scheme {scheme!r}; known: {', '.join(sorted(_factories))}")
    return factory(url, data_dir)


def enqueue(s: Session, channel: str, recipient: str, subject: str, body: str, purpose: str) -> OutboxMessage:
    """Put a message in the outbox, in the caller's transaction."""
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}; choose one of: {', '.join(CHANNELS)}")
    message = OutboxMessage(
        channel=channel,
        recipient=recipient,
        subject=subject,
        body=body,
        purpose=purpose,
        attempts=0,
        error="",
    )
    s.add(message)
    s.flush()
    return message


def _lease(db: Database, message_id: int, now: datetime) -> OutboxMessage | None:
    """Take the message for one delivery attempt, unless it was sent or another sweep holds it."""
    with db.write() as s:
        row = s.get(OutboxMessage, message_id)
        if (
            row is None
            or row.sent_at is not None
            or (row.leased_until is not None and row.leased_until > now)
        ):
            return None
        row.leased_until = now + LEASE
        s.flush()
        s.expunge(row)
        return row


def deliver_pending(db: Database, sender: Sender, limit: int = 100) -> int:
    """Send unsent messages, oldest first; return how many went out. Failures stay queued with their error.

    Several sweeps may run at once (periodic runs, an immediate delivery, two workers): each message is leased
    before it is sent, so it goes out once."""
    with db.session() as s:
        pending = list(
            s.execute(
                select(OutboxMessage.id)
                .where(OutboxMessage.sent_at.is_(None), OutboxMessage.attempts < MAX_ATTEMPTS)
                .order_by(OutboxMessage.id)
                .limit(limit)
            ).scalars()
        )
    sent = 0
    for message_id in pending:
        row = _lease(db, message_id, utcnow())
        if row is None:
            continue
        message = Message(row.id, row.channel, row.recipient, row.subject, row.body)
        error = ""
        try:
            sender.send(message)
        except Exception as exc:
            error = f"{type(exc).__name__}"[:255]
            log.warning("event=notify_failed id=%d channel=%s error=%s", row.id, row.channel, error)
        with db.write() as s:
            fresh = s.get(OutboxMessage, row.id)
            if fresh is None or fresh.sent_at is not None:
                continue
            fresh.attempts += 1
            fresh.error = error
            fresh.leased_until = None
            if not error:
                fresh.sent_at = utcnow()
                fresh.body = ""
                sent += 1
                log.info("event=notify_sent id=%d channel=%s purpose=%s", row.id, row.channel, row.purpose)
    return sent
