"""The on-duty roster of pathologists who answer frozen sections: shifts with a start and an end.

A shift is who answers when: the pathologists on duty get every new frozen-section request (notification, the
urgent worklist, its event stream) and, for the request's patient and until the shift ends, a care relationship
that lets the access policy show them its slides (see :mod:`archipel.wsi.frozen`). Cancelling a shift keeps its
row (``cancelled_at``), so the history of who was on duty stays readable.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Integer, String, or_, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from archipel.platform.authn import find_user
from archipel.platform.db import Base, UTCDateTime, utcnow

#: A shift longer than this is refused: it is more likely a typo than a roster.
LONGEST_SHIFT = timedelta(hours=24)


class DutyError(ValueError):
    """A shift that cannot be recorded or cancelled; the message says why. ``status`` is the HTTP status."""

    def __init__(self, reason: str, status: int = 422) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class DutyShift(Base):
    """One pathologist on duty over ``[start, end)``."""

    __tablename__ = "duty_shifts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pathologist: Mapped[str] = mapped_column(String(128), index=True)
    start: Mapped[datetime] = mapped_column(UTCDateTime())
    end: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    cancelled_by: Mapped[str] = mapped_column(String(128), default="")

    def as_dict(self) -> dict[str, Any]:
        """The shift as the API shows it."""
        return {
            "id": self.id,
            "pathologist": self.pathologist,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "created_by": self.created_by,
            "cancelled_at": self.cancelled_at.isoformat() if self.cancelled_at else None,
        }


def add_shift(
    s: Session, pathologist: str, start: datetime, end: datetime, *, by: str, now: datetime
) -> DutyShift:
    """Record a shift in the caller's transaction; raises :class:`DutyError` for an account that is not an
    active pathologist, a shift that ends before it starts, is over already, or lasts more than a day."""
    user = find_user(s, pathologist)
    if user is None or not user.active or user.role != "pathologist":
        raise DutyError(f"{pathologist} is not an active pathologist's account")
    if start.tzinfo is None or end.tzinfo is None:
        raise DutyError("start and end need a time zone (e.g. 2026-12-01T20:00:00+01:00)")
    if end <= start:
        raise DutyError("a shift must end after it starts")
    if end <= now:
        raise DutyError("this shift is already over")
    if end - start > LONGEST_SHIFT:
        raise DutyError("a shift lasts at most 24 hours")
    row = DutyShift(pathologist=pathologist, start=start, end=end, created_by=by, created_at=now)
    s.add(row)
    s.flush()
    return row


def cancel_shift(s: Session, shift_id: int, *, by: str, may_cancel_others: bool, now: datetime) -> DutyShift:
    """Cancel a shift (the caller's own, or anyone's for an administrator); :class:`DutyError` otherwise."""
    row = s.get(DutyShift, shift_id)
    if row is None:
        raise DutyError(f"no duty shift {shift_id}", 404)
    if row.pathologist != by and not may_cancel_others:
        raise DutyError("only the pathologist on duty or an administrator may cancel a shift", 403)
    if row.cancelled_at is not None:
        raise DutyError(f"duty shift {shift_id} is already cancelled", 409)
    row.cancelled_at, row.cancelled_by = now, by
    s.flush()
    return row


def _live() -> Any:
    return DutyShift.cancelled_at.is_(None)


def on_duty_now(s: Session, now: datetime) -> list[DutyShift]:
    """Shifts in force at ``now``."""
    stmt = select(DutyShift).where(_live(), DutyShift.start <= now, DutyShift.end > now)
    return list(s.execute(stmt.order_by(DutyShift.id)).scalars())


def not_over(s: Session, now: datetime) -> list[DutyShift]:
    """Shifts in force at ``now`` or still to come."""
    stmt = select(DutyShift).where(_live(), DutyShift.end > now)
    return list(s.execute(stmt.order_by(DutyShift.start, DutyShift.id)).scalars())


def is_on_duty(s: Session, pathologist: str, now: datetime) -> bool:
    """Whether ``pathologist`` has a shift in force at ``now``."""
    stmt = select(DutyShift.id).where(
        _live(), DutyShift.pathologist == pathologist, DutyShift.start <= now, DutyShift.end > now
    )
    return s.execute(stmt.limit(1)).first() is not None


def shifts(s: Session, now: datetime, pathologist: str | None = None) -> list[DutyShift]:
    """Shifts not over yet (of one pathologist, or everyone's), soonest first."""
    stmt = select(DutyShift).where(_live(), or_(DutyShift.end > now))
    if pathologist is not None:
        stmt = stmt.where(DutyShift.pathologist == pathologist)
    return list(s.execute(stmt.order_by(DutyShift.start, DutyShift.id)).scalars())
