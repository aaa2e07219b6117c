"""An episode's priors fetched from the region's other PACS, tracked on the episode, the case held until they come.

Asking for priors (:func:`request_priors`) starts a real prefetch (:mod:`archipel.radiology.prefetch`) of the
woman's earlier MG studies, recorded as a :class:`PriorFetch` on the episode; the case is held back from the
worklists while the fetch is ``requested`` or ``retrieving``, and stays held when it ``failed`` (with the nodes'
reasons) until someone asks again or releases it by hand (:func:`release`, status ``none`` or ``received``).
The fetch's own task (:func:`fetch_task`, queue ``prefetch``) runs the prefetch job and then settles the
episode at once; a periodic check (:func:`check_task`) settles any fetch whose job ended some other way, and
queues again one whose job never started. The earlier studies that arrive are marked as the episode's priors, so
they are not left on the reconciliation list.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from celery import shared_task
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from archipel.mammo import episodes
from archipel.mammo.episodes import ScreeningError
from archipel.mammo.models import (
    PRIORS_FAILED,
    PRIORS_HELD,
    PRIORS_RECEIVED,
    PRIORS_REQUESTED,
    PRIORS_RETRIEVING,
    Episode,
    PriorFetch,
    ScreeningStudy,
)
from archipel.platform import jobs, schedule
from archipel.platform.authn import Principal
from archipel.platform.db import Database, utcnow
from archipel.platform.identity.models import LocalIdentity
from archipel.platform.runtime import get_runtime
from archipel.radiology import prefetch

log = logging.getLogger("archipel.mammo.priors")

FETCH_TASK = "mammo.priors.fetch"
CHECK_TASK = "mammo.priors.check"
#: A fetch row no longer followed: released by hand (or superseded by a new request).
RELEASED = "released"
OPEN_STATES = (PRIORS_REQUESTED, PRIORS_RETRIEVING)
#: A fetch whose job is still queued this long after it was requested has lost its task: it is queued again.
STALLED_AFTER = timedelta(minutes=10)


def latest_fetch(s: Session, episode_id: int) -> PriorFetch | None:
    """The episode's most recent fetch of priors, or ``None``."""
    return s.execute(
        select(PriorFetch).where(PriorFetch.episode_id == episode_id).order_by(PriorFetch.id.desc()).limit(1)
    ).scalar_one_or_none()


def request_priors(
    db: Database, principal: Principal, episode_id: int, now: datetime, *, send: bool = True
) -> int:
    """Start fetching the woman's earlier MG studies from every remote node; hold the case; return the fetch id.

    Refused (:class:`ScreeningError` 409) while a fetch of this episode is under way, or when the woman is not
    linked to a master patient (her identities at the other sites are not known). Raises
    :class:`access.AccessDenied` when ``principal`` may not bring the woman's record here.
    """
    with db.sessions() as s:
        ep = episodes.episode(s, episode_id)
        running = latest_fetch(s, episode_id)
    if running is not None and running.state in OPEN_STATES:
        raise ScreeningError(
            f"the priors of episode {episode_id} are being fetched already (job {running.job_id})"
        )
    if ep.master_id is None:
        raise ScreeningError(
            f"the woman of episode {episode_id} is not linked to a master patient: her priors at the other sites "
            "cannot be found (resolve her identity first)",
        )
    day_before = (ep.screen_date - timedelta(days=1)).strftime("%Y%m%d")
    try:
        request_id = prefetch.create_request(
            db,
            principal,
            ep.master_id,
            reason=f"screening episode {episode_id}: priors",
            modalities=["MG"],
            date_to=day_before,
        )
    except prefetch.PrefetchError as exc:
        raise ScreeningError(str(exc)) from exc
    job_id = prefetch.start_run(db, principal, request_id, send=False)
    with db.write() as s:
        fetch = PriorFetch(
            episode_id=episode_id,
            job_id=job_id,
            prefetch_request_id=request_id,
            state=PRIORS_REQUESTED,
            reason="",
            requested_by=principal.subject,
            requested_at=now,
        )
        s.add(fetch)
        episodes.episode(s, episode_id).priors = PRIORS_REQUESTED
        s.flush()
        fetch_id = fetch.id
    log.info("event=priors_requested episode=%d fetch=%d job=%s", episode_id, fetch_id, job_id)
    if send:
        send_fetch(fetch_id)
    return fetch_id


def release(db: Database, principal: Principal, episode_id: int, status: str) -> None:
    """Set the priors' status by hand (``received`` or ``none``): the case is released, and a fetch under way
    or failed is no longer followed (its job, if it still runs, changes nothing on the episode)."""
    with db.write() as s:
        ep = episodes.episode(s, episode_id)
        ep.priors = status
        s.execute(
            update(PriorFetch)
            .where(
                PriorFetch.episode_id == episode_id,
                PriorFetch.state.in_((*OPEN_STATES, PRIORS_FAILED)),
            )
            .values(state=RELEASED, reason=f"released by {principal.subject} (priors: {status})")
        )
    log.info("event=priors_released episode=%d status=%s", episode_id, status)


def live_state(fetch: PriorFetch, job: jobs.Job | None) -> tuple[str, str]:
    """The state and reason of a fetch from its job: requested while queued, retrieving while it runs,
    received once it succeeded, failed (with the nodes' reasons) once it failed; a closed fetch keeps its own."""
    if fetch.state not in OPEN_STATES:
        return fetch.state, fetch.reason
    if job is None:
        return PRIORS_FAILED, f"the prefetch job {fetch.job_id} is gone"
    if job.state == jobs.SUCCEEDED:
        return PRIORS_RECEIVED, ""
    if job.state == jobs.FAILED:
        return PRIORS_FAILED, job.error or "the prefetch failed"
    if job.state == jobs.RUNNING:
        return PRIORS_RETRIEVING, ""
    return PRIORS_REQUESTED, ""


