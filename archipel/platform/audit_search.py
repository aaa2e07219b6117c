"""Searching the audit trail: an auditor's filters with paging, and a patient's view of who accessed their record."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.orm import Session

from archipel.platform import audit
from archipel.platform.audit import AuditEvent


@dataclass(frozen=True)
class AuditFilter:
    """What an auditor searches for; every field left empty matches everything.

    ``patient`` is a local reference ``issuer/PatientID``; ``master`` a master patient id, which also matches
    events about any local identity in ``master_locals`` (those recorded before the MPI linked them).
    """

    patient: str = ""
    master: int | None = None
    master_locals: tuple[str, ...] = ()
    actor: str = ""
    event_type: str = ""
    action: str = ""
    outcome: str = ""
    purpose: str = ""
    since: datetime | None = None
    until: datetime | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        """The SQL conditions of this filter."""
        c: list[ColumnElement[bool]] = []
        if self.patient:
            c.append(AuditEvent.patient == self.patient)
        if self.master is not None:
            about = [AuditEvent.master_id == self.master]
            if self.master_locals:
                about.append(AuditEvent.patient.in_(self.master_locals))
            c.append(or_(*about))
        for column, value in (
            (AuditEvent.actor, self.actor),
            (AuditEvent.event_type, self.event_type),
            (AuditEvent.action, self.action),
            (AuditEvent.outcome, self.outcome),
            (AuditEvent.purpose, self.purpose),
        ):
            if value:
                c.append(column == value)
        if self.since is not None:
            c.append(AuditEvent.at >= self.since)
        if self.until is not None:
            c.append(AuditEvent.at < self.until)
        return c


@dataclass(frozen=True)
class Page:
    """One page of matching events (oldest first) and how many match in all."""

    total: int
    offset: int
    events: Sequence[AuditEvent]


def _where(q: Select[Any], f: AuditFilter) -> Select[Any]:
    cond = f.conditions()
    return q.where(and_(*cond)) if cond else q


def search(s: Session, f: AuditFilter, *, offset: int = 0, limit: int = 100) -> Page:
    """The events matching ``f``, ``limit`` of them from ``offset``, with the total count."""
    cond = f.conditions()
    count = select(func.count()).select_from(AuditEvent)
    if cond:
        count = count.where(and_(*cond))
    total = int(s.execute(count).scalar_one())
    q = _where(select(AuditEvent), f).order_by(AuditEvent.id).offset(offset).limit(limit)
    return Page(total, offset, list(s.execute(q).scalars()))


def stream(s: Session, f: AuditFilter) -> Iterator[AuditEvent]:
    """Every event matching ``f``, oldest first, read in batches (for exports)."""
    q = _where(select(AuditEvent), f).order_by(AuditEvent.id).execution_options(yield_per=1000)
    yield from s.execute(q).scalars()


#: Events that are the platform's own bookkeeping rather than someone looking at the record.
TECHNICAL_KINDS = frozenset({"system", "job", "service"})


def access_log(
    s: Session, master: int | None, locals_: Sequence[str], own_refs: Sequence[str], *, limit: int = 500
) -> list[AuditEvent]:
    """Who accessed a patient's record, newest first: events about the master or any of its local identities,
    without the patient's own actions, authentication events, and the platform's technical events."""
    about: list[ColumnElement[bool]] = []
    if master is not None:
        about.append(AuditEvent.master_id == master)
    if locals_:
        about.append(AuditEvent.patient.in_(list(locals_)))
    if not about:
        return []
    q = (
        select(AuditEvent)
        .where(
            or_(*about),
            AuditEvent.actor_kind != "patient",
            AuditEvent.actor_kind.not_in(TECHNICAL_KINDS),
            AuditEvent.event_type != audit.USER_AUTHENTICATION,
        )
        .order_by(AuditEvent.id.desc())
        .limit(limit)
    )
    rows = list(s.execute(q).scalars())
    own = set(own_refs)
    return [e for e in rows if e.actor not in own]
