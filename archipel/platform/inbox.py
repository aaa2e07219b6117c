"""In-app notifications for professionals: the bell of the professional portal.

A module that must tell a person something inside the platform (a critical result to its requester, an SLA
about to be missed, a second opinion answered) calls :func:`notify_user` in its own transaction. A notification
belongs to one user name; nobody else ever sees it, not even an administrator, since its title may name a
patient. Some notifications must be acknowledged (``requires_ack``): the loop of a critical result is closed
only when its recipient acknowledges it, and :func:`awaiting_acknowledgement` lists those still open so that
the sender can escalate.

Messages to people outside the platform (e-mail, SMS) go through ``notify``'s outbox instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from archipel.platform.authn import Principal
from archipel.platform.db import Base, Database, UTCDateTime, utcnow

log = logging.getLogger("archipel.inbox")

#: Longest title and link kept; longer ones are refused (the caller writes them, so this is a bug, not input).
TITLE_MAX = 255
LINK_MAX = 512


class Notification(Base):
    """One message to one professional, shown in the portal's bell until read (and acknowledged if needed)."""

    __tablename__ = "inbox_notifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    recipient: Mapped[str] = mapped_column(String(128), index=True)
    #: What it is about, for filters and icons: ``critical-result``, ``sla``, ``second-opinion``...
    kind: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(String(TITLE_MAX))
    body: Mapped[str] = mapped_column(Text, default="")
    #: A page of the web app that opens what the notification is about (``/app/study.html?study=...``).
    link: Mapped[str] = mapped_column(String(LINK_MAX), default="")
    master_id: Mapped[int | None] = mapped_column(ForeignKey("master_patients.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    requires_ack: Mapped[bool] = mapped_column(Boolean, default=False)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    acknowledged_by: Mapped[str] = mapped_column(String(128), default="")

    def as_dict(self) -> dict[str, Any]:
        """The notification as JSON-ready values."""

        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        return {
            "id": self.id,
            "kind": self.kind,
            "title": self.title,
            "body": self.body,
            "link": self.link,
            "master_id": self.master_id,
            "created_at": iso(self.created_at),
            "read_at": iso(self.read_at),
            "requires_ack": self.requires_ack,
            "acknowledged_at": iso(self.acknowledged_at),
            "acknowledged_by": self.acknowledged_by,
        }


class NotificationNotFound(LookupError):
    """No notification of that id for this user (another user's notifications do not exist for them)."""


class NoAcknowledgementNeeded(ValueError):
    """The notification does not ask to be acknowledged."""


@dataclass(frozen=True)
class Counts:
    """What the bell shows: unread notifications, those waiting for an acknowledgement, and the newest one's id
    (0: none), which tells a page polling the counts when to fetch the list again."""

    unread: int
    awaiting_ack: int
    latest: int = 0


def notify_user(
    session: Session,
    username: str,
    *,
    kind: str,
    title: str,
    body: str,
    link: str = "",
    requires_ack: bool = False,
    master: int | None = None,
) -> Notification:
    """Add a notification for ``username`` in the caller's transaction (flushed: its id is set)."""
    if not username:
        raise ValueError("a notification needs a recipient user name")
    if not kind or len(kind) > 32:
        raise ValueError(f"notification kind {kind!r} must be 1 to 32 characters")
    if not title or len(title) > TITLE_MAX:
        raise ValueError(f"notification title must be 1 to {TITLE_MAX} characters")
    if len(link) > LINK_MAX:
        raise ValueError(f"notification link must be at most {LINK_MAX} characters")
    n = Notification(
        recipient=username,
        kind=kind,
        title=title,
        body=body,
        link=link,
        master_id=master,
        requires_ack=requires_ack,
        created_at=utcnow(),
    )
    session.add(n)
    session.flush()
    log.info("event=inbox.notify id=%s kind=%s requires_ack=%s", n.id, kind, requires_ack)
    return n


def inbox(
    db: Database, principal: Principal, *, unread_only: bool = False, limit: int = 50
) -> list[Notification]:
    """The caller's notifications, newest first (those awaiting acknowledgement first of all)."""
    q = select(Notification).where(Notification.recipient == principal.subject)
    if unread_only:
        q = q.where(Notification.read_at.is_(None))
    awaiting = Notification.requires_ack & Notification.acknowledged_at.is_(None)
    q = q.order_by(awaiting.desc(), Notification.created_at.desc(), Notification.id.desc())
    with db.sessions() as s:
        return list(s.scalars(q.limit(min(max(limit, 1), 500))))


def unread_count(db: Database, principal: Principal) -> Counts:
    """How many of the caller's notifications are unread, and how many wait for an acknowledgement."""
    own = Notification.recipient == principal.subject
    with db.sessions() as s:
        unread = s.scalar(select(func.count()).where(own, Notification.read_at.is_(None))) or 0
        awaiting = (
            s.scalar(
                select(func.count()).where(
                    own, Notification.requires_ack.is_(True), Notification.acknowledged_at.is_(None)
                )
            )
            or 0
        )
        latest = s.scalar(select(func.max(Notification.id)).where(own)) or 0
    return Counts(unread=unread, awaiting_ack=awaiting, latest=latest)


def owned(db: Database, principal: Principal, notification_id: int) -> Notification:
    """The caller's notification ``notification_id``, or :class:`NotificationNotFound`."""
    with db.sessions() as s:
        n = s.get(Notification, notification_id)
    if n is None or n.recipient != principal.subject:
        raise NotificationNotFound(f"no notification {notification_id}")
    return n


def mark_read(db: Database, principal: Principal, notification_id: int) -> Notification:
    """Mark the caller's notification read (again: kept as first read)."""
    with db.write() as s:
        n = s.get(Notification, notification_id)
        if n is None or n.recipient != principal.subject:
            raise NotificationNotFound(f"no notification {notification_id}")
        if n.read_at is None:
            n.read_at = utcnow()
    return n


def acknowledge(db: Database, principal: Principal, notification_id: int) -> Notification:
    """Acknowledge the caller's notification (and mark it read). Acknowledging again keeps the first
    acknowledgement; a notification that asks for none raises :class:`NoAcknowledgementNeeded`."""
    with db.write() as s:
        n = s.get(Notification, notification_id)
        if n is None or n.recipient != principal.subject:
            raise NotificationNotFound(f"no notification {notification_id}")
        if not n.requires_ack:
            raise NoAcknowledgementNeeded(f"notification {notification_id} needs no acknowledgement")
        now = utcnow()
        if n.read_at is None:
            n.read_at = now
        if n.acknowledged_at is None:
            n.acknowledged_at = now
            n.acknowledged_by = principal.subject
            log.info("event=inbox.acknowledged id=%s kind=%s", n.id, n.kind)
    return n


def awaiting_acknowledgement(
    session: Session, *, kind: str | None = None, created_before: datetime | None = None
) -> list[Notification]:
    """Notifications that ask for an acknowledgement and have none yet, oldest first (for escalation)."""
    q = select(Notification).where(
        Notification.requires_ack.is_(True), Notification.acknowledged_at.is_(None)
    )
    if kind is not None:
        q = q.where(Notification.kind == kind)
    if created_before is not None:
        q = q.where(Notification.created_at < created_before)
    return list(session.scalars(q.order_by(Notification.created_at, Notification.id)))
