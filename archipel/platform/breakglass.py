"""Break-the-glass: a professional's time-limited emergency access to one patient, with a stated reason.

Opening one requires a recent login (checked by the HTTP route), a reason of at least
:data:`MIN_REASON_LENGTH` characters and a role that may ask (:data:`ROLES`). It lasts
``settings.break_glass_minutes``. The patient's treating and referring doctors (``care.ALERTED_KINDS``) are
alerted through ``notify`` in the same transaction. While it lasts, ``access`` lets the professional read the
patient's data (not what the patient hid from professionals, ``MASQUE_PS``) and every such read is audited
with purpose ``break-glass``. Rows are never deleted; ending early sets ``ended_at``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import BigInteger, Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from archipel.platform import care, notify
from archipel.platform.authn import Principal, User
from archipel.platform.db import Base, UTCDateTime
from archipel.platform.identity.models import MasterPatient

#: Roles that may break the glass: those who treat patients in an emergency, and admins (who otherwise never
#: read patient data). Auditors, identity officers, technicians and screening readers may not.
ROLES = frozenset({"radiologist", "pathologist", "surgeon", "treating-doctor", "admin"})
MIN_REASON_LENGTH = 10
PURPOSE = "break-glass"


class BreakGlassError(ValueError):
    """A break-the-glass request that cannot be granted; the message says why."""


class BreakGlassAccess(Base):
    """One emergency access: who, to which patient, why, from when until when, and who was alerted."""

    __tablename__ = "break_glass_accesses"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    professional: Mapped[str] = mapped_column(String(128), index=True)
    role: Mapped[str] = mapped_column(String(32))
    site: Mapped[str] = mapped_column(String(64), default="")
    master_id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), index=True)
    reason: Mapped[str] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: Comma-separated user names of the professionals alerted.
    alerted: Mapped[str] = mapped_column(Text, default="")
    source: Mapped[str] = mapped_column(String(64), default="")


@dataclass(frozen=True)
class Opened:
    """A granted emergency access, as the API returns it."""

    id: int
    master_id: int
    started_at: datetime
    expires_at: datetime
    alerted: list[str]


def open_access(
    s: Session,
    principal: Principal,
    master_id: int,
    reason: str,
    *,
    now: datetime,
    minutes: int,
    source: str = "",
) -> Opened:
    """Grant ``principal`` emergency access to ``master_id`` for ``minutes`` and queue the alerts.

    Raises :class:`BreakGlassError` for a role that may not, a missing or short reason, or an unknown or
    merged patient.
    """
    if principal.kind != "user" or principal.role not in ROLES:
        raise BreakGlassError(f"role {principal.role or principal.kind} may not break the glass")
    reason = reason.strip()
    if len(reason) < MIN_REASON_LENGTH:
        raise BreakGlassError(f"a reason of at least {MIN_REASON_LENGTH} characters is required")
    if len(reason) > 2000:
        raise BreakGlassError("a reason is at most 2000 characters")
    master = s.get(MasterPatient, master_id)
    if master is None:
        raise BreakGlassError(f"no master patient {master_id}")
    if not master.active:
        raise BreakGlassError(f"master patient {master_id} was merged into {master.merged_into}")
    alerted = [p for p in care.alerted_professionals(s, [master_id], now) if p != principal.subject]
    row = BreakGlassAccess(
        professional=principal.subject,
        role=principal.role,
        site=principal.site,
        master_id=master_id,
        reason=reason,
        started_at=now,
        expires_at=now + timedelta(minutes=minutes),
        alerted=",".join(alerted),
        source=source[:64],
    )
    s.add(row)
    s.flush()
    addresses = dict(
        s.execute(select(User.username, User.email).where(User.username.in_(alerted), User.email != "")).all()
    )
    for professional in alerted:
        # An account's e-mail address when it has one; else the user name, which the configured sender maps.
        notify.enqueue(
            s,
            "email",
            addresses.get(professional, professional),
            "Archipel: emergency access to one of your patients",
            f"{principal.subject} ({principal.role}, {principal.site or 'no site'}) opened an emergency access "
            f"to patient record {master_id} at {now.isoformat(timespec='seconds')} until "
            f"{row.expires_at.isoformat(timespec='seconds')}. Reason given: {reason}",
            purpose=PURPOSE,
        )
    return Opened(row.id, master_id, row.started_at, row.expires_at, alerted)


def end_access(s: Session, principal: Principal, access_id: int, now: datetime) -> None:
    """End one's own emergency access early; raises :class:`BreakGlassError` if it is not theirs or is over."""
    row = s.get(BreakGlassAccess, access_id)
    if row is None or row.professional != principal.subject:
        raise BreakGlassError(f"no emergency access {access_id} of yours")
    if row.ended_at is not None or row.expires_at <= now:
        raise BreakGlassError(f"emergency access {access_id} is already over")
    row.ended_at = now
    s.flush()


def active_masters(s: Session, professional: str, now: datetime) -> frozenset[int]:
    """The master patients ``professional`` has emergency access to at ``now``."""
    rows = s.execute(
        select(BreakGlassAccess.master_id).where(
            BreakGlassAccess.professional == professional,
            BreakGlassAccess.started_at <= now,
            BreakGlassAccess.expires_at > now,
            BreakGlassAccess.ended_at.is_(None),
        )
    ).scalars()
    return frozenset(rows)


def accesses_of(s: Session, professional: str, now: datetime) -> list[BreakGlassAccess]:
    """``professional``'s emergency accesses in force at ``now``."""
    return list(
        s.execute(
            select(BreakGlassAccess)
            .where(
                BreakGlassAccess.professional == professional,
                BreakGlassAccess.expires_at > now,
                BreakGlassAccess.ended_at.is_(None),
            )
            .order_by(BreakGlassAccess.id)
        ).scalars()
    )
