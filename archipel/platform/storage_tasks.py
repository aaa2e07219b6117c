"""The storage lifecycle's daily jobs: replication then tiering, and fixity; as Celery tasks on beat, and as
functions the ``archipel storage`` commands call. Each run is a row of the jobs table, with its progress.

Both run on the ``prefetch`` queue, the one for background work that no user waits on. They are idempotent
(every step checks what is already done), so beat firing twice, or a redelivery after a worker died, only
repeats checks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from celery import shared_task

from archipel.platform import fixity, jobs, schedule, tiering
from archipel.platform.jobs import Progress, create_job
from archipel.platform.preservation import Stores, stores_for
from archipel.platform.runtime import Runtime, get_runtime

log = logging.getLogger("archipel.storage")

TIER_TASK = "platform.storage.tier"
FIXITY_TASK = "platform.storage.fixity"
TIER_JOB = "storage.tier"
DAY = 24 * 3600.0
SCHEDULER = "scheduler"

Tick = Callable[[], None]


def runtime_stores(rt: Runtime) -> Stores:
    """The lifecycle's stores for the runtime ``rt``."""
    return stores_for(rt.settings, rt.blobs)


def _ticker(progress: Progress, tick: Tick | None) -> Tick:
    def advance() -> None:
        progress.advance()
        if tick is not None:
            tick()

    return advance


@dataclass
class StoragePlan:
    """What one storage run will do: the tiering candidates, and the blobs to copy to the replica."""

    tiering: list[tiering.Candidate] = field(default_factory=list)
    replication: list[tuple[str, str, str, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Units of work, for the progress bar and the job row."""
        return len(self.tiering) + len(self.replication)


def plan_storage_run(rt: Runtime, *, dry_run: bool = False) -> StoragePlan:
    """The tiering candidates (when an archive tier is configured) and the replication backlog (when a replica
    is, and unless ``dry_run``)."""
    stores = runtime_stores(rt)
    plan = StoragePlan()
    if stores.archive is not None:
        plan.tiering = tiering.tier_candidates(rt.db, rt.clock(), rt.settings.storage_hot_days)
    if stores.replica is not None and not dry_run:
        plan.replication = tiering.replication_backlog(rt.db)
    return plan


def tier_and_replicate(
    rt: Runtime,
    plan: StoragePlan | None = None,
    *,
    dry_run: bool = False,
    created_by: str = SCHEDULER,
    tick: Tick | None = None,
) -> tuple[str, dict[str, Any]]:
    """One storage run as a job (kind ``storage.tier``): copy the unreplicated blobs to the replica, then move
    the tiering candidates to the archive; return the job id and its result. ``dry_run`` moves nothing."""
    stores = runtime_stores(rt)
    now = rt.clock()
    plan = plan if plan is not None else plan_storage_run(rt, dry_run=dry_run)
    job_id = create_job(rt.db, TIER_JOB, {"dry_run": dry_run}, created_by)
    progress = Progress(rt.db, job_id)
    progress.start(plan.total, "copying new blobs to the replica, then moving old ones to the archive tier")
    advance = _ticker(progress, tick)
    result: dict[str, Any] = {}
    try:
        # Replicate first: a blob leaves the fast tier with its replica already made.
        if stores.replica is not None and not dry_run:
            result["replication"] = tiering.run_replication(
                rt.db, stores, now, backlog=plan.replication, tick=advance
            )
        if stores.archive is not None:
            summary = tiering.run_tiering(
                rt.db,
                stores,
                now,
                rt.settings.storage_hot_days,
                dry_run=dry_run,
                plan=plan.tiering,
                tick=advance,
            )
            result["tiering"] = summary.as_dict()
    except Exception as exc:
        progress.fail(str(exc))
        raise
    progress.finish(result, "storage run done")
    return job_id, result


def verify_as_job(
    rt: Runtime,
    plan: list[fixity.Target],
    *,
    created_by: str = SCHEDULER,
    tick: Tick | None = None,
) -> tuple[str, fixity.FixitySummary]:
    """Run fixity over ``plan`` as a job (kind ``storage.fixity``); return the job id and the summary."""
    job_id = create_job(rt.db, fixity.FIXITY_JOB, {"blobs": len(plan)}, created_by)
    progress = Progress(rt.db, job_id)
    progress.start(len(plan), "checking stored objects against their SHA-256")
    try:
        summary = fixity.run_fixity(rt.db, runtime_stores(rt), rt.clock(), plan, _ticker(progress, tick))
    except Exception as exc:
        progress.fail(str(exc))
        raise
    progress.finish(
        summary.as_dict(), f"{summary.unresolved} still wrong" if summary.unresolved else "all good"
    )
    return job_id, summary


@shared_task(name=TIER_TASK, **jobs.RETRY_TRANSIENT)
def tier_task() -> dict[str, Any]:
    """The daily tiering and replication run."""
    return tier_and_replicate(get_runtime())[1]


@shared_task(name=FIXITY_TASK, **jobs.RETRY_TRANSIENT)
def fixity_task() -> dict[str, Any]:
    """The daily fixity run: the share of the cycle that falls to one day, and every overdue blob."""
    rt = get_runtime()
    plan = fixity.fixity_plan(rt.db, rt.clock(), rt.settings.fixity_cycle_days, period_days=DAY / 86400)
    return verify_as_job(rt, plan)[1].as_dict()


schedule.every(DAY, TIER_TASK, queue="prefetch")
schedule.every(DAY, FIXITY_TASK, queue="prefetch")
