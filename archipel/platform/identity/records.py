"""Read-side views of the MPI: a master patient with its local identities, and the history of its links.

These are what the identity officer's API and a professional's patient record show. They read committed rows
only and take no MPI lock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from archipel.platform.db import Database
from archipel.platform.identity.ins import outgoing_ins
from archipel.platform.identity.intake import IdentityNotFound
from archipel.platform.identity.models import LinkDecision, LocalIdentity, MasterMerge, MasterPatient


@dataclass(frozen=True)
class IdentityView:
    """One local identity as the MPI holds it, with its current link."""

    issuer: str
    local_id: str
    birth_name: str
    used_name: str
    given_names: str
    birth_date: str
    sex: str
    birth_place: str
    address: str
    postcode: str
    city: str
    phone: str
    #: In a professional's view, the INS only when qualified (RNIV: no other may be used or passed on); the
    #: identity officer sees any, to resolve doubts.
    ins: str
    ins_status: str
    master_id: int
    status: str
    score: float | None
    contributions: dict[str, float]
    decided_by: str


@dataclass(frozen=True)
class HistoryEntry:
    """One link decision (automatic or an officer's) or one merge, in the order they happened."""

    at: datetime
    action: str
    issuer: str
    local_id: str
    master_id: int
    previous_master_id: int | None
    status: str
    score: float | None
    actor: str
    reason: str
    merge_id: int | None = None


@dataclass(frozen=True)
class MasterRecord:
    """A master patient: whether it stands or was merged into another, its identities and its history."""

    master_id: int
    active: bool
    merged_into: int | None
    created_at: datetime
    identities: list[IdentityView] = field(default_factory=list)
    history: list[HistoryEntry] = field(default_factory=list)


def _view(row: LocalIdentity, officer: bool) -> IdentityView:
    return IdentityView(
        issuer=row.issuer,
        local_id=row.local_id,
        birth_name=row.birth_name,
        used_name=row.used_name,
        given_names=row.given_names,
        birth_date=row.birth_date,
        sex=row.sex,
        birth_place=row.birth_place,
        address=row.address,
        postcode=row.postcode,
        city=row.city,
        phone=row.phone,
        ins=row.ins if officer else outgoing_ins(row.ins, row.ins_status) or "",
        ins_status=row.ins_status,
        master_id=row.master_id,
        status=row.status,
        score=row.score,
        contributions=json.loads(row.contributions or "{}"),
        decided_by=row.decided_by,
    )


def _decisions(s: Session, where: object) -> list[HistoryEntry]:
    rows = s.execute(
        select(LinkDecision, LocalIdentity.issuer, LocalIdentity.local_id)
        .join(LocalIdentity, LocalIdentity.id == LinkDecision.local_pk)
        .where(where)  # type: ignore[arg-type]
        .order_by(LinkDecision.id)
    ).all()
    return [
        HistoryEntry(
            at=d.at,
            action=d.action,
            issuer=issuer,
            local_id=local_id,
            master_id=d.master_id,
            previous_master_id=d.previous_master_id,
            status=d.status,
            score=d.score,
            actor=d.actor,
            reason=d.reason,
        )
        for d, issuer, local_id in rows
    ]


def _merges(s: Session, master_id: int) -> list[HistoryEntry]:
    out: list[HistoryEntry] = []
    merges = s.execute(
        select(MasterMerge)
        .where(or_(MasterMerge.source_id == master_id, MasterMerge.target_id == master_id))
        .order_by(MasterMerge.id)
    ).scalars()
    for m in merges:
        out.append(
            HistoryEntry(m.at, "merge", "", "", m.target_id, m.source_id, "", None, m.actor, m.reason, m.id)
        )
        if m.undone_by and m.undone_at is not None:
            out.append(
                HistoryEntry(
                    m.undone_at, "unmerge", "", "", m.source_id, m.target_id, "", None, m.undone_by, "", m.id
                )
            )
    return out


def master_record(db: Database, master_id: int, *, officer: bool = True) -> MasterRecord:
    """Master ``master_id`` with its current identities and, for the identity ``officer``, every link decision
    that put an identity on it or took one off it, and its merges. Raises :class:`IdentityNotFound`."""
    with db.sessions() as s:
        master = s.get(MasterPatient, master_id)
        if master is None:
            raise IdentityNotFound(f"no master patient {master_id}")
        members = s.execute(
            select(LocalIdentity)
            .where(LocalIdentity.master_id == master_id)
            .order_by(LocalIdentity.issuer, LocalIdentity.local_id)
        ).scalars()
        identities = [_view(row, officer) for row in members]
        history: list[HistoryEntry] = []
        if officer:
            history = _decisions(
                s, or_(LinkDecision.master_id == master_id, LinkDecision.previous_master_id == master_id)
            )
            history = sorted([*history, *_merges(s, master_id)], key=lambda e: e.at)
        return MasterRecord(
            master.id, master.active, master.merged_into, master.created_at, identities, history
        )


def local_record(db: Database, issuer: str, local_id: str) -> tuple[IdentityView, list[HistoryEntry]]:
    """One local identity (the officer's view) and every decision about its link, oldest first. Raises
    :class:`IdentityNotFound`."""
    with db.sessions() as s:
        row = s.execute(
            select(LocalIdentity).where(LocalIdentity.issuer == issuer, LocalIdentity.local_id == local_id)
        ).scalar_one_or_none()
        if row is None:
            raise IdentityNotFound(f"no local identity {local_id!r} of issuer {issuer!r}")
        return _view(row, True), _decisions(s, LinkDecision.local_pk == row.id)
