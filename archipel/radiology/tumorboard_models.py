"""Tables of remote query/retrieve nodes, prefetch requests with their status per node, and tumor boards (RCP).

A remote PACS is a registered :class:`~archipel.radiology.models.DicomNode` (its AE title, host, port and site:
the site is the issuer of the PatientIDs it knows) with a :class:`RemoteNode` row saying how we query and
retrieve from it. A :class:`PrefetchRequest` asks for one master patient's relevant studies from every remote
node; its :class:`PrefetchNodeStatus` rows say, per node, where that stands (found, retrieving, ready, failed
with its reason). A tumor board session registers patients, each with its own prefetch request.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from archipel.platform.db import Base, UTCDateTime, utcnow

#: How a remote node is retrieved from: C-MOVE to our listener, C-GET on the query association, or WADO-RS.
MOVE, GET, DICOMWEB = "move", "get", "dicomweb"
RETRIEVE_METHODS = (MOVE, GET, DICOMWEB)

#: States of one node for one prefetch request.
QUEUED, QUERYING, FOUND, RETRIEVING, READY, NONE, FAILED = (
    "queued",
    "querying",
    "found",
    "retrieving",
    "ready",
    "none",
    "failed",
)
#: States after which nothing more happens until the next run.
SETTLED = frozenset({READY, NONE, FAILED})

#: The destination of a tumor board that reads in our own viewer.
VIEWER = "viewer"


class RemoteNode(Base):
    """How a registered DICOM node is queried and retrieved from, with the bounds that keep a dead or slow
    node from holding a prefetch: a timeout per network step and a number of attempts."""

    __tablename__ = "remote_nodes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_pk: Mapped[int] = mapped_column(ForeignKey("dicom_nodes.id", ondelete="CASCADE"), unique=True)
    retrieve: Mapped[str] = mapped_column(String(16), default=MOVE)
    dicomweb_url: Mapped[str] = mapped_column(String(400), default="")
    timeout_seconds: Mapped[float] = mapped_column(Float, default=10.0)
    attempts: Mapped[int] = mapped_column(Integer, default=3)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class PrefetchRequest(Base):
    """A request to fetch one master patient's relevant studies from the region's remote nodes.

    ``modalities`` is a backslash-separated list (empty: any), ``date_from``/``date_to`` DICOM dates (empty:
    open), ``study_uids`` a JSON list restricting the request to named studies (empty: every match).
    ``destination_node_pk``, when set, is the DICOM node the ready studies are forwarded to.
    """

    __tablename__ = "prefetch_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    master_id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    modalities: Mapped[str] = mapped_column(String(128), default="")
    date_from: Mapped[str] = mapped_column(String(8), default="")
    date_to: Mapped[str] = mapped_column(String(8), default="")
    study_uids: Mapped[str] = mapped_column(Text, default="[]")
    destination_node_pk: Mapped[int | None] = mapped_column(
        ForeignKey("dicom_nodes.id", ondelete="SET NULL"), nullable=True
    )
    job_id: Mapped[str] = mapped_column(String(32), default="")
    requested_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class PrefetchNodeStatus(Base):
    """Where one prefetch request stands at one remote node: the PatientID used there, what was found and
    what is held here, and the reason of a failure."""

    __tablename__ = "prefetch_node_status"
    __table_args__ = (UniqueConstraint("request_id", "node_pk"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(
        ForeignKey("prefetch_requests.id", ondelete="CASCADE"), index=True
    )
    node_pk: Mapped[int] = mapped_column(ForeignKey("dicom_nodes.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(16), default=QUEUED)
    reason: Mapped[str] = mapped_column(Text, default="")
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    studies_found: Mapped[int] = mapped_column(Integer, default=0)
    studies_ready: Mapped[int] = mapped_column(Integer, default=0)
    instances_retrieved: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    study_uids: Mapped[str] = mapped_column(Text, default="[]")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class TumorBoardSession(Base):
    """A tumor board (RCP) meeting: when, where, and where its images must be ready (a DICOM node or our
    viewer, ``destination_node_pk`` empty)."""

    __tablename__ = "tumor_board_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(200), default="")
    scheduled_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    place: Mapped[str] = mapped_column(String(200), default="")
    site: Mapped[str] = mapped_column(String(64), default="")
    destination_node_pk: Mapped[int | None] = mapped_column(
        ForeignKey("dicom_nodes.id", ondelete="SET NULL"), nullable=True
    )
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class TumorBoardPatient(Base):
    """A patient registered to a session, with the reason and the studies that matter, and its prefetch."""

    __tablename__ = "tumor_board_patients"
    __table_args__ = (UniqueConstraint("session_id", "master_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[int] = mapped_column(
        ForeignKey("tumor_board_sessions.id", ondelete="CASCADE"), index=True
    )
    master_id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    reason: Mapped[str] = mapped_column(Text, default="")
    prefetch_request_id: Mapped[int] = mapped_column(ForeignKey("prefetch_requests.id"))
    registered_by: Mapped[str] = mapped_column(String(128), default="")
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
