"""Tables of the master patient index.

Row ids of local identities and masters are allocated by the linker while it holds the MPI write lock, so that
a batch can be written with one multi-row insert per table. Every row an MPI transaction writes carries that
transaction's ``gen``: other processes refresh their in-memory index from the rows newer than theirs.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from archipel.platform.db import Base, UTCDateTime, utcnow

# Link statuses of a local identity.
LINKED = "linked"  # automatically linked to an existing master
REVIEW = "review"  # on its own master, with an open review item proposing another
NEW = "new"  # first identity of a new master
MANUAL = "manual"  # placed by an identity officer: automatic matching never moves it


class IdentityIssuer(Base):
    """An assigning authority of local patient IDs (a site): identities of unknown issuers are refused."""

    __tablename__ = "identity_issuers"

    code: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class MasterPatient(Base):
    """One person across the region; ``merged_into`` is set when an officer merged it into another master."""

    __tablename__ = "master_patients"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    merged_into: Mapped[int | None] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), nullable=True
    )
    gen: Mapped[int] = mapped_column(BigInteger, default=0, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class LocalIdentity(Base):
    """A patient as one issuer knows them, with its current link to a master patient.

    The link (``master_id``, ``status``, ``score`` and per-field ``contributions`` in bits) lives on the row: a
    local identity has exactly one current master. Earlier links are in :class:`LinkDecision`.
    """

    __tablename__ = "local_identities"
    __table_args__ = (UniqueConstraint("issuer", "local_id"), Index("ix_local_identities_gen", "gen"))

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    issuer: Mapped[str] = mapped_column(String(64), ForeignKey("identity_issuers.code"))
    local_id: Mapped[str] = mapped_column(String(64))
    birth_name: Mapped[str] = mapped_column(String(200), default="")
    used_name: Mapped[str] = mapped_column(String(200), default="")
    given_names: Mapped[str] = mapped_column(String(200), default="")
    birth_date: Mapped[str] = mapped_column(String(8), default="")
    sex: Mapped[str] = mapped_column(String(1), default="")
    birth_place: Mapped[str] = mapped_column(String(16), default="")
    address: Mapped[str] = mapped_column(String(400), default="")
    postcode: Mapped[str] = mapped_column(String(16), default="")
    city: Mapped[str] = mapped_column(String(200), default="")
    phone: Mapped[str] = mapped_column(String(32), default="")
    ins: Mapped[str] = mapped_column(String(15), default="")
    ins_status: Mapped[str] = mapped_column(String(5), default="PROV")
    master_id: Mapped[int] = mapped_column(ForeignKey("master_patients.id"), index=True)
    status: Mapped[str] = mapped_column(String(8))
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    contributions: Mapped[str] = mapped_column(Text, default="{}")
    #: Who placed this identity by hand; non-empty means automatic matching leaves its link alone.
    decided_by: Mapped[str] = mapped_column(String(128), default="")
    gen: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class LinkDecision(Base):
    """One decision about a local identity's link, automatic or human: the full history, never updated."""

    __tablename__ = "link_decisions"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    local_pk: Mapped[int] = mapped_column(ForeignKey("local_identities.id"), index=True)
    master_id: Mapped[int] = mapped_column(BigInteger)
    previous_master_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    action: Mapped[str] = mapped_column(String(24))
    status: Mapped[str] = mapped_column(String(8))
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    contributions: Mapped[str] = mapped_column(Text, default="{}")
    reason: Mapped[str] = mapped_column(Text, default="")
    actor: Mapped[str] = mapped_column(String(128), default="linker")
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ReviewItem(Base):
    """A doubt for an identity officer: should ``local_pk`` join ``candidate_master_id``?"""

    __tablename__ = "identity_review_items"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    local_pk: Mapped[int] = mapped_column(ForeignKey("local_identities.id"), index=True)
    candidate_master_id: Mapped[int] = mapped_column(BigInteger)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    contributions: Mapped[str] = mapped_column(Text, default="{}")
    reason: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(12), default="open", index=True)
    resolution: Mapped[str] = mapped_column(String(12), default="")
    resolved_by: Mapped[str] = mapped_column(String(128), default="")
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class NoLink(Base):
    """Two local identities an officer declared different people: never linked again automatically."""

    __tablename__ = "identity_no_links"
    __table_args__ = (UniqueConstraint("a_pk", "b_pk"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    a_pk: Mapped[int] = mapped_column(ForeignKey("local_identities.id"), index=True)
    b_pk: Mapped[int] = mapped_column(ForeignKey("local_identities.id"), index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    actor: Mapped[str] = mapped_column(String(128))
    gen: Mapped[int] = mapped_column(BigInteger, default=0, index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class MasterMerge(Base):
    """An officer's merge of ``source_id`` into ``target_id``, with what it moved, so unmerge can restore it."""

    __tablename__ = "master_merges"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    source_id: Mapped[int] = mapped_column(BigInteger, index=True)
    target_id: Mapped[int] = mapped_column(BigInteger, index=True)
    #: JSON list of the moved local identities' link fields before the merge.
    moved: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text, default="")
    actor: Mapped[str] = mapped_column(String(128))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    undone_by: Mapped[str] = mapped_column(String(128), default="")
    undone_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class IdentityState(Base):
    """One row: the MPI's generation counter (bumped by every MPI write) and its current model."""

    __tablename__ = "identity_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    gen: Mapped[int] = mapped_column(BigInteger, default=0)
    model: Mapped[str] = mapped_column(Text, default="")
    model_records: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
