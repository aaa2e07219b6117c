"""The archive index: patients, studies, series and instances, and the DICOM nodes allowed to talk to us.

Original Part-10 bytes live in the blob store; a row here names the blob by key and records its SHA-256, so the
index and the storage area stay two separate things, as in Orthanc.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from archipel.platform.db import Base, UTCDateTime, utcnow

UID = String(64)


class Patient(Base):
    """A patient as one site knows it: PatientID is unique only within its issuer."""

    __tablename__ = "patients"
    __table_args__ = (UniqueConstraint("issuer", "patient_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    issuer: Mapped[str] = mapped_column(String(64))
    patient_id: Mapped[str] = mapped_column(String(64), index=True)
    patient_name: Mapped[str] = mapped_column(String(324), default="")
    birth_date: Mapped[str] = mapped_column(String(8), default="")
    sex: Mapped[str] = mapped_column(String(16), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    studies: Mapped[list[Study]] = relationship(back_populates="patient")


class Study(Base):
    """A DICOM study, with its study-level query keys."""

    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_uid: Mapped[str] = mapped_column(UID, unique=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    study_date: Mapped[str] = mapped_column(String(8), default="", index=True)
    study_time: Mapped[str] = mapped_column(String(16), default="")
    accession_number: Mapped[str] = mapped_column(String(16), default="", index=True)
    study_id: Mapped[str] = mapped_column(String(16), default="")
    referring_physician: Mapped[str] = mapped_column(String(324), default="")
    description: Mapped[str] = mapped_column(String(64), default="")
    modalities: Mapped[str] = mapped_column(String(128), default="")
    #: Set from the issuer when the study arrives: the site that produced it.
    site: Mapped[str] = mapped_column(String(64), default="", index=True)
    #: Confidentiality codes and sensitivity labels as ``|CODE|CODE|`` (see ``platform.confidentiality``).
    confidentiality: Mapped[str] = mapped_column(String(200), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    patient: Mapped[Patient] = relationship(back_populates="studies")
    series: Mapped[list[Series]] = relationship(back_populates="study")


class Series(Base):
    """A DICOM series, with its series-level query keys."""

    __tablename__ = "series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_uid: Mapped[str] = mapped_column(UID, unique=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    modality: Mapped[str] = mapped_column(String(16), default="", index=True)
    series_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    description: Mapped[str] = mapped_column(String(64), default="")
    body_part: Mapped[str] = mapped_column(String(16), default="")
    performed_start_date: Mapped[str] = mapped_column(String(8), default="")
    performed_start_time: Mapped[str] = mapped_column(String(16), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(back_populates="series")


class Instance(Base):
    """One stored SOP instance: its query keys, where its bytes are, and how to reach its frames."""

    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_uid: Mapped[str] = mapped_column(UID, unique=True)
    series_pk: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    sop_class_uid: Mapped[str] = mapped_column(UID, index=True)
    instance_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    transfer_syntax: Mapped[str] = mapped_column(UID)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    # Indexed: deletions ask whether any instance still names a blob, and the storage lifecycle joins on it.
    blob_key: Mapped[str] = mapped_column(String(128), index=True)
    rows: Mapped[int | None] = mapped_column(Integer, nullable=True)
    columns: Mapped[int | None] = mapped_column(Integer, nullable=True)
    number_of_frames: Mapped[int] = mapped_column(Integer, default=0)
    #: Byte offset of the Pixel Data value in the blob, and its length (-1: undefined, encapsulated).
    pixel_data_offset: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    pixel_data_length: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    #: For encapsulated pixel data: JSON list, per frame, of [offset, length] fragment pairs in the blob.
    frame_index: Mapped[str | None] = mapped_column(Text, nullable=True)
    source_ae: Mapped[str] = mapped_column(String(16), default="")
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    series: Mapped[Series] = relationship(back_populates="instances")


class InstanceVersion(Base):
    """A superseded copy of an instance, kept under the ``version`` duplicate policy."""

    __tablename__ = "instance_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_uid: Mapped[str] = mapped_column(UID, index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    blob_key: Mapped[str] = mapped_column(String(128))
    size: Mapped[int] = mapped_column(BigInteger)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    superseded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class DicomNode(Base):
    """A remote application entity allowed to associate with us, and the address C-MOVE sends to."""

    __tablename__ = "dicom_nodes"
    __table_args__ = (UniqueConstraint("ae_title", "host"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ae_title: Mapped[str] = mapped_column(String(16), index=True)
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer, default=104)
    site: Mapped[str] = mapped_column(String(64))
    #: A regional consumer may see every site's data; other nodes see their own site's only.
    regional_consumer: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


Index("ix_patients_name", Patient.patient_name)
Index("ix_studies_patient_date", Study.patient_pk, Study.study_date)
Index("ix_series_study_number", Series.study_pk, Series.series_number)
Index("ix_instances_series_number", Instance.series_pk, Instance.instance_number)
