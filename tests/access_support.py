"""Test support for the access policy: link a stored patient to a master patient, give a professional a care
relationship, record consent, mark a study confidential, open a break-the-glass access."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from archipel.platform import breakglass, care, consent
from archipel.platform.authn import Principal
from archipel.platform.confidentiality import encode
from archipel.platform.db import Database, utcnow
from archipel.platform.identity.intake import add_issuer
from archipel.platform.identity.service import LocalIdentityInput, master_of, register
from archipel.radiology.models import Study


def ensure_master(
    db: Database, issuer: str, patient_id: str, birth_name: str = "", birth_date: str = ""
) -> int:
    """The master patient of ``issuer/patient_id``, registering the identity in the MPI if the archive has not.

    A distinct birth name per test patient keeps the linker from joining two test patients.
    """
    found = master_of(db, issuer, patient_id)
    if found is not None:
        return found
    with db.write() as s:
        add_issuer(s, issuer)
    outcome = register(
        db,
        LocalIdentityInput(
            issuer=issuer,
            local_id=patient_id,
            birth_name=birth_name or f"PATIENT{patient_id}",
            given_names="TEST",
            birth_date=birth_date,
            sex="F",
        ),
    )
    return outcome.master_id


def relate(
    db: Database,
    professional: str,
    master: int,
    kind: str = care.CARE_TEAM,
    named: bool = False,
    days: int | None = 30,
) -> int:
    """Give ``professional`` a care relationship with ``master`` from now on (for ``days``); returns its id."""
    now = utcnow()
    with db.write() as s:
        row = care.record(
            s,
            professional,
            master,
            kind,
            recorded_by="test",
            valid_from=now - timedelta(minutes=1),
            valid_to=None if days is None else now + timedelta(days=days),
            named_by_patient=named,
        )
        return row.id


def set_consent(db: Database, master: int, sharing: str, method: str = "paper") -> None:
    """Record a sharing decision for ``master``."""
    with db.write() as s:
        consent.record(s, master, sharing, method, recorded_by="test")


def mark(db: Database, study_uid: str, *codes: str) -> None:
    """Set the confidentiality codes of a study (replacing what it had)."""
    with db.write() as s:
        s.execute(update(Study).where(Study.study_uid == study_uid).values(confidentiality=encode(codes)))


def break_glass(db: Database, who: Principal, master: int, minutes: int = 60) -> int:
    """Open an emergency access for ``who`` on ``master``; returns its id."""
    with db.write() as s:
        opened = breakglass.open_access(
            s, who, master, "emergency: unconscious patient", now=utcnow(), minutes=minutes
        )
        return opened.id
