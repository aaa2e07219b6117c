"""The records of teleradiology: a reading request with the time of each of its steps, its reports, the critical
results sent to the requester (a closed loop), the priors listed for the reader, and second-opinion requests.

The workflow is :mod:`archipel.radiology.telerad`; the vocabulary (priorities and their due times, states) is here
so that the service, the API, the SLA task and the HL7 order handler share it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from archipel.platform.db import Base, UTCDateTime

#: Priorities and the time within which each must be read (the issue's service levels).
STAT, URGENT, SCHEDULED, EMERGENCY = "stat", "urgent", "scheduled", "emergency"
DUE_WITHIN: dict[str, timedelta] = {
    STAT: timedelta(minutes=30),
    URGENT: timedelta(hours=1),
    SCHEDULED: timedelta(hours=1),
    EMERGENCY: timedelta(hours=24),
}
PRIORITIES = tuple(DUE_WITHIN)
#: Request states, in order; ``cancelled`` may end any state before ``final``.
REQUESTED, CLAIMED, PRELIMINARY, FINAL, CANCELLED = (
    "requested",
    "claimed",
    "preliminary",
    "final",
    "cancelled",
)
STATES = (REQUESTED, CLAIMED, PRELIMINARY, FINAL, CANCELLED)
#: Report kinds.
REPORT_PRELIMINARY, REPORT_FINAL, REPORT_ADDENDUM = "preliminary", "final", "addendum"
REPORT_KINDS = (REPORT_PRELIMINARY, REPORT_FINAL, REPORT_ADDENDUM)
#: Critical-result states.
PENDING, ACKNOWLEDGED = "pending", "acknowledged"
#: Second-opinion states.
ASKED, ANSWERED = "asked", "answered"
#: The notification purpose of every message this module sends.
PURPOSE = "teleradiology"


class TeleradError(Exception):
    """An impossible step; ``status`` is the HTTP answer (403, 404, 409, 422) and ``reason`` says why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Physician:
    """The requesting physician: name, where to reach them, and their user name when they have an account."""

    name: str
    email: str = ""
    phone: str = ""
    username: str = ""


class ReadingRequest(Base):
    """A study (or an expected study, by accession number) sent by a site to be read by a teleradiologist."""

    __tablename__ = "telerad_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: Empty while the order waits for its images; filled when a study of the accession arrives.
    study_uid: Mapped[str] = mapped_column(String(64), default="", index=True)
    accession_number: Mapped[str] = mapped_column(String(16), default="", index=True)
    issuer: Mapped[str] = mapped_column(String(64))
    patient_id: Mapped[str] = mapped_column(String(64))
    master_id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), index=True)
    requesting_site: Mapped[str] = mapped_column(String(64), index=True)
    placer_order: Mapped[str] = mapped_column(String(64), default="")
    physician_name: Mapped[str] = mapped_column(String(200))
    physician_email: Mapped[str] = mapped_column(String(255), default="")
    physician_phone: Mapped[str] = mapped_column(String(32), default="")
    physician_user: Mapped[str] = mapped_column(String(128), default="")
    clinical_info: Mapped[str] = mapped_column(Text, default="")
    justification: Mapped[str] = mapped_column(Text, default="")
    subspecialty: Mapped[str] = mapped_column(String(32), default="", index=True)
    priority: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), default=REQUESTED, index=True)
    created_by: Mapped[str] = mapped_column(String(128))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime())
    due_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    claim_holder: Mapped[str] = mapped_column(String(128), default="")
    claim_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    study_linked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    preliminary_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    final_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    final_by: Mapped[str] = mapped_column(String(128), default="")
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    cancelled_by: Mapped[str] = mapped_column(String(128), default="")
    cancel_reason: Mapped[str] = mapped_column(Text, default="")
    #: When the SLA task warned that the due time was near (once per request).
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: The last prefetch job that asked the region's PACS for the patient's priors (empty: none yet).
    prefetch_job_id: Mapped[str] = mapped_column(String(32), default="", server_default="")

    @property
    def patient(self) -> str:
        """The patient as ``issuer/PatientID``."""
        return f"{self.issuer}/{self.patient_id}"

    @property
    def is_open(self) -> bool:
        """Whether the request still waits for its final report (and is not cancelled)."""
        return self.state not in (FINAL, CANCELLED)

    def claim_in_force(self, now: datetime) -> bool:
        """Whether someone holds the claim at ``now``."""
        return bool(self.claim_holder) and self.claim_expires_at is not None and self.claim_expires_at > now

    def shown_state(self, now: datetime) -> str:
        """The state as a worklist shows it: an expired claim shows the request as waiting again."""
        if self.state == CLAIMED and not self.claim_in_force(now):
            return REQUESTED
        return self.state


