"""Tumor board (RCP) sessions and their registered patients, each with the prefetch of its images.

A session has a date, a place and a destination: our viewer (the images are ready once stored here) or a
DICOM node (ready studies are also forwarded there). Registering a patient starts a prefetch at once
(:mod:`archipel.radiology.prefetch`); the periodic sweep (:func:`sweep_due`) runs it again while the session is
ahead, so that studies arriving at a site later are fetched too.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from celery import shared_task
from sqlalchemy import func, select

from archipel.platform import access, care, jobs, schedule
from archipel.platform.authn import Principal
from archipel.platform.db import Database, utcnow
from archipel.platform.identity.models import LocalIdentity
from archipel.platform.runtime import get_runtime
from archipel.radiology import prefetch
from archipel.radiology import tumorboard_models as m
from archipel.radiology.models import DicomNode

log = logging.getLogger("archipel.prefetch")

SWEEP_TASK = "radiology.tumorboard.sweep"
#: Sessions up to this far ahead are prefetched again by the sweep, at most once per :data:`RERUN_AFTER`.
SWEEP_AHEAD = timedelta(days=14)
RERUN_AFTER = timedelta(hours=6)
#: How long after the session the registering physician's ``tumor-board`` care relationship lasts.
CARE_AFTER = timedelta(days=30)

schedule.every(900, SWEEP_TASK, queue="prefetch")


class TumorBoardError(ValueError):
    """A request about a tumor board that cannot be done; ``status`` is the HTTP status that fits."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason, self.status = reason, status


@dataclass(frozen=True)
class NewSession:
    """What a new session needs."""

    title: str
    scheduled_at: datetime
    place: str
    destination: str = m.VIEWER


def resource(site: str) -> access.Resource:
    """The access policy's resource for a session organised by ``site``."""
    return access.Resource(kind=access.TUMOR_BOARD, site=site)


def _destination_pk(db: Database, destination: str) -> int | None:
    if destination in ("", m.VIEWER):
        return None
    with db.sessions() as s:
        node = (
            s.execute(
                select(DicomNode)
                .where(DicomNode.ae_title == destination.strip(), DicomNode.port > 0)
                .order_by(DicomNode.id)
            )
            .scalars()
            .first()
        )
    if node is None:
        raise TumorBoardError(f"destination {destination!r} is neither 'viewer' nor a registered DICOM node")
    return node.id


def create_session(db: Database, principal: Principal, new: NewSession) -> int:
    """Create a session organised by ``principal``'s site; its id. Raises :class:`TumorBoardError`."""
    if not new.title.strip():
        raise TumorBoardError("a session needs a title")
    if new.scheduled_at.tzinfo is None:
        raise TumorBoardError("scheduled_at needs a time zone (for example 2026-12-10T14:00:00+01:00)")
    site = "" if principal.site in ("", "*") else principal.site
    node_pk = _destination_pk(db, new.destination)
    with db.write() as s:
        row = m.TumorBoardSession(
            title=new.title.strip(),
            scheduled_at=new.scheduled_at,
            place=new.place.strip(),
            site=site,
            destination_node_pk=node_pk,
            created_by=principal.subject,
        )
        s.add(row)
        s.flush()
        return row.id


def get_session(db: Database, session_id: int) -> m.TumorBoardSession:
    """The session, or :class:`TumorBoardError` (404)."""
    with db.sessions() as s:
        row = s.get(m.TumorBoardSession, session_id)
    if row is None:
        raise TumorBoardError(f"no tumor board session {session_id}", 404)
    return row


