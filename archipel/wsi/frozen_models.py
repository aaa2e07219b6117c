"""The records of a frozen section: the request with the time of each of its steps, its slides, and its
append-only events (what the streams send); the states and event kinds. The workflow is :mod:`archipel.wsi.frozen`.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, Session, mapped_column

from archipel.platform.db import Base, UTCDateTime

#: The CAP checklist's target: 90 % of frozen sections answered within 20 minutes.
TARGET_MINUTES = 20
#: How long the requester's and the claim holder's care relationships last (the follow-up of the case).
FOLLOW_UP = timedelta(days=30)
#: Request states, in order.
REQUESTED, SCANNED, CLAIMED, ANSWERED, SEEN = "requested", "scanned", "claimed", "answered", "seen"
#: Event kinds.
EV_REQUESTED, EV_SLIDE, EV_VIEWED, EV_CLAIMED, EV_RELEASED = (
    "requested",
    "slide-attached",
    "first-view",
    "claimed",
    "released",
)
EV_VERDICT, EV_SEEN, EV_AMENDED = "verdict", "seen", "amended"
PURPOSE = "frozen-section"


class FrozenSectionError(Exception):
    """An impossible step; ``status`` is the HTTP answer (403, 404, 409, 422) and ``reason`` says why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class FrozenSectionRequest(Base):
    """One frozen-section request and the time of each of its steps."""

    __tablename__ = "frozen_section_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    issuer: Mapped[str] = mapped_column(String(64))
    patient_id: Mapped[str] = mapped_column(String(64))
    master_id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), index=True)
    accession: Mapped[str] = mapped_column(String(16), default="")
    specimen: Mapped[str] = mapped_column(String(200))
    specimen_site: Mapped[str] = mapped_column(String(200))
    clinical_question: Mapped[str] = mapped_column(Text)
    or_phone: Mapped[str] = mapped_column(String(32))
    requested_by: Mapped[str] = mapped_column(String(128))
    requesting_site: Mapped[str] = mapped_column(String(64))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    first_slide_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    first_view_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    first_viewer: Mapped[str] = mapped_column(String(128), default="")
    claim_holder: Mapped[str] = mapped_column(String(128), default="")
    claim_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    verdict_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True, index=True)
    verdict_by: Mapped[str] = mapped_column(String(128), default="")
    diagnosis: Mapped[str] = mapped_column(String(16), default="")
    margins: Mapped[str] = mapped_column(String(16), default="")
    verdict_text: Mapped[str] = mapped_column(Text, default="")
    study_uid: Mapped[str] = mapped_column(String(64), default="")
    sr_series_uid: Mapped[str] = mapped_column(String(64), default="")
    sr_sop_uid: Mapped[str] = mapped_column(String(64), default="")
    #: The canonical verdict (JSON) the platform's Ed25519 key signed, the signature (hex) and the key's id.
    signed_payload: Mapped[str] = mapped_column(Text, default="")
    signature: Mapped[str] = mapped_column(String(128), default="")
    signing_key_id: Mapped[str] = mapped_column(String(16), default="")
    seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    @property
    def patient(self) -> str:
        """The patient as ``issuer/PatientID``."""
        return f"{self.issuer}/{self.patient_id}"

    @property
    def is_open(self) -> bool:
        """Whether the request still waits for its verdict."""
        return self.verdict_at is None

    def claim_in_force(self, now: datetime) -> bool:
        """Whether someone holds the claim at ``now``."""
        return bool(self.claim_holder) and self.claim_expires_at is not None and self.claim_expires_at > now

    def state(self, now: datetime) -> str:
        """Where the request stands: requested, scanned, claimed, answered or seen."""
        if self.seen_at is not None:
            return SEEN
        if self.verdict_at is not None:
            return ANSWERED
        if self.claim_in_force(now):
            return CLAIMED
        return SCANNED if self.first_slide_at is not None else REQUESTED


class FrozenSectionSlide(Base):
    """A slide attached to a request, and how it came to be (``metadata``, ``accession`` or ``explicit``)."""

    __tablename__ = "frozen_section_slides"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("frozen_section_requests.id"), index=True)
    slide_id: Mapped[str] = mapped_column(ForeignKey("slides.id"), unique=True)
    attached_at: Mapped[datetime] = mapped_column(UTCDateTime())
    attached_by: Mapped[str] = mapped_column(String(128))
    how: Mapped[str] = mapped_column(String(16))


class FrozenSectionEvent(Base):
    """One change of a request, in order; ``detail`` is JSON without patient identifiers."""

    __tablename__ = "frozen_section_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("frozen_section_requests.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    kind: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text, default="{}")

    def as_dict(self) -> dict[str, Any]:
        """The event as the streams send it."""
        return {
            "event_id": self.id,
            "request_id": self.request_id,
            "kind": self.kind,
            "at": self.at.isoformat(),
            **json.loads(self.detail),
        }


class FrozenSectionAmendment(Base):
    """A later answer to a signed verdict: a new signed SR that names the one it amends; the verdict stays."""

    __tablename__ = "frozen_section_amendments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("frozen_section_requests.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    by: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text)
    diagnosis: Mapped[str] = mapped_column(String(16))
    margins: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text, default="")
    sr_sop_uid: Mapped[str] = mapped_column(String(64))
    signed_payload: Mapped[str] = mapped_column(Text)
    signature: Mapped[str] = mapped_column(String(128))
    signing_key_id: Mapped[str] = mapped_column(String(16))

    def as_dict(self) -> dict[str, Any]:
        """The amendment as the API shows it."""
        return {
            "amendment_id": self.id,
            "at": self.at.isoformat(),
            "pathologist": self.by,
            "reason": self.reason,
            "diagnosis": self.diagnosis,
            "margins": self.margins,
            "text": self.text,
            "sop_instance_uid": self.sr_sop_uid,
            "signature": self.signature,
            "key_id": self.signing_key_id,
        }


def event(s: Session, req: FrozenSectionRequest, kind: str, now: datetime, **detail: Any) -> None:
    """Append an event of ``req`` (its state after the change goes with it)."""
    body = {"state": req.state(now), **detail}
    s.add(FrozenSectionEvent(request_id=req.id, at=now, kind=kind, detail=json.dumps(body, sort_keys=True)))
    s.flush()