def settle(db: Database, fetch_id: int) -> str:
    """Bring a fetch and its episode up to date with the prefetch job; return the fetch's state.

    Received: the case is released (if nobody changed the priors' status meanwhile) and the earlier MG studies
    of the woman that have no episode are marked as this episode's priors. Failed: the case stays held with the
    reason. Idempotent.
    """
    with db.write() as s:
        fetch = s.get(PriorFetch, fetch_id)
        if fetch is None:
            return ""
        job = s.get(jobs.Job, fetch.job_id) if fetch.job_id else None
        state, reason = live_state(fetch, job)
        if fetch.state not in OPEN_STATES or (state, reason) == (fetch.state, fetch.reason):
            return fetch.state
        fetch.state, fetch.reason = state, reason
        ep = s.get(Episode, fetch.episode_id)
        if state in (PRIORS_RECEIVED, PRIORS_FAILED):
            fetch.finished_at = job.finished_at if job is not None else None
        if ep is not None and ep.priors in PRIORS_HELD:
            ep.priors = state
        if ep is not None and state == PRIORS_RECEIVED:
            _mark_priors(s, ep)
    log.info("event=priors_state fetch=%d state=%s", fetch_id, state)
    return state


def _mark_priors(s: Session, ep: Episode) -> None:
    """The woman's earlier MG studies without an episode are this episode's priors, not studies to reconcile."""
    if ep.master_id is None:
        return
    day = ep.screen_date.strftime("%Y%m%d")
    for identity in s.execute(select(LocalIdentity).where(LocalIdentity.master_id == ep.master_id)).scalars():
        s.execute(
            update(ScreeningStudy)
            .where(
                ScreeningStudy.issuer == identity.issuer,
                ScreeningStudy.patient_id == identity.local_id,
                ScreeningStudy.episode_id.is_(None),
                ScreeningStudy.prior_of.is_(None),
                ScreeningStudy.study_date < day,
            )
            .values(prior_of=ep.id)
        )


def view(db: Database, episode_id: int) -> dict[str, Any] | None:
    """The episode's latest fetch of priors as the episode API shows it: state, reason, job (with its
    progress) and the state of each remote node; ``None`` when priors were never fetched."""
    with db.sessions() as s:
        fetch = latest_fetch(s, episode_id)
        if fetch is None:
            return None
        job = s.get(jobs.Job, fetch.job_id) if fetch.job_id else None
    state, reason = live_state(fetch, job)
    nodes: list[dict[str, Any]] = []
    if fetch.prefetch_request_id is not None:
        try:
            nodes = prefetch.request_status(db, fetch.prefetch_request_id)["nodes"]
        except prefetch.PrefetchError:
            nodes = []
    return {
        "id": fetch.id,
        "state": state,
        "reason": reason,
        "job_id": fetch.job_id,
        "progress": job.percent if job is not None else None,
        "requested_by": fetch.requested_by,
        "requested_at": fetch.requested_at.isoformat(),
        "finished_at": fetch.finished_at.isoformat() if fetch.finished_at else None,
        "nodes": [
            {k: n[k] for k in ("node", "site", "state", "reason", "studies_found", "instances_retrieved")}
            for n in nodes
        ],
    }


def run_fetch(db: Database, fetch_id: int) -> str:
    """Run a fetch's prefetch job here and now, then settle the episode; return the fetch's state."""
    with db.sessions() as s:
        fetch = s.get(PriorFetch, fetch_id)
    if fetch is None or fetch.state not in OPEN_STATES:
        return fetch.state if fetch is not None else ""
    prefetch.prefetch_job(fetch.job_id)
    return settle(db, fetch_id)


@shared_task(name=FETCH_TASK, **jobs.RETRY_TRANSIENT)
def fetch_task(fetch_id: int) -> None:
    """Fetch one episode's priors (the prefetch job, safe to run twice), then release or keep holding the case."""
    run_fetch(get_runtime().db, int(fetch_id))


def send_fetch(fetch_id: int) -> None:
    """Queue the fetch task of ``fetch_id`` on the ``prefetch`` queue."""
    jobs.celery_app().send_task(FETCH_TASK, args=[fetch_id], queue="prefetch")


def check_open(db: Database, now: datetime | None = None, resend: Callable[[int], None] = send_fetch) -> int:
    """Settle every fetch still under way whose job has ended; queue again the task of a fetch whose job has
    not started within :data:`STALLED_AFTER` (its message was lost). Returns how many changed state."""
    now = now or utcnow()
    with db.sessions() as s:
        rows = s.execute(
            select(PriorFetch.id, PriorFetch.state, jobs.Job.state, jobs.Job.created_at)
            .join(jobs.Job, jobs.Job.id == PriorFetch.job_id, isouter=True)
            .where(PriorFetch.state.in_(OPEN_STATES))
        ).all()
    changed = 0
    for fetch_id, before, job_state, created in rows:
        if job_state == jobs.QUEUED and created is not None and created + STALLED_AFTER <= now:
            log.info("event=priors_resent fetch=%d", fetch_id)
            resend(fetch_id)
        changed += settle(db, fetch_id) != before
    return changed


@shared_task(name=CHECK_TASK, **jobs.RETRY_TRANSIENT)
def check_task() -> None:
    """Periodic: settle the fetches of priors whose job ended without telling (a worker lost mid-job...)."""
    changed = check_open(get_runtime().db)
    if changed:
        log.info("event=priors_checked changed=%d", changed)


schedule.every(60, CHECK_TASK, queue="prefetch")