class ReadingReport(Base):
    """A report of a reading request: preliminary, final or an addendum; ``document_id`` names its entry in
    the document registry (empty when the registry is not installed)."""

    __tablename__ = "telerad_reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("telerad_requests.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    critical: Mapped[bool] = mapped_column(Boolean, default=False)
    critical_text: Mapped[str] = mapped_column(Text, default="")
    author: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    signed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    document_id: Mapped[str] = mapped_column(String(64), default="")


class CriticalResult(Base):
    """A critical finding told to the requester, which stays pending until they acknowledge it; re-sent and
    escalated while it is not."""

    __tablename__ = "telerad_critical_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("telerad_requests.id"), index=True)
    report_id: Mapped[int] = mapped_column(ForeignKey("telerad_reports.id"))
    finding: Mapped[str] = mapped_column(Text)
    recipient_user: Mapped[str] = mapped_column(String(128), default="")
    recipient_email: Mapped[str] = mapped_column(String(255), default="")
    recipient_phone: Mapped[str] = mapped_column(String(32), default="")
    state: Mapped[str] = mapped_column(String(16), default=PENDING, index=True)
    raised_by: Mapped[str] = mapped_column(String(128))
    raised_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sends: Mapped[int] = mapped_column(Integer, default=1)
    last_sent_at: Mapped[datetime] = mapped_column(UTCDateTime())
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    acknowledged_by: Mapped[str] = mapped_column(String(128), default="")
    #: The requester's in-app notification (``platform.inbox``), when they have an account: acknowledging it
    #: there closes the loop too.
    notification_id: Mapped[int | None] = mapped_column(Integer, nullable=True)


class PriorStudy(Base):
    """A study of the same master patient, at any site, listed for the reader of a request."""

    __tablename__ = "telerad_priors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("telerad_requests.id"), index=True)
    study_uid: Mapped[str] = mapped_column(String(64))
    site: Mapped[str] = mapped_column(String(64), default="")
    study_date: Mapped[str] = mapped_column(String(8), default="")
    modalities: Mapped[str] = mapped_column(String(128), default="")
    description: Mapped[str] = mapped_column(String(64), default="")
    #: ``listed`` (in this archive when listed); for a study the request's prefetch found at a remote node:
    #: ``prefetch-requested`` while it is being fetched, ``available`` once it is here, ``failed`` if that
    #: node's fetch failed (see :mod:`archipel.radiology.telerad_priors`).
    status: Mapped[str] = mapped_column(String(24), default="listed")
    listed_at: Mapped[datetime] = mapped_column(UTCDateTime())


class SecondOpinion(Base):
    """A tele-expertise request to a named reference centre (site) or specialist (user), and its answer."""

    __tablename__ = "telerad_second_opinions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    reading_request_id: Mapped[int | None] = mapped_column(ForeignKey("telerad_requests.id"), nullable=True)
    issuer: Mapped[str] = mapped_column(String(64))
    patient_id: Mapped[str] = mapped_column(String(64))
    master_id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), index=True)
    study_uid: Mapped[str] = mapped_column(String(64), default="")
    question: Mapped[str] = mapped_column(Text)
    to_site: Mapped[str] = mapped_column(String(64), default="", index=True)
    to_user: Mapped[str] = mapped_column(String(128), default="", index=True)
    asked_by: Mapped[str] = mapped_column(String(128))
    asked_at: Mapped[datetime] = mapped_column(UTCDateTime())
    state: Mapped[str] = mapped_column(String(16), default=ASKED)
    answered_by: Mapped[str] = mapped_column(String(128), default="")
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    answer_text: Mapped[str] = mapped_column(Text, default="")
    answer_document_id: Mapped[str] = mapped_column(String(64), default="")

    @property
    def patient(self) -> str:
        """The patient as ``issuer/PatientID``."""
        return f"{self.issuer}/{self.patient_id}"


Index("ix_telerad_requests_site_order", ReadingRequest.requesting_site, ReadingRequest.placer_order)
