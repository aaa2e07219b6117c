"""Care relationships: which professional takes care of which master patient, in what capacity, and when.

A relationship links a professional (a user subject) to a master patient of the MPI for a period. Its kind says
where it comes from: membership of the care team, the patient's treating or referring doctor, a reading
assignment (teleradiology, screening), a frozen-section request made by a surgeon, a tumor-board registration.
``named_by_patient`` records that the patient chose this professional: when the patient refuses sharing, only
named professionals (and the producing site) still see the data.

Other modules create relationships with :func:`record` inside their own transaction (a reading task, a
frozen-section request); people record and end them through ``care_api``. Ending sets ``valid_to``; rows are
never deleted, so the history of who could see what stays readable.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ColumnElement, Integer, String, or_, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from archipel.platform.db import Base, UTCDateTime, utcnow
from archipel.platform.identity.models import MasterPatient

CARE_TEAM = "care-team"
TREATING = "treating"
REFERRING = "referring"
READING_ASSIGNMENT = "reading-assignment"
FROZEN_SECTION_REQUEST = "frozen-section-request"
TUMOR_BOARD = "tumor-board"
KINDS = (CARE_TEAM, TREATING, REFERRING, READING_ASSIGNMENT, FROZEN_SECTION_REQUEST, TUMOR_BOARD)
#: Kinds whose professional is alerted when someone breaks the glass on the patient.
ALERTED_KINDS = frozenset({TREATING, REFERRING})


class CareError(ValueError):
    """A relationship that cannot be recorded or ended; the message says why."""


class CareRelationship(Base):
    """One professional's care relationship with one master patient over ``[valid_from, valid_to)``."""

    __tablename__ = "care_relationships"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    professional: Mapped[str] = mapped_column(String(128), index=True)
    master_id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime())
    valid_to: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    named_by_patient: Mapped[bool] = mapped_column(Boolean, default=False)
    #: What created it, e.g. ``reading-task:42``; free text, never a patient name.
    context: Mapped[str] = mapped_column(String(200), default="")
    recorded_by: Mapped[str] = mapped_column(String(128))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    ended_by: Mapped[str] = mapped_column(String(128), default="")


@dataclass(frozen=True)
class CareLink:
    """What the policy needs of a professional's active relationships with one patient."""

    kinds: frozenset[str]
    named: bool


def _check_master(s: Session, master_id: int) -> None:
    master = s.get(MasterPatient, master_id)
    if master is None:
        raise CareError(f"no master patient {master_id}")
    if not master.active:
        raise CareError(f"master patient {master_id} was merged into {master.merged_into}")


def record(
    s: Session,
    professional: str,
    master_id: int,
    kind: str,
    *,
    recorded_by: str,
    valid_from: datetime | None = None,
    valid_to: datetime | None = None,
    named_by_patient: bool = False,
    context: str = "",
) -> CareRelationship:
    """Record a relationship in the caller's transaction and return it (flushed, with its id).

    Raises :class:`CareError` for an unknown kind, an empty professional, an unknown or merged master, or a
    period that ends before it starts.
    """
    if kind not in KINDS:
        raise CareError(f"unknown care relationship kind {kind!r}; choose one of: {', '.join(KINDS)}")
    if not professional.strip() or len(professional) > 128:
        raise CareError("a professional (user name of 1 to 128 characters) is required")
    start = valid_from or utcnow()
    if valid_to is not None and valid_to <= start:
        raise CareError("a care relationship must end after it starts")
    if len(context) > 200:
        raise CareError("context is at most 200 characters")
    _check_master(s, master_id)
    row = CareRelationship(
        professional=professional.strip(),
        master_id=master_id,
        kind=kind,
        valid_from=start,
        valid_to=valid_to,
        named_by_patient=named_by_patient,
        context=context,
        recorded_by=recorded_by,
        recorded_at=utcnow(),
    )
    s.add(row)
    s.flush()
    return row


def end(s: Session, relationship_id: int, *, ended_by: str, at: datetime | None = None) -> CareRelationship:
    """End a relationship now (or at ``at``); raises :class:`CareError` if unknown or already over."""
    row = s.get(CareRelationship, relationship_id)
    if row is None:
        raise CareError(f"no care relationship {relationship_id}")
    when = at or utcnow()
    if row.valid_to is not None and row.valid_to <= when:
        raise CareError(f"care relationship {relationship_id} has already ended")
    row.valid_to = max(when, row.valid_from)
    row.ended_by = ended_by
    s.flush()
    return row


def _active(now: datetime) -> list[ColumnElement[bool]]:
    return [
        CareRelationship.valid_from <= now,
        or_(CareRelationship.valid_to.is_(None), CareRelationship.valid_to > now),
    ]


def active_links(s: Session, professional: str, now: datetime) -> dict[int, CareLink]:
    """The professional's relationships in force at ``now``, by master patient id (as recorded)."""
    rows = s.execute(
        select(CareRelationship.master_id, CareRelationship.kind, CareRelationship.named_by_patient).where(
            CareRelationship.professional == professional, *_active(now)
        )
    )
    kinds: dict[int, set[str]] = {}
    named: dict[int, bool] = {}
    for master, kind, is_named in rows:
        kinds.setdefault(master, set()).add(kind)
        named[master] = named.get(master, False) or bool(is_named)
    return {m: CareLink(frozenset(k), named[m]) for m, k in kinds.items()}


def of_patient(s: Session, masters: list[int], now: datetime | None = None) -> list[CareRelationship]:
    """The relationships of the given masters (all of them, or only those in force at ``now``)."""
    stmt = select(CareRelationship).where(CareRelationship.master_id.in_(masters))
    if now is not None:
        stmt = stmt.where(*_active(now))
    return list(s.execute(stmt.order_by(CareRelationship.id)).scalars())


def alerted_professionals(s: Session, masters: list[int], now: datetime) -> list[str]:
    """Who is told when someone breaks the glass on the patient: the treating and referring doctors in force."""
    rows = of_patient(s, masters, now)
    return sorted({r.professional for r in rows if r.kind in ALERTED_KINDS})
