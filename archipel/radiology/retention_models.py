"""Tables of the storage lifecycle's end: legal holds that block deletion, and instances rejected by an IOCM
rejection note.

A rejected instance leaves ``instances`` in the transaction that stores its rejection note, and its facts move
here: every read path (QIDO-RS, C-FIND, WADO-RS, C-MOVE/C-GET, the study views) works on ``instances`` and so stops
showing it at once, while its blob stays named (the orphan sweep keeps it) until the retention run deletes it. A
row with no ``blob_key`` records a rejection that arrived before its instance: a later store is refused.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from archipel.platform.db import Base, UTCDateTime, utcnow
from archipel.radiology.models import UID

PATIENT_HOLD, STUDY_HOLD = "patient", "study"
HOLD_SCOPES = (PATIENT_HOLD, STUDY_HOLD)


class LegalHold(Base):
    """A hold on a patient (``issuer/PatientID``, covering every identity of its master) or a study: while it is
    not lifted, the retention run deletes nothing it covers."""

    __tablename__ = "legal_holds"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scope: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(160), index=True)
    reason: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    lifted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True, index=True)
    lifted_by: Mapped[str] = mapped_column(String(128), default="")
    lift_reason: Mapped[str] = mapped_column(Text, default="")


class RejectedInstance(Base):
    """An instance a rejection note rejected: the note, the reason code (DCM 113001...), and where its bytes are."""

    __tablename__ = "rejected_instances"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_uid: Mapped[str] = mapped_column(UID, unique=True)
    sop_class_uid: Mapped[str] = mapped_column(UID, default="")
    study_uid: Mapped[str] = mapped_column(UID, index=True)
    series_uid: Mapped[str] = mapped_column(UID, default="")
    code: Mapped[str] = mapped_column(String(16))
    note_uid: Mapped[str] = mapped_column(UID, index=True)
    rejected_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    #: The instance's blob while it is kept; ``None`` when it was never stored here or once deleted.
    blob_key: Mapped[str | None] = mapped_column(String(128), nullable=True)
    sha256: Mapped[str] = mapped_column(String(64), default="")
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    #: When the retention run deleted its bytes (the row stays, so a later store is still refused).
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
