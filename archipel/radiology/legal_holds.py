"""Legal holds: a patient or a study that the retention run must not delete, with why, who and when.

A hold on a patient names a local identity (``issuer/PatientID``) and covers every identity linked to the same
master patient, as the MPI links them when the run weighs it. A hold is never deleted: it is lifted, with who,
when and why, and stays in the table as the record of the hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from archipel.platform import audit
from archipel.platform.authn import Principal
from archipel.platform.db import Database, utcnow
from archipel.platform.identity.models import LocalIdentity
from archipel.radiology.models import Patient, Study
from archipel.radiology.retention_models import HOLD_SCOPES, PATIENT_HOLD, LegalHold


class HoldError(ValueError):
    """A hold that cannot be placed or lifted, with the reason."""


@dataclass(frozen=True)
class HoldView:
    """One hold as the CLI and the API show it."""

    id: int
    scope: str
    target: str
    reason: str
    created_by: str
    created_at: datetime
    lifted_at: datetime | None
    lifted_by: str
    lift_reason: str

    @property
    def active(self) -> bool:
        """Whether the hold still blocks deletion."""
        return self.lifted_at is None

    def as_json(self) -> dict[str, object]:
        """The hold as JSON for the API."""
        return {
            "id": self.id,
            "scope": self.scope,
            "target": self.target,
            "reason": self.reason,
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
            "active": self.active,
            "lifted_at": self.lifted_at.isoformat() if self.lifted_at else None,
            "lifted_by": self.lifted_by,
            "lift_reason": self.lift_reason,
        }


def _view(h: LegalHold) -> HoldView:
    return HoldView(
        h.id, h.scope, h.target, h.reason, h.created_by, h.created_at, h.lifted_at, h.lifted_by, h.lift_reason
    )


def _audit(s: Session, who: Principal, action: str, hold: LegalHold, patient: str) -> None:
    audit.append(
        s,
        who,
        audit.PATIENT_RECORD,
        action,
        patient=patient,
        obj=f"legal-hold:{hold.id} {hold.scope}:{hold.target}",
        purpose=audit.OPERATIONS,
        detail=hold.reason if action == "C" else f"lifted: {hold.lift_reason}",
    )


def _patient_of(s: Session, hold: LegalHold) -> str:
    if hold.scope == PATIENT_HOLD:
        return hold.target
    row = s.execute(
        select(Patient.issuer, Patient.patient_id)
        .join(Study, Study.patient_pk == Patient.id)
        .where(Study.study_uid == hold.target)
    ).first()
    return f"{row.issuer}/{row.patient_id}" if row is not None else ""


def add_hold(db: Database, scope: str, target: str, reason: str, who: Principal) -> HoldView:
    """Place a hold on a patient (``issuer/PatientID``) or a study (its Study Instance UID), audited.

    Raises :class:`HoldError` for an unknown scope, an empty reason, a malformed patient reference or an unknown
    study; a patient the MPI does not know yet may be held (its data may be on its way).
    """
    target, reason = target.strip(), reason.strip()
    if scope not in HOLD_SCOPES:
        raise HoldError(f"a hold is on one of {', '.join(HOLD_SCOPES)}, not {scope!r}")
    if not reason:
        raise HoldError("a hold needs a reason")
    with audit._chain_lock, db.write() as s:
        if scope == PATIENT_HOLD:
            issuer, _, pid = target.partition("/")
            if not issuer or not pid:
                raise HoldError(f"a patient is named as ISSUER/PatientID, not {target!r}")
        elif s.execute(select(Study.id).where(Study.study_uid == target)).first() is None:
            raise HoldError(f"no study {target}")
        hold = LegalHold(
            scope=scope, target=target, reason=reason, created_by=who.subject, created_at=utcnow()
        )
        s.add(hold)
        s.flush()
        _audit(s, who, "C", hold, _patient_of(s, hold))
        return _view(hold)


def lift_hold(db: Database, hold_id: int, reason: str, who: Principal) -> HoldView:
    """Lift the hold ``hold_id``, audited; raises :class:`HoldError` for an unknown or already lifted hold, or
    no reason."""
    if not reason.strip():
        raise HoldError("lifting a hold needs a reason")
    with audit._chain_lock, db.write() as s:
        hold = s.get(LegalHold, hold_id)
        if hold is None:
            raise HoldError(f"no hold {hold_id}")
        if hold.lifted_at is not None:
            raise HoldError(f"hold {hold_id} was lifted already on {hold.lifted_at:%Y-%m-%d}")
        hold.lifted_at, hold.lifted_by, hold.lift_reason = utcnow(), who.subject, reason.strip()
        s.flush()
        _audit(s, who, "U", hold, _patient_of(s, hold))
        return _view(hold)


def list_holds(db: Database, *, include_lifted: bool = False) -> list[HoldView]:
    """The holds, newest first; only the active ones unless ``include_lifted``."""
    stmt = select(LegalHold).order_by(LegalHold.id.desc())
    if not include_lifted:
        stmt = stmt.where(LegalHold.lifted_at.is_(None))
    with db.sessions() as s:
        return [_view(h) for h in s.execute(stmt).scalars()]


@dataclass(frozen=True)
class ActiveHolds:
    """What the active holds cover: held studies, held master patients, held local identities without a master."""

    studies: frozenset[str]
    masters: frozenset[int]
    patients: frozenset[str]

    def covers(self, study_uid: str, master: int | None, patient: str) -> bool:
        """Whether a study (or a document, with ``study_uid`` empty) of ``patient`` / ``master`` is held."""
        return (
            study_uid in self.studies
            or patient in self.patients
            or (master is not None and master in self.masters)
        )


def active_holds(db: Database) -> ActiveHolds:
    """The active holds, patients resolved to their master patients through the MPI."""
    studies: set[str] = set()
    patients: set[str] = set()
    with db.sessions() as s:
        for scope, target in s.execute(
            select(LegalHold.scope, LegalHold.target).where(LegalHold.lifted_at.is_(None))
        ):
            (patients if scope == PATIENT_HOLD else studies).add(target)
        masters: set[int] = set()
        for ref in patients:
            issuer, _, pid = ref.partition("/")
            master = s.execute(
                select(LocalIdentity.master_id).where(
                    LocalIdentity.issuer == issuer, LocalIdentity.local_id == pid
                )
            ).scalar_one_or_none()
            if master is not None:
                masters.add(int(master))
    return ActiveHolds(frozenset(studies), frozenset(masters), frozenset(patients))
