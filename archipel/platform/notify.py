"""Messages to people (one-time codes, results letters): an outbox table and pluggable senders.

A message is first written to the outbox in the caller's transaction, then handed to the configured sender.
A failed delivery is tried again later, with exponential backoff (:class:`Retry`: ``next_attempt_at``), until
its attempt budget is spent; it is then marked failed (``failed_at``) for an operator, who lists and requeues
failed messages (``archipel notify list --failed``, ``archipel notify retry``, ``/api/admin/notify``). Once
sent, its body is blanked in the outbox, so one-time codes do not linger in the database; logs carry the message
id and channel only, never the recipient or the body.

Senders are chosen by URL scheme (``notify_url``): empty or ``file://DIR`` writes one file per message (the
default, in DATA/outbox, mode 0600); ``smtp(s)://`` and ``http(s)://`` (an SMS gateway) are in
``notify_senders``; other schemes register with :func:`register_sender`. Each channel may have a provider of
its own (``notify_email_url``, ``notify_sms_url``; empty: ``notify_url``): :func:`configured_sender` routes
every message to its channel's sender.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlparse

from sqlalchemy import Integer, String, Text, or_, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from archipel.platform.db import Base, Database, UTCDateTime, utcnow

if TYPE_CHECKING:
    from archipel.platform.settings import Settings

log = logging.getLogger("archipel.notify")

CHANNELS = ("email", "sms")
#: Deliveries tried before a message is left for an operator to look at (its error stays in the outbox); with
#: the default backoff (30 s doubling up to an hour) the last one comes about 13 hours after the first.
MAX_ATTEMPTS = 20
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
    #: After a failed attempt, when the next one is due (the sweep leaves the message alone until then).
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: When the attempt budget ran out: no sweep sends it any more, until an operator requeues it.
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True, index=True)


@dataclass(frozen=True)
class Retry:
    """How often a failed message is tried again: ``first`` seconds after the first failure, twice as long
    after each further one, never more than ``longest``, and ``max_attempts`` attempts in all."""

    max_attempts: int = MAX_ATTEMPTS
    first: float = 30.0
    longest: float = 3600.0

    def wait_after(self, attempts: int) -> timedelta:
        """The wait before the next attempt, once ``attempts`` attempts failed."""
        exponent = min(max(attempts - 1, 0), 32)
        return timedelta(seconds=min(self.first * 2**exponent, self.longest))


def retry_policy(settings: Settings) -> Retry:
    """The retry policy of the settings (``notify_max_attempts``, ``notify_retry_seconds``,
    ``notify_retry_max_seconds``)."""
    return Retry(
        settings.notify_max_attempts, settings.notify_retry_seconds, settings.notify_retry_max_seconds
    )


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


class RoutingSender:
    """Hands each message to the sender of its channel (e-mail over SMTP and SMS through a gateway at once)."""

    def __init__(self, by_channel: Mapping[str, Sender]) -> None:
        self.by_channel = dict(by_channel)

    def send(self, message: Message) -> None:
        """Deliver ``message`` through its channel's sender; a channel without one raises (it stays queued)."""
        sender = self.by_channel.get(message.channel)
        if sender is None:
            raise LookupError(f"no sender for channel {message.channel!r}")
        sender.send(message)


def channel_urls(settings: Settings) -> dict[str, str]:
    """The provider URL of each channel: its own setting (``notify_email_url``, ``notify_sms_url``), else
    ``notify_url``."""
    own = {"email": settings.notify_email_url, "sms": settings.notify_sms_url}
    return {channel: own[channel] or settings.notify_url for channel in CHANNELS}


def configured_sender(settings: Settings, timeout: float | None = None) -> RoutingSender:
    """The sender of the settings: each channel's provider (one sender per distinct URL).

    ``timeout`` (seconds) shortens the network senders' own (e.g. for a send that a person waits for)."""
    built: dict[str, Sender] = {}
    for url in channel_urls(settings).values():
        if url not in built:
            sender = sender_for(url, settings.data_dir)
            current = getattr(sender, "timeout", None)
            if timeout is not None and isinstance(current, int | float):
                sender.timeout = min(current, timeout)  # type: ignore[attr-defined]
            built[url] = sender
    return RoutingSender({channel: built[url] for channel, url in channel_urls(settings).items()})


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


#: What a module does in the transaction that marks one of its messages sent, by purpose (:func:`after_sent`).
_after_sent: dict[str, Callable[[Session, OutboxMessage], None]] = {}


def after_sent(purpose: str, hook: Callable[[Session, OutboxMessage], None]) -> None:
    """Call ``hook(session, message)`` in the transaction that marks a message of ``purpose`` sent (a screening
    result is sent when its letters are). The hook runs in a savepoint: if it fails, the message stays sent and
    the failure is logged."""
    _after_sent[purpose] = hook


def _run_after_sent(s: Session, message: OutboxMessage) -> None:
    hook = _after_sent.get(message.purpose)
    if hook is None:
        return
    try:
        with s.begin_nested():
            hook(s, message)
    except Exception as exc:
        log.warning(
            "event=notify_after_sent_failed id=%d purpose=%s error=%s",
            message.id,
            message.purpose,
            type(exc).__name__,
        )