def list_sessions(db: Database, site: str, *, upcoming_only: bool = False) -> list[dict[str, Any]]:
    """Sessions organised by ``site`` (every site for an empty one), soonest first, with their patient counts."""
    stmt = select(m.TumorBoardSession).order_by(m.TumorBoardSession.scheduled_at, m.TumorBoardSession.id)
    if site:
        stmt = stmt.where(m.TumorBoardSession.site == site)
    if upcoming_only:
        stmt = stmt.where(m.TumorBoardSession.scheduled_at >= utcnow() - timedelta(hours=12))
    with db.sessions() as s:
        rows = list(s.execute(stmt).scalars())
        patients = dict(
            s.execute(
                select(m.TumorBoardPatient.session_id, func.count(m.TumorBoardPatient.id))
                .where(m.TumorBoardPatient.session_id.in_([r.id for r in rows]))
                .group_by(m.TumorBoardPatient.session_id)
            ).all()
        )
    return [{**session_summary(db, r), "patients": patients.get(r.id, 0)} for r in rows]


def session_summary(db: Database, row: m.TumorBoardSession) -> dict[str, Any]:
    """A session as the API shows it, without its patients."""
    destination = m.VIEWER
    if row.destination_node_pk is not None:
        with db.sessions() as s:
            node = s.get(DicomNode, row.destination_node_pk)
        destination = node.ae_title.strip() if node is not None else "?"
    return {
        "id": row.id,
        "title": row.title,
        "scheduled_at": row.scheduled_at.isoformat(),
        "place": row.place,
        "site": row.site,
        "destination": destination,
        "created_by": row.created_by,
    }


def register_patient(
    db: Database,
    principal: Principal,
    session_id: int,
    master_id: int,
    *,
    reason: str,
    modalities: Sequence[str] = (),
    date_from: str = "",
    date_to: str = "",
    send: bool = True,
) -> dict[str, Any]:
    """Register ``master_id`` to the session and start its prefetch; the patient entry.

    The registering professional gets a ``tumor-board`` care relationship with the patient, until
    :data:`CARE_AFTER` after the session, through which they see the studies brought from other sites.

    Raises :class:`TumorBoardError` (409 if the patient is registered already), :class:`prefetch.PrefetchError`
    and :class:`access.AccessDenied` (the prefetch asks for a read of the patient's record).
    """
    session = get_session(db, session_id)
    master = prefetch.current_master(db, master_id)
    with db.sessions() as s:
        taken = s.execute(
            select(m.TumorBoardPatient.id).where(
                m.TumorBoardPatient.session_id == session_id, m.TumorBoardPatient.master_id == master
            )
        ).first()
    if taken is not None:
        raise TumorBoardError(f"patient {master} is registered to session {session_id} already", 409)
    request_id = prefetch.create_request(
        db,
        principal,
        master,
        reason=reason or f"tumor board {session_id}",
        modalities=modalities,
        date_from=date_from,
        date_to=date_to,
        destination_node_pk=session.destination_node_pk,
    )
    with db.write() as s:
        row = m.TumorBoardPatient(
            session_id=session_id,
            master_id=master,
            reason=reason,
            prefetch_request_id=request_id,
            registered_by=principal.subject,
        )
        s.add(row)
        s.flush()
        patient_pk = row.id
        # The board's physician now takes part in the patient's care: the fetched studies of other sites are
        # theirs to open (and to forward to the board's node) until well after the session.
        care.record(
            s,
            principal.subject,
            master,
            care.TUMOR_BOARD,
            recorded_by=principal.subject,
            valid_to=max(session.scheduled_at, utcnow()) + CARE_AFTER,
            context=f"tumor board {session_id}",
        )
    prefetch.start_run(db, principal, request_id, send=send)
    return patient_entry(db, patient_pk)


def _display_name(db: Database, master_id: int, site: str) -> tuple[str, str]:
    """A name and PatientID to show for the master: its identity at ``site`` first, else any."""
    with db.sessions() as s:
        rows = s.execute(select(LocalIdentity).where(LocalIdentity.master_id == master_id)).scalars().all()
    if not rows:
        return "", ""
    best = next((r for r in rows if r.issuer == site), rows[0])
    name = " ".join(x for x in (best.used_name or best.birth_name, best.given_names) if x)
    return name, f"{best.issuer}/{best.local_id}"


