"""Staff hand out, list and revoke patients' portal access codes (policy kind ``patient-access``).

Reception staff of a site holding the patient's record, and administrators, issue a code for a patient named
by their master id or by ``ISSUER/PATIENT_ID`` (the code is returned once and stored as a hash, as the CLI's),
list the patient's codes (never the codes themselves), and revoke one with a reason: the code then opens no new
session, and every portal session opened with it ends at once. Each call passes the access policy first, which
audits it (allowed or denied) as a Patient Record event, before the patient is even looked up, so that probing
unknown patients is audited too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from archipel.platform import access, access_facts, audit, consent, sessions
from archipel.platform.authn import Principal
from archipel.platform.db import Database
from archipel.platform.identity.models import LocalIdentity, MasterPatient
from archipel.platform.patient_access import (
    PATIENT,
    PatientAccessCode,
    PatientOneTimeCode,
    issue_access_code,
    mask,
)

REVOKED_SESSION = "access code revoked"


class CodeError(Exception):
    """A refused step, with the HTTP status it maps to (404 unknown, 409 already revoked) and the reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class PatientName:
    """A patient as staff name them: a master patient id, or a local ``ISSUER/PATIENT_ID``."""

    master: int | None = None
    ref: str = ""

    @classmethod
    def parse(cls, text: str) -> PatientName:
        """``"12"`` (a master id) or ``"ISSUER/PATIENT_ID"``; :class:`ValueError` otherwise."""
        text = text.strip()
        if text.isdigit():
            return cls(master=int(text))
        issuer, sep, local_id = text.partition("/")
        if not sep or not issuer.strip() or not local_id.strip():
            raise ValueError("a patient is a master patient id or ISSUER/PATIENT_ID")
        return cls(ref=f"{issuer.strip()}/{local_id.strip()}")

    def resource(self, ident: str) -> access.Resource:
        """The policy's resource for this patient (the issuer as site: its own staff may act on its IDs)."""
        if self.master is not None:
            return access.Resource(kind=access.PATIENT_ACCESS, master=self.master, ident=ident)
        return access.Resource(
            kind=access.PATIENT_ACCESS, site=self.ref.partition("/")[0], patient=self.ref, ident=ident
        )

    def __str__(self) -> str:
        return self.ref or f"master patient {self.master}"


@dataclass(frozen=True)
class CodeInfo:
    """What staff see of an access code: never the code itself."""

    id: int
    patient: str
    holder: str
    channel: str
    to: str
    issued_at: datetime
    issued_by: str
    expires_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    revoked_by: str
    revoked_reason: str

    def status(self, now: datetime) -> str:
        """``revoked``, ``expired`` or ``active``."""
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if now >= self.expires_at else "active"

    def as_dict(self, now: datetime) -> dict[str, Any]:
        """JSON-ready values, times in ISO 8601."""

        def iso(t: datetime | None) -> str | None:
            return t.isoformat() if t is not None else None

        return {
            "id": self.id,
            "patient": self.patient,
            "holder": self.holder,
            "channel": self.channel,
            "to": self.to,
            "issued_at": iso(self.issued_at),
            "issued_by": self.issued_by,
            "expires_at": iso(self.expires_at),
            "last_used_at": iso(self.last_used_at),
            "revoked_at": iso(self.revoked_at),
            "revoked_by": self.revoked_by,
            "revoked_reason": self.revoked_reason,
            "status": self.status(now),
        }


@dataclass(frozen=True)
class IssuedCode:
    """A new code: shown once to the member of staff, who hands it to the patient."""

    code: str
    info: CodeInfo


def _info(s: Session, row: PatientAccessCode) -> CodeInfo:
    last = s.execute(
        select(func.max(PatientOneTimeCode.used_at)).where(PatientOneTimeCode.access_code_id == row.id)
    ).scalar_one()
    return CodeInfo(
        id=row.id,
        patient=row.patient_ref,
        holder=row.holder or PATIENT,
        channel=row.channel,
        to=mask(row.channel, row.contact),
        issued_at=row.created_at,
        issued_by=row.created_by,
        expires_at=row.expires_at,
        last_used_at=last,
        revoked_at=row.revoked_at,
        revoked_by=row.revoked_by,
        revoked_reason=row.revoked_reason,
    )


def _check(
    db: Database,
    principal: Principal,
    action: str,
    resource: access.Resource,
    now: datetime,
    source: str,
    note: str,
) -> access.Resource:
    resource, facts = access_facts.load(db, principal, resource, now)
    access.check(
        db,
        principal,
        action,
        resource,
        event_type=audit.PATIENT_RECORD,
        source=source,
        facts=facts,
        note=note,
    )
    return resource


def _identities(s: Session, master: int) -> list[LocalIdentity]:
    group = consent.merged_groups(s, {master})
    return list(
        s.execute(
            select(LocalIdentity).where(LocalIdentity.master_id.in_(list(group))).order_by(LocalIdentity.id)
        ).scalars()
    )