def deliver_pending(
    db: Database,
    sender: Sender,
    limit: int = 100,
    clock: Callable[[], datetime] = utcnow,
    retry: Retry | None = None,
) -> int:
    """Send the unsent messages that are due, oldest first; return how many went out. A failure stays queued
    with its error and its next attempt's time (``retry``), or is marked failed once its budget is spent.
    ``clock`` stamps the leases and the sent times (the runtime's clock: tests replace it).

    Several sweeps may run at once (periodic runs, an immediate delivery, two workers): each message is leased
    before it is sent, so it goes out once."""
    now = clock()
    with db.session() as s:
        pending = list(
            s.execute(
                select(OutboxMessage.id)
                .where(
                    OutboxMessage.sent_at.is_(None),
                    OutboxMessage.failed_at.is_(None),
                    or_(OutboxMessage.next_attempt_at.is_(None), OutboxMessage.next_attempt_at <= now),
                )
                .order_by(OutboxMessage.id)
                .limit(limit)
            ).scalars()
        )
    return sum(_attempt(db, sender, message_id, clock, retry or Retry()) for message_id in pending)


def deliver_now(db: Database, settings: Settings, clock: Callable[[], datetime] = utcnow) -> int:
    """:func:`deliver_pending` with the settings' senders and retry policy (what a module calls after a step
    that queued messages)."""
    return deliver_pending(db, configured_sender(settings), clock=clock, retry=retry_policy(settings))


def deliver_one(
    db: Database,
    sender: Sender,
    message_id: int,
    clock: Callable[[], datetime] = utcnow,
    retry: Retry | None = None,
) -> bool:
    """Try to send one message now (e.g. the one-time code a patient waits for), and no other; return whether
    it went out. A failure stays queued with its error for the outbox sweep."""
    return _attempt(db, sender, message_id, clock, retry or Retry())


def _attempt(
    db: Database, sender: Sender, message_id: int, clock: Callable[[], datetime], retry: Retry
) -> bool:
    """One leased delivery attempt of one message; whether it went out."""
    row = _lease(db, message_id, clock())
    if row is None:
        return False
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
            return False
        fresh.attempts += 1
        fresh.error = error
        fresh.leased_until = None
        if error:
            now = clock()
            if fresh.attempts >= retry.max_attempts:
                fresh.failed_at, fresh.next_attempt_at = now, None
                log.warning(
                    "event=notify_gave_up id=%d channel=%s purpose=%s attempts=%d error=%s",
                    fresh.id,
                    fresh.channel,
                    fresh.purpose,
                    fresh.attempts,
                    error,
                )
            else:
                fresh.next_attempt_at = now + retry.wait_after(fresh.attempts)
            return False
        fresh.next_attempt_at = None
        fresh.sent_at = clock()
        fresh.body = ""
        log.info("event=notify_sent id=%d channel=%s purpose=%s", row.id, row.channel, row.purpose)
        s.flush()
        _run_after_sent(s, fresh)
    return True


def list_messages(db: Database, *, failed_only: bool = False, limit: int = 200) -> list[OutboxMessage]:
    """Messages not yet sent, newest first: waiting ones and failed ones, or only the failed (detached rows;
    their bodies are not for display)."""
    query = select(OutboxMessage).where(OutboxMessage.sent_at.is_(None))
    if failed_only:
        query = query.where(OutboxMessage.failed_at.is_not(None))
    with db.session() as s:
        rows = list(s.execute(query.order_by(OutboxMessage.id.desc()).limit(limit)).scalars())
        for row in rows:
            s.expunge(row)
        return rows


def describe(row: OutboxMessage) -> dict[str, object]:
    """What an operator sees of a message: never its body, and its recipient only masked."""
    return {
        "id": row.id,
        "channel": row.channel,
        "to": _masked(row.channel, row.recipient),
        "purpose": row.purpose,
        "created_at": row.created_at.isoformat() if row.created_at else None,
        "state": "sent" if row.sent_at else "failed" if row.failed_at else "waiting",
        "attempts": row.attempts,
        "error": row.error,
        "next_attempt_at": row.next_attempt_at.isoformat() if row.next_attempt_at else None,
        "failed_at": row.failed_at.isoformat() if row.failed_at else None,
    }


def _masked(channel: str, contact: str) -> str:
    if channel == "email" and "@" in contact:
        local, domain = contact.split("@", 1)
        return f"{local[:1]}***@{domain}"
    return "*" * max(0, len(contact) - 2) + contact[-2:]


class NotRequeued(LookupError):
    """The message cannot be requeued: unknown (:class:`MessageNotFound`), or already sent (:class:`AlreadySent`)."""


class MessageNotFound(NotRequeued):
    """No such message in the outbox."""


class AlreadySent(NotRequeued):
    """The message went out already."""


def requeue(db: Database, message_ids: list[int] | None = None) -> list[int]:
    """Give failed messages (these, or all failed when ``None``) a new attempt budget, due now; return the
    ids requeued. An unknown or sent id raises :class:`NotRequeued`; a waiting one is made due now."""
    with db.write() as s:
        if message_ids is None:
            rows = list(
                s.execute(
                    select(OutboxMessage).where(
                        OutboxMessage.sent_at.is_(None), OutboxMessage.failed_at.is_not(None)
                    )
                ).scalars()
            )
        else:
            rows = []
            for message_id in message_ids:
                row = s.get(OutboxMessage, message_id)
                if row is None:
                    raise MessageNotFound(f"no message {message_id} in the outbox")
                if row.sent_at is not None:
                    raise AlreadySent(f"message {message_id} was sent already")
                rows.append(row)
        for row in rows:
            row.attempts, row.failed_at, row.next_attempt_at = 0, None, None
            log.info("event=notify_requeued id=%d channel=%s purpose=%s", row.id, row.channel, row.purpose)
        return [row.id for row in rows]
