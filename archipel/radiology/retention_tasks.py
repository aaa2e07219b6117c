"""The retention run as the CLI, the admin API and the weekly job call it, from the runtime's settings.

The weekly job (``radiology.retention.run``, every ``retention_period_seconds``) deletes only when the setting
``retention_scheduled`` is on; it is off by default, so that a deployment starts deleting only once someone has
read a dry run (``archipel retention run --dry-run``) and switched it on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from celery import shared_task

from archipel.platform import jobs, schedule
from archipel.platform.authn import Principal
from archipel.platform.preservation import forget_blob, stores_for
from archipel.platform.retention_rules import RuleSet, load_rules
from archipel.platform.runtime import Runtime, get_runtime
from archipel.radiology.retention import (
    RETENTION_JOB,
    BlobForgetter,
    Expiry,
    RetentionPlan,
    RunSummary,
    plan_retention,
    run_retention,
)

log = logging.getLogger("archipel.retention")

RUN_TASK = "radiology.retention.run"


def rules_of(rt: Runtime) -> RuleSet:
    """The rules the settings name (``retention_rules_file``), else the French set."""
    name = rt.settings.retention_rules_file
    return load_rules(Path(name) if name else None)


def plan_now(rt: Runtime) -> RetentionPlan:
    """What has expired today under the runtime's rules."""
    return plan_retention(rt.db, rules_of(rt), rt.clock().date(), rt.settings.retention_rejected_days)


def blob_forgetter(rt: Runtime) -> BlobForgetter:
    """How the run removes a blob that nothing references any more: every copy (hot, archive, replica, the read
    cache of archive reads) and its preservation row (``platform.preservation.forget_blob``)."""
    stores = stores_for(rt.settings, rt.blobs)

    def forget(key: str) -> None:
        forget_blob(rt.db, stores, key)

    return forget


def run_now(rt: Runtime, who: Principal, progress: Callable[[Expiry], None] | None = None) -> RunSummary:
    """Plan and delete what has expired and is not held."""
    plan = plan_now(rt)
    summary = run_retention(rt.db, blob_forgetter(rt), plan.due, who, progress=progress)
    summary.held = len(plan.held)
    return summary


@shared_task(name=RUN_TASK, **jobs.RETRY_TRANSIENT)
def scheduled_run() -> int:
    """The weekly job: delete what has expired when ``retention_scheduled`` is on; return how many objects went."""
    rt = get_runtime()
    if not rt.settings.retention_scheduled:
        return 0
    summary = run_now(rt, RETENTION_JOB)
    total = sum(summary.deleted.values())
    log.info(
        "event=retention_run deleted=%d held=%d blobs=%d failed=%d",
        total,
        summary.held,
        summary.blobs_deleted,
        summary.failed,
    )
    return total


schedule.every(7 * 24 * 3600, RUN_TASK, queue="ingest", setting="retention_period_seconds")