def _ref_for_issue(s: Session, principal: Principal, patient: PatientName, master: int | None) -> str:
    """The local reference the code is issued for: the one named, or the master's identity at the caller's
    site (else its oldest); 404 if the patient index does not know the patient."""
    if patient.ref:
        issuer, _, local_id = patient.ref.partition("/")
        found = s.execute(
            select(LocalIdentity.id).where(LocalIdentity.issuer == issuer, LocalIdentity.local_id == local_id)
        ).first()
        if found is None:
            raise CodeError(404, f"no patient {patient.ref} in the patient index")
        return patient.ref
    if master is None or s.get(MasterPatient, master) is None:
        raise CodeError(404, f"no {patient}")
    identities = _identities(s, master)
    if not identities:
        raise CodeError(404, f"{patient} has no local identity to issue a code for")
    own = [i for i in identities if i.issuer == principal.site]
    chosen = (own or identities)[0]
    return f"{chosen.issuer}/{chosen.local_id}"


def issue(
    db: Database,
    principal: Principal,
    patient: PatientName,
    channel: str,
    contact: str,
    *,
    valid_for: timedelta,
    now: datetime,
    holder: str = PATIENT,
    source: str = "",
) -> IssuedCode:
    """Issue an access code for ``patient`` (policy and audit first); :class:`CodeError` 404 for a patient the
    index does not know, :class:`ValueError` for a bad channel, contact or holder."""
    resource = _check(
        db,
        principal,
        access.CREATE,
        patient.resource(f"new access code of {patient}"),
        now,
        source,
        f"by {channel}",
    )
    with db.write() as s:
        ref = _ref_for_issue(s, principal, patient, resource.master)
        code = issue_access_code(
            s,
            ref,
            channel,
            contact,
            now=now,
            valid_for=valid_for,
            created_by=principal.subject,
            holder=holder,
        )
        row = s.execute(
            select(PatientAccessCode).where(PatientAccessCode.public_id == code.replace("-", "")[:8])
        ).scalar_one()
        return IssuedCode(code, _info(s, row))


def _refs_of(s: Session, patient: PatientName, master: int | None) -> set[str]:
    refs = {patient.ref} if patient.ref else set()
    if master is not None:
        refs |= {f"{i.issuer}/{i.local_id}" for i in _identities(s, master)}
    return refs


def list_codes(
    db: Database, principal: Principal, patient: PatientName, *, now: datetime, source: str = ""
) -> list[CodeInfo]:
    """Every access code of the patient (all their identities in the index), newest first; policy and audit
    first; :class:`CodeError` 404 for a patient that is neither in the index nor holds any code."""
    resource = _check(
        db, principal, access.READ, patient.resource(f"access codes of {patient}"), now, source, ""
    )
    with db.sessions() as s:
        if resource.master is not None and s.get(MasterPatient, resource.master) is None:
            raise CodeError(404, f"no {patient}")
        refs = _refs_of(s, patient, resource.master)
        rows = list(
            s.execute(
                select(PatientAccessCode)
                .where(PatientAccessCode.patient_ref.in_(refs))
                .order_by(PatientAccessCode.id.desc())
            ).scalars()
        )
        if resource.master is None and not rows:
            raise CodeError(404, f"no patient {patient} in the patient index")
        return [_info(s, r) for r in rows]


def revoke(
    db: Database, principal: Principal, code_id: int, reason: str, *, now: datetime, source: str = ""
) -> tuple[CodeInfo, int]:
    """Revoke access code ``code_id`` at once and end the portal sessions opened with it; return the code and
    how many sessions ended. :class:`CodeError` 404 for an unknown code, 409 for one already revoked."""
    if not reason.strip():
        raise ValueError("a reason is required to revoke an access code")
    with db.sessions() as s:
        row = s.get(PatientAccessCode, code_id)
        ref = row.patient_ref if row is not None else ""
    if row is None:
        raise CodeError(404, f"no access code {code_id}")
    _check(
        db,
        principal,
        access.UPDATE,
        PatientName(ref=ref).resource(f"access code {code_id}"),
        now,
        source,
        f"revoke: {reason.strip()}",
    )
    with db.write() as s:
        # Locked as a sign-in locks it (open_portal_session): no session opens with it once this commits.
        row = s.execute(
            select(PatientAccessCode).where(PatientAccessCode.id == code_id).with_for_update()
        ).scalar_one()
        if row.revoked_at is not None:
            raise CodeError(409, f"access code {code_id} was already revoked at {row.revoked_at.isoformat()}")
        row.revoked_at, row.revoked_by, row.revoked_reason = now, principal.subject, reason.strip()[:500]
        ended = sessions.revoke_for_access_code(s, code_id, REVOKED_SESSION, now)
        s.flush()
        return _info(s, row), ended
