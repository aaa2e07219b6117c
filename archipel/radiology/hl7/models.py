"""Tables of the HL7 v2 intake: registered senders, accepted messages, and the dead-letter list."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from archipel.platform.db import Base, UTCDateTime, utcnow

#: Dead-letter states.
OPEN = "open"
RESOLVED = "resolved"


class Hl7Source(Base):
    """A RIS allowed to send us messages: its sending facility (MSH-4), optionally narrowed to one sending
    application (MSH-3; empty: any application of the facility), and the site (issuer) its patient IDs are of."""

    __tablename__ = "hl7_sources"
    __table_args__ = (UniqueConstraint("facility", "application"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    facility: Mapped[str] = mapped_column(String(64))
    application: Mapped[str] = mapped_column(String(64), default="")
    site: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Hl7Message(Base):
    """A message we accepted and applied, kept by sender and control id so that a resent one is acknowledged
    again without being applied twice. It holds no patient data: type, outcome and what it touched."""

    __tablename__ = "hl7_messages"
    __table_args__ = (UniqueConstraint("facility", "application", "control_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    facility: Mapped[str] = mapped_column(String(64))
    application: Mapped[str] = mapped_column(String(64))
    control_id: Mapped[str] = mapped_column(String(64))
    message_type: Mapped[str] = mapped_column(String(16))
    site: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(Text, default="")
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)


class Hl7DeadLetter(Base):
    """A message we refused (``AE``) or could not read (``AR``), with its raw bytes exactly as received, so an
    administrator can see why and replay it after a fix.

    A message over the size limit keeps only its beginning (``truncated``; ``received_size`` is what came). An
    administrator may correct the message before replaying it: the correction is kept in ``corrected`` beside the
    original ``raw``, which never changes, and a replay applies the correction."""

    __tablename__ = "hl7_dead_letters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    peer: Mapped[str] = mapped_column(String(255), default="")
    facility: Mapped[str] = mapped_column(String(64), default="")
    application: Mapped[str] = mapped_column(String(64), default="")
    control_id: Mapped[str] = mapped_column(String(64), default="")
    message_type: Mapped[str] = mapped_column(String(16), default="")
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    ack_code: Mapped[str] = mapped_column(String(2))
    reason: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(12), default=OPEN, index=True)
    replays: Mapped[int] = mapped_column(Integer, default=0)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    resolved_by: Mapped[str] = mapped_column(String(128), default="")
    truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    received_size: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), default=0)
    corrected: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    corrected_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    corrected_by: Mapped[str] = mapped_column(String(128), default="")
