"""Consent to sharing: per master patient, granted or refused, with who recorded it, when and how.

Every decision is a new :class:`ConsentEvent`; events are never updated or deleted, so the full history stays.
:class:`ConsentState` holds the latest decision per patient (a projection rewritten on each event) so that
queries can filter on it in SQL. A patient with no recorded decision shares (the French rule of presumed
consent within the care pathway, with a right to object): see ``docs/decisions/0015-access-policy.md``.

If sharing is refused, the patient's data is visible only at the producing site and to the professionals the
patient named (``care.CareRelationship.named_by_patient``); ``access`` applies it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import BigInteger, Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from archipel.platform.db import Base, UTCDateTime, utcnow
from archipel.platform.identity.models import MasterPatient

GRANTED = "granted"
REFUSED = "refused"
#: No decision recorded yet: sharing is presumed.
NOT_RECORDED = "not-recorded"
SHARING = (GRANTED, REFUSED)
#: How the decision reached us.
METHODS = ("portal", "paper", "verbal", "electronic-form")
#: How deep a chain of merges (A into B, B into C) is followed when gathering a patient's decisions.
MERGE_DEPTH = 8

_MasterId = BigInteger().with_variant(Integer, "sqlite")


class ConsentError(ValueError):
    """A decision that cannot be recorded; the message says why."""


class ConsentEvent(Base):
    """One recorded decision about sharing a master patient's data."""

    __tablename__ = "consent_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    master_id: Mapped[int] = mapped_column(_MasterId, index=True)
    sharing: Mapped[str] = mapped_column(String(16))
    method: Mapped[str] = mapped_column(String(24))
    recorded_by: Mapped[str] = mapped_column(String(160))
    recorded_by_role: Mapped[str] = mapped_column(String(32), default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    note: Mapped[str] = mapped_column(Text, default="")


class ConsentState(Base):
    """The latest decision per master patient (a projection of :class:`ConsentEvent`)."""

    __tablename__ = "consent_states"

    master_id: Mapped[int] = mapped_column(_MasterId, primary_key=True, autoincrement=False)
    sharing: Mapped[str] = mapped_column(String(16), index=True)
    event_id: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime())


@dataclass(frozen=True)
class Decision:
    """A decision as the API shows it."""

    id: int
    sharing: str
    method: str
    recorded_by: str
    recorded_by_role: str
    at: datetime
    note: str


def _decision(e: ConsentEvent) -> Decision:
    return Decision(e.id, e.sharing, e.method, e.recorded_by, e.recorded_by_role, e.at, e.note)


def record(
    s: Session,
    master_id: int,
    sharing: str,
    method: str,
    *,
    recorded_by: str,
    recorded_by_role: str = "",
    note: str = "",
    at: datetime | None = None,
) -> Decision:
    """Append a decision (and update the current state) in the caller's write transaction.

    Raises :class:`ConsentError` for an unknown value, method or master, or a merged master.
    """
    if sharing not in SHARING:
        raise ConsentError(f"sharing is {' or '.join(SHARING)}, not {sharing!r}")
    if method not in METHODS:
        raise ConsentError(f"unknown consent method {method!r}; choose one of: {', '.join(METHODS)}")
    if len(note) > 2000:
        raise ConsentError("a note is at most 2000 characters")
    master = s.get(MasterPatient, master_id)
    if master is None:
        raise ConsentError(f"no master patient {master_id}")
    if not master.active:
        raise ConsentError(f"master patient {master_id} was merged into {master.merged_into}")
    when = at or utcnow()
    event = ConsentEvent(
        master_id=master_id,
        sharing=sharing,
        method=method,
        recorded_by=recorded_by,
        recorded_by_role=recorded_by_role,
        at=when,
        note=note,
    )
    s.add(event)
    s.flush()
    state = s.get(ConsentState, master_id)
    if state is None:
        s.add(ConsentState(master_id=master_id, sharing=sharing, event_id=event.id, at=when))
    else:
        state.sharing, state.event_id, state.at = sharing, event.id, when
    s.flush()
    return _decision(event)


def history(s: Session, masters: list[int]) -> list[Decision]:
    """Every decision about the given masters, oldest first."""
    rows = s.execute(
        select(ConsentEvent).where(ConsentEvent.master_id.in_(masters)).order_by(ConsentEvent.id)
    ).scalars()
    return [_decision(e) for e in rows]


def merged_groups(s: Session, masters: set[int]) -> dict[int, int]:
    """Each of ``masters`` and every master merged into it (directly or through a chain of merges), mapped to
    the master of ``masters`` it now belongs to."""
    root = {m: m for m in masters}
    frontier = set(masters)
    for _ in range(MERGE_DEPTH):
        if not frontier:
            break
        rows = s.execute(
            select(MasterPatient.id, MasterPatient.merged_into).where(MasterPatient.merged_into.in_(frontier))
        ).all()
        frontier = set()
        for child, parent in rows:
            if child not in root and parent is not None:
                root[child] = root[parent]
                frontier.add(child)
    return root


def _states(s: Session, masters: set[int]) -> dict[int, set[str]]:
    """The decisions in force per master of ``masters``, merged records included."""
    if not masters:
        return {}
    root = merged_groups(s, masters)
    found: dict[int, set[str]] = {m: set() for m in masters}
    rows = s.execute(
        select(ConsentState.master_id, ConsentState.sharing).where(ConsentState.master_id.in_(list(root)))
    )
    for master, sharing in rows:
        found[root[master]].add(sharing)
    return found


def current(s: Session, master_id: int) -> str:
    """The sharing decision in force for a patient: refused if any of its merged records refuses (the most
    protective reading of two decisions), granted if one grants, else :data:`NOT_RECORDED`."""
    states = _states(s, {master_id})[master_id]
    if REFUSED in states:
        return REFUSED
    return GRANTED if GRANTED in states else NOT_RECORDED


def refused_among(s: Session, masters: set[int]) -> frozenset[int]:
    """Those of ``masters`` whose patients refuse sharing (two queries per merge level, whatever their number)."""
    return frozenset(m for m, states in _states(s, masters).items() if REFUSED in states)
