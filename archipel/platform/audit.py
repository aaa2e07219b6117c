"""The audit trail: every access to patient data, allowed or denied, as an append-only hash-chained log.

Each event stores the SHA-256 of its predecessor's hash and its own content, so changing or deleting an event
breaks the chain. Event types follow the DICOM audit message codes (DCM 110100-series).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from datetime import datetime

from sqlalchemy import BigInteger, Integer, String, Text, select, text
from sqlalchemy.orm import Mapped, Session, mapped_column

from archipel.platform.authn import Principal
from archipel.platform.db import Base, Database, UTCDateTime, utcnow

log = logging.getLogger("archipel.audit")

PATIENT_RECORD = "110110"
QUERY = "110112"
INSTANCES_ACCESSED = "110103"
INSTANCES_TRANSFERRED = "110104"
EXPORT = "110106"
IMPORT = "110107"
USER_AUTHENTICATION = "110114"
#: DCM 110101 Audit Log Used: someone read or exported the audit trail itself.
AUDIT_LOG_USED = "110101"
#: DCM 110113 Security Alert: e.g. a broken chain found by verification.
SECURITY_ALERT = "110113"

#: Why an event happened (``purpose``); mapped to HL7 v3 PurposeOfUse codes in the FHIR export.
CARE = "care"
BREAK_GLASS = "break-glass"
IDENTITY_MANAGEMENT = "identity-management"
PATIENT_REQUEST = "patient-request"
OPERATIONS = "operations"
AUDIT_REVIEW = "audit"

#: Outcomes.
SUCCESS = "success"
DENIED = "denied"
FAILURE = "failure"

GENESIS = "0" * 64


class AuditEvent(Base):
    """One audit event, chained to the one before it."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    event_type: Mapped[str] = mapped_column(String(16), index=True)
    action: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(128), index=True)
    actor_role: Mapped[str] = mapped_column(String(32), default="")
    actor_kind: Mapped[str] = mapped_column(String(16), default="user")
    source: Mapped[str] = mapped_column(String(64), default="")
    purpose: Mapped[str] = mapped_column(String(32), default="care")
    patient: Mapped[str] = mapped_column(String(160), default="", index=True)
    object: Mapped[str] = mapped_column(Text, default="")
    detail: Mapped[str] = mapped_column(Text, default="")
    #: The acting professional's organisation (site), or the node's site.
    actor_site: Mapped[str] = mapped_column(String(64), default="", server_default="")
    #: The master patient (MPI) the event is about, when known.
    master_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


def _digest(prev: str, fields: dict[str, str]) -> str:
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256((prev + body).encode()).hexdigest()


def _fields(e: AuditEvent) -> dict[str, str]:
    fields = {
        "at": e.at.isoformat(),
        "event_type": e.event_type,
        "action": e.action,
        "outcome": e.outcome,
        "actor": e.actor,
        "actor_role": e.actor_role,
        "actor_kind": e.actor_kind,
        "source": e.source,
        "purpose": e.purpose,
        "patient": e.patient,
        "object": e.object,
        "detail": e.detail,
    }
    # Fields added after the first release enter the hash only when set, so events written before them still
    # verify unchanged.
    if e.actor_site:
        fields["actor_site"] = e.actor_site
    if e.master_id is not None:
        fields["master_id"] = str(e.master_id)
    return fields


_chain_lock = threading.Lock()
_CHAIN_LOCK_KEY = 0x41524348  # "ARCH"


def record(
    db: Database,
    principal: Principal,
    event_type: str,
    action: str,
    *,
    outcome: str = "success",
    patient: str = "",
    obj: str = "",
    source: str = "",
    purpose: str = "care",
    detail: str = "",
    master: int | None = None,
    actor_site: str | None = None,
) -> None:
    """Append one event to the chain, in its own committed transaction.

    ``patient`` is the local reference ``issuer/PatientID``, ``master`` the MPI master patient when known,
    ``source`` the caller's IP address (or a node's host), ``actor_site`` the actor's organisation (default: the
    principal's site).
    """
    with _chain_lock, db.write() as s:
        append(
            s,
            principal,
            event_type,
            action,
            outcome=outcome,
            patient=patient,
            obj=obj,
            source=source,
            purpose=purpose,
            detail=detail,
            master=master,
            actor_site=actor_site,
        )


def append(
    s: Session,
    principal: Principal,
    event_type: str,
    action: str,
    *,
    outcome: str = "success",
    patient: str = "",
    obj: str = "",
    source: str = "",
    purpose: str = "care",
    detail: str = "",
    master: int | None = None,
    actor_site: str | None = None,
) -> AuditEvent:
    """Append one event inside the caller's write transaction (which must hold the write lock); the keyword
    arguments are those of :func:`record`."""
    if s.get_bind().dialect.name == "postgresql":
        # Several processes append to one chain: serialise them so that no two events share a predecessor.
        s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _CHAIN_LOCK_KEY})
    last = s.execute(select(AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1)).scalar_one_or_none()
    prev = last or _anchor_hash(s)
    event = AuditEvent(
        at=utcnow(),
        event_type=event_type,
        action=action,
        outcome=outcome,
        actor=principal.subject,
        actor_role=principal.role,
        actor_kind=principal.kind,
        source=source,
        purpose=purpose,
        patient=patient,
        object=obj[:4000],
        detail=detail[:4000],
        actor_site=(principal.site if actor_site is None else actor_site)[:64],
        master_id=master,
        prev_hash=prev,
        hash="",
    )
    event.hash = _digest(prev, _fields(event))
    s.add(event)
    s.flush()
    log.info(
        "event=audit type=%s action=%s outcome=%s actor=%s", event_type, action, outcome, principal.subject
    )
    return event


def _anchor_hash(s: Session) -> str:
    """The hash the next event chains to when the table is empty: the last purged event's, else genesis."""
    row = s.execute(
        text("SELECT event_hash FROM audit_checkpoints WHERE kind = 'anchor' ORDER BY id DESC LIMIT 1")
    ).scalar_one_or_none()
    return str(row) if row else GENESIS


def content_hash(event: AuditEvent) -> str:
    """The hash ``event`` must carry given its stored predecessor hash and its content."""
    return _digest(event.prev_hash, _fields(event))


def verify(s: Session) -> tuple[bool, int | None]:
    """Walk the chain from genesis (or from the last retention anchor); return ``(True, None)`` or
    ``(False, id_of_first_broken_event)``. :mod:`archipel.platform.audit_verify` says more."""
    prev = _anchor_hash(s)
    for event in s.execute(select(AuditEvent).order_by(AuditEvent.id)).scalars():
        if event.prev_hash != prev or event.hash != _digest(prev, _fields(event)):
            return False, event.id
        prev = event.hash
    return True, None