def patient_entry(db: Database, patient_pk: int) -> dict[str, Any]:
    """A registered patient with its prefetch status (overall and per node)."""
    with db.sessions() as s:
        row = s.get(m.TumorBoardPatient, patient_pk)
        if row is None:
            raise TumorBoardError(f"no registered patient {patient_pk}", 404)
        session = s.get(m.TumorBoardSession, row.session_id)
    name, ref = _display_name(db, row.master_id, session.site if session else "")
    status = prefetch.request_status(db, row.prefetch_request_id)
    return {
        "id": row.id,
        "session_id": row.session_id,
        "master_id": row.master_id,
        "name": name,
        "patient": ref,
        "reason": row.reason,
        "registered_by": row.registered_by,
        "registered_at": row.registered_at.isoformat(),
        "status": status["state"],
        "status_reason": status["reason"],
        "job_id": status["job_id"],
        "progress": status["job"]["progress"] if status["job"] else 0.0,
        "nodes": status["nodes"],
    }


def session_detail(db: Database, session_id: int) -> dict[str, Any]:
    """The session with its patients and their statuses."""
    row = get_session(db, session_id)
    with db.sessions() as s:
        pks = list(
            s.execute(
                select(m.TumorBoardPatient.id)
                .where(m.TumorBoardPatient.session_id == session_id)
                .order_by(m.TumorBoardPatient.id)
            ).scalars()
        )
    return {**session_summary(db, row), "patients": [patient_entry(db, pk) for pk in pks]}


def rerun(db: Database, principal: Principal | str, patient_pk: int, *, send: bool = True) -> str:
    """Run a registered patient's prefetch again now, unless a run is queued or running; the job id."""
    with db.sessions() as s:
        row = s.get(m.TumorBoardPatient, patient_pk)
        if row is None:
            raise TumorBoardError(f"no registered patient {patient_pk}", 404)
        request = s.get(m.PrefetchRequest, row.prefetch_request_id)
        job = s.get(jobs.Job, request.job_id) if request is not None and request.job_id else None
    if job is not None and job.state in (jobs.QUEUED, jobs.RUNNING):
        return job.id
    return prefetch.start_run(db, principal, row.prefetch_request_id, send=send)


def due_patients(db: Database, now: datetime) -> list[tuple[int, str]]:
    """Registered patients of sessions ahead (up to :data:`SWEEP_AHEAD`) whose prefetch last ran more than
    :data:`RERUN_AFTER` ago: (patient id, the job id of their last run)."""
    with db.sessions() as s:
        rows = s.execute(
            select(m.TumorBoardPatient.id, m.PrefetchRequest.job_id, m.PrefetchRequest.last_run_at)
            .join(m.TumorBoardSession, m.TumorBoardSession.id == m.TumorBoardPatient.session_id)
            .join(m.PrefetchRequest, m.PrefetchRequest.id == m.TumorBoardPatient.prefetch_request_id)
            .where(
                m.TumorBoardSession.scheduled_at > now, m.TumorBoardSession.scheduled_at <= now + SWEEP_AHEAD
            )
        ).all()
    return [(pk, job_id) for pk, job_id, last in rows if last is None or last <= now - RERUN_AFTER]


def sweep_due(db: Database, now: datetime | None = None, *, send: bool = True) -> list[str]:
    """Start the prefetch again for every due patient, as the professional who registered them; job ids."""
    started = []
    for patient_pk, last_job_id in due_patients(db, now or utcnow()):
        last = jobs.get_job(db, last_job_id) if last_job_id else None
        if last is not None and last.state in (jobs.QUEUED, jobs.RUNNING):
            continue
        actor = jobs.acting_principal(db, last) if last is not None else None
        if actor is None:
            continue
        started.append(rerun(db, actor, patient_pk, send=send))
    if started:
        log.info("event=tumor_board_sweep started=%d", len(started))
    return started


@shared_task(name=SWEEP_TASK, **jobs.RETRY_TRANSIENT)
def sweep_task() -> None:
    """Periodic: prefetch again the patients of the coming sessions (cheap when none is due)."""
    sweep_due(get_runtime().db)
