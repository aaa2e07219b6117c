"""Tables of the document registry: reports (comptes rendus), letters and forms, and the studies they concern.

A document names its patient as the producing site knows them (``issuer`` / ``patient_id``); its master patient
is joined through the MPI's ``local_identities`` at query time, so that a link, merge or unmerge shows at once.
``master_id`` keeps the master known when the document was registered, for display only.

``codes`` holds the platform's confidentiality codes (``|MASQUE_PS|PSY|``, see ``platform.confidentiality``)
that the access policy weighs; ``confidentiality`` the HL7 v3 Confidentiality code (N, R, V...) shown in FHIR.
A ``V`` (very restricted) document carries ``MASQUE_PS`` as well: only its producing site sees it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from archipel.platform.confidentiality import COLUMN_LENGTH
from archipel.platform.db import Base, UTCDateTime, utcnow

PRELIMINARY, FINAL, AMENDED, ENTERED_IN_ERROR = "preliminary", "final", "amended", "entered-in-error"
STATUSES = (PRELIMINARY, FINAL, AMENDED, ENTERED_IN_ERROR)
#: Statuses a patient may see (the rest carries ``INVISIBLE_PATIENT`` for the policy).
RELEASED = frozenset({FINAL, AMENDED})
#: ``relation`` of a document to the one it ``relates_to`` (FHIR DocumentReference.relatesTo.code).
APPENDS = "appends"


class Document(Base):
    """One registered document: metadata, where its content is (``blob_key``) and the content's hash."""

    __tablename__ = "documents"
    __table_args__ = (Index("ix_documents_patient", "issuer", "patient_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uid: Mapped[str] = mapped_column(String(64), unique=True)
    master_id: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), nullable=True)
    issuer: Mapped[str] = mapped_column(String(64))
    patient_id: Mapped[str] = mapped_column(String(64))
    site: Mapped[str] = mapped_column(String(64), index=True)
    type_code: Mapped[str] = mapped_column(String(32), index=True)
    type_display: Mapped[str] = mapped_column(String(200), default="")
    title: Mapped[str] = mapped_column(String(300))
    author: Mapped[str] = mapped_column(String(200), default="")
    organisation: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(20), index=True)
    confidentiality: Mapped[str] = mapped_column(String(1), default="N")
    codes: Mapped[str] = mapped_column(String(COLUMN_LENGTH), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    signed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    signed_by: Mapped[str] = mapped_column(String(128), default="")
    content_type: Mapped[str] = mapped_column(String(64))
    blob_key: Mapped[str] = mapped_column(String(128))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    relates_to: Mapped[int | None] = mapped_column(ForeignKey("documents.id"), nullable=True, index=True)
    relation: Mapped[str] = mapped_column(String(16), default="")
    addendum_reason: Mapped[str] = mapped_column(Text, default="")
    error_reason: Mapped[str] = mapped_column(Text, default="")
    error_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    error_by: Mapped[str] = mapped_column(String(128), default="")
    #: Where it came from (``api``, ``hl7:ORU^R01``, ``teleradiology``...).
    source: Mapped[str] = mapped_column(String(64), default="")
    #: The accession number of the study it reports on, when the sender gave one: a report that arrives before
    #: its images is linked to the study when the study is stored (``documents_expected``).
    accession_number: Mapped[str] = mapped_column(String(64), default="", index=True)
    #: The words full-text search looks in: the title, and the text of a text or HTML content.
    search_text: Mapped[str] = mapped_column(Text, default="")

    @property
    def patient_ref(self) -> str:
        """The patient as ``issuer/PatientID``, the form the access policy and the audit trail use."""
        return f"{self.issuer}/{self.patient_id}"


class DocumentStudy(Base):
    """A study (Study Instance UID) that a document concerns."""

    __tablename__ = "document_studies"

    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id"), primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)
