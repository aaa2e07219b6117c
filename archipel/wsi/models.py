"""Slides and cases: what was uploaded, where its conversion stands, and the study it joins.

A *case* is the study of one accession at one site: every slide of the accession becomes a series of that study.
The case row reserves the StudyInstanceUID when the first slide arrives (found in the archive by accession and
patient, else new), so that slides uploaded side by side never open two studies. A *slide* keeps its source (a
blob, unchanged), its metadata, the conversion job and, once indexed, its series and OME-Zarr store.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from archipel.platform.db import Base, UTCDateTime, utcnow

#: Slide states, in order. ``failed`` keeps the reason in ``error``; a retry sets the slide back to ``received``.
RECEIVED, CONVERTING, INDEXING, READY, FAILED = "received", "converting", "indexing", "ready", "failed"
STATES = (RECEIVED, CONVERTING, INDEXING, READY, FAILED)


class SlideCase(Base):
    """The study of one accession of one patient at one site."""

    __tablename__ = "slide_cases"
    __table_args__ = (UniqueConstraint("issuer", "patient_id", "accession"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    issuer: Mapped[str] = mapped_column(String(64))
    patient_id: Mapped[str] = mapped_column(String(64))
    accession: Mapped[str] = mapped_column(String(16))
    study_uid: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Slide(Base):
    """One scanned slide: its source, metadata, conversion state and, once ready, where it lives."""

    __tablename__ = "slides"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("slide_cases.id"), nullable=True, index=True)
    status: Mapped[str] = mapped_column(String(16), default=RECEIVED, index=True)
    job_id: Mapped[str] = mapped_column(String(32), default="", index=True)
    issuer: Mapped[str] = mapped_column(String(64))
    patient_id: Mapped[str] = mapped_column(String(64), index=True)
    accession: Mapped[str] = mapped_column(String(16), default="")
    container_id: Mapped[str] = mapped_column(String(64), default="")
    stain: Mapped[str] = mapped_column(String(64), default="")
    urgent: Mapped[bool] = mapped_column(Boolean, default=False)
    filename: Mapped[str] = mapped_column(String(255), default="")
    #: SHA-256 of the source bytes, its key in the slide-source blob store.
    source_key: Mapped[str] = mapped_column(String(64))
    source_size: Mapped[int] = mapped_column(BigInteger, default=0)
    #: How it arrived: ``upload``, ``tus`` or ``drop``.
    origin: Mapped[str] = mapped_column(String(16), default="upload")
    study_uid: Mapped[str] = mapped_column(String(64), default="")
    series_uid: Mapped[str] = mapped_column(String(64), default="", index=True)
    instances: Mapped[int] = mapped_column(Integer, default=0)
    zarr_path: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    @property
    def patient(self) -> str:
        """The patient as ``issuer/PatientID``, the form the access policy and the audit trail use."""
        return f"{self.issuer}/{self.patient_id}"

    def as_dict(self) -> dict[str, Any]:
        """The slide as the API shows it."""
        return {
            "slide_id": self.id,
            "status": self.status,
            "job_id": self.job_id,
            "issuer": self.issuer,
            "patient_id": self.patient_id,
            "accession": self.accession,
            "container_id": self.container_id,
            "stain": self.stain,
            "urgent": self.urgent,
            "filename": self.filename,
            "source_sha256": self.source_key,
            "source_size": self.source_size,
            "origin": self.origin,
            "study_uid": self.study_uid,
            "series_uid": self.series_uid,
            "instances": self.instances,
            "zarr": bool(self.zarr_path),
            "error": self.error,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
        }


class SlideUpload(Base):
    """A resumable (tus) upload in progress. Its offset is the size of its spool file, which PATCH appends to."""

    __tablename__ = "slide_uploads"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    length: Mapped[int] = mapped_column(BigInteger)
    #: The slide metadata (JSON), validated when the upload was created.
    meta: Mapped[str] = mapped_column(Text, default="{}")
    filename: Mapped[str] = mapped_column(String(255), default="")
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    #: Set once the last byte arrived and the slide was registered.
    slide_id: Mapped[str] = mapped_column(String(32), default="")
