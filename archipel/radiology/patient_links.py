"""How the archive's patients reach the master patient index (MPI).

Every stored object creates or updates the local identity ``(issuer, PatientID)``, where the issuer is the
producing site (the archive's ``patients.issuer``). :func:`link_object` does it for one incoming object, before
the object's index row is committed, so that an acknowledged object is always linked: a crash in between leaves
at worst an identity whose object was never acknowledged (and will be sent again). :func:`link_unlinked_patients`
is the start-up sweep's part: it registers the archive patients that have no local identity (objects stored
before the archive fed the MPI, or whose identity could not be registered at the time).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pydicom
from sqlalchemy import Table, and_, select

from archipel.platform.db import Database
from archipel.platform.identity.feed import feed_for, update_identities
from archipel.platform.identity.intake import IdentityError, LinkOutcome, LocalIdentityInput
from archipel.platform.identity.models import LocalIdentity
from archipel.platform.storage import BlobStore
from archipel.radiology.demographics import NO_EXTRAS, identity_input, read_extras
from archipel.radiology.dicomfile import ParsedInstance
from archipel.radiology.models import Instance, Patient, Series, Study

log = logging.getLogger("archipel.archive")

_PATIENTS: Table = Patient.__table__  # type: ignore[assignment]
_LOCALS: Table = LocalIdentity.__table__  # type: ignore[assignment]


def link_object(db: Database, p: ParsedInstance, refused: Callable[[], bool]) -> LinkOutcome | None:
    """Create or update the local identity that object ``p`` names (a no-op when the MPI knows it so already).

    ``refused()`` says whether the archive is bound to refuse the object (a conflicting duplicate, say): a
    refused object must not change what the MPI knows. It is asked only when the MPI would be written.
    An object without PatientID or issuer cannot name an identity, and one whose identity the MPI refuses
    (an issuer code with spaces, say) is stored all the same: both are logged, and left to the start-up sweep.
    """
    if not p.patient_id or not p.issuer:
        log.warning(
            "event=identity_not_linked sop_uid=%s reason=%s",
            p.sop_uid,
            "no PatientID" if not p.patient_id else "no issuer (IssuerOfPatientID or the sender's site)",
        )
        return None
    inp = identity_input(p.issuer, p.patient_id, p.patient_name, p.birth_date, p.sex, p.extras)
    feed = feed_for(db)
    if feed.knows(inp):
        return None
    if refused():
        return None
    try:
        return feed.note(db, inp)
    except IdentityError as exc:
        log.warning("event=identity_not_linked sop_uid=%s reason=%s", p.sop_uid, exc)
        return None


def _unlinked(db: Database) -> list[tuple[int, str, str, str, str, str]]:
    pa, li = _PATIENTS.c, _LOCALS.c
    with db.engine.connect() as c:
        rows = c.execute(
            select(pa.id, pa.issuer, pa.patient_id, pa.patient_name, pa.birth_date, pa.sex)
            .outerjoin(_LOCALS, and_(li.issuer == pa.issuer, li.local_id == pa.patient_id))
            .where(li.id.is_(None), pa.patient_id != "", pa.issuer != "")
            .order_by(pa.id)
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def _latest_blob(db: Database, patient_pk: int) -> str | None:
    i, se, st = Instance.__table__.c, Series.__table__.c, Study.__table__.c
    with db.engine.connect() as c:
        return c.execute(
            select(i.blob_key)
            .join(Series.__table__, se.id == i.series_pk)
            .join(Study.__table__, st.id == se.study_pk)
            .where(st.patient_pk == patient_pk)
            .order_by(i.received_at.desc(), i.id.desc())
            .limit(1)
        ).scalar_one_or_none()


def _identity_of(
    db: Database, blobs: BlobStore, row: tuple[int, str, str, str, str, str]
) -> LocalIdentityInput:
    """The identity a patient's most recent object states; the index row's keys if it cannot be read."""
    pk, issuer, patient_id, name, birth_date, sex = row
    key = _latest_blob(db, pk)
    if key is not None:
        try:
            with blobs.open(key) as f:
                ds = pydicom.dcmread(f, stop_before_pixels=True)
            return identity_input(
                issuer,
                patient_id,
                str(ds.get("PatientName", "") or ""),
                str(ds.get("PatientBirthDate", "") or ""),
                str(ds.get("PatientSex", "") or ""),
                read_extras(ds),
            )
        except Exception as exc:  # a blob gone or unreadable: the index row still names the patient
            log.warning(
                "event=identity_recovery_blob_unreadable patient_pk=%d error=%s", pk, type(exc).__name__
            )
    return identity_input(issuer, patient_id, name, birth_date, sex, NO_EXTRAS)


def _chunks(rows: list[tuple[int, str, str, str, str, str]], size: int) -> Iterator[list]:  # type: ignore[type-arg]
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def link_unlinked_patients(db: Database, blobs: BlobStore, chunk: int = 500) -> int:
    """Register every archive patient that has no local identity yet; return how many were registered.

    Each identity is read from the patient's most recent object, so it carries the same fields as if the
    object had just arrived. A chunk the MPI refuses is retried one identity at a time, so one bad identity
    (logged) does not hold back the others.
    """
    rows = _unlinked(db)
    if not rows:
        return 0
    log.info("event=identity_recovery_start patients=%d", len(rows))
    done = 0
    for part in _chunks(rows, chunk):
        inputs = [_identity_of(db, blobs, row) for row in part]
        try:
            done += len(update_identities(db, inputs, audited=False))
        except IdentityError:
            for inp in inputs:
                try:
                    done += len(update_identities(db, [inp], audited=False))
                except IdentityError as exc:
                    log.warning("event=identity_not_linked issuer=%s reason=%s", inp.issuer, exc)
        log.info("event=identity_recovery_progress done=%d total=%d", done, len(rows))
    return done
