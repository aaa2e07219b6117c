"""Celery tasks retry on transient errors (a store or database that does not answer) with backoff, and never on
a bad input: a slide that cannot be converted fails at once with its reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from celery import Task
from sqlalchemy.exc import OperationalError

from archipel.mammo import priors, volumes
from archipel.platform import jobs, notify_tasks, storage_tasks
from archipel.platform.runtime import Runtime
from archipel.radiology import prefetch, retention_tasks, tasks, telerad_sla, tumorboard
from archipel.wsi import tasks as wsi_tasks
from archipel.wsi.convert import ConversionError
from archipel.wsi.intake import SlideMetadata
from archipel.wsi.models import FAILED, Slide
from archipel.wsi.slides import hash_file, register_slide
from archipel.wsi.synthetic import write_svs
from tests.access_support import ensure_master

on_sqlite = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def _registered_slide(runtime: Runtime, tmp_path: Path) -> tuple[str, str]:
    ensure_master(runtime.db, "SITE-A", "RETRY0001", "RETRY", "19700101")
    spool = tmp_path / "slide.spool"
    spool.write_bytes(write_svs(tmp_path / "slide.svs", 300, 200, tile=128, seed=1).read_bytes())
    sha, size = hash_file(spool)
    meta = SlideMetadata(patient_id="RETRY0001", issuer="SITE-A", accession="RACC1", stain="HE")
    reg = register_slide(
        runtime,
        spool,
        sha,
        size,
        meta,
        filename="slide.svs",
        origin="upload",
        created_by="p",
        role="pathologist",
    )
    return reg.slide_id, reg.job_id


def _failing_run(errors: list[BaseException]) -> tuple[list[int], Any]:
    calls: list[int] = []

    def run(rt: Runtime, slide: Slide, progress: jobs.Progress, *args: Any) -> dict[str, Any]:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        progress.start(1, "converted")
        return {"slide_id": slide.id, "instances": 0}

    return calls, run


@on_sqlite
def test_a_conversion_that_meets_a_lost_store_or_database_is_retried_and_then_succeeds(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _slide_id, job_id = _registered_slide(runtime, tmp_path)
    lost_db = OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))
    calls, run = _failing_run([OSError(104, "Connection reset by peer"), lost_db])
    monkeypatch.setattr(wsi_tasks, "_run", run)
    # apply() runs the task here, with its retries at once (eager), as a worker would after each backoff.
    wsi_tasks.convert_job.apply(kwargs={"job_id": job_id})
    assert len(calls) == 3
    job = jobs.get_job(runtime.db, job_id)
    assert job is not None and job.state == jobs.SUCCEEDED, job.error if job else "no job"


@on_sqlite
def test_a_slide_that_cannot_be_converted_fails_at_once_and_is_never_retried(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slide_id, job_id = _registered_slide(runtime, tmp_path)
    calls, run = _failing_run([ConversionError("the slide could not be read or written: truncated strip")])
    monkeypatch.setattr(wsi_tasks, "_run", run)
    wsi_tasks.convert_job.apply(kwargs={"job_id": job_id})
    assert len(calls) == 1
    job = jobs.get_job(runtime.db, job_id)
    assert job is not None and job.state == jobs.FAILED and "truncated strip" in job.error
    with runtime.db.sessions() as s:
        slide = s.get(Slide, slide_id)
        assert slide is not None and slide.status == FAILED


@on_sqlite
def test_a_store_that_never_comes_back_fails_the_job_after_the_last_retry_with_the_reason(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _slide_id, job_id = _registered_slide(runtime, tmp_path)
    calls, run = _failing_run([OSError(113, "No route to host") for _ in range(20)])
    monkeypatch.setattr(wsi_tasks, "_run", run)
    wsi_tasks.convert_job.apply(kwargs={"job_id": job_id})
    assert len(calls) == jobs.TRANSIENT_RETRIES + 1
    job = jobs.get_job(runtime.db, job_id)
    assert job is not None and job.state == jobs.FAILED
    assert f"gave up after {jobs.TRANSIENT_RETRIES} retries" in job.error and "No route to host" in job.error


TASKS: list[Task] = [
    priors.fetch_task,
    priors.check_task,
    volumes.check_reader_volumes,
    prefetch.prefetch_job,
    tasks.import_job,
    tasks.export_job,
    telerad_sla.sla_sweep,
    tumorboard.sweep_task,
    notify_tasks.deliver,
    retention_tasks.scheduled_run,
    storage_tasks.tier_task,
    storage_tasks.fixity_task,
]


def test_every_job_task_acknowledges_late_and_retries_transient_errors_with_backoff() -> None:
    for task in TASKS:
        assert task.acks_late, task.name
        assert set(task.autoretry_for) >= {OSError}, task.name
        assert task.retry_backoff, task.name
        assert OperationalError in task.autoretry_for, task.name
    assert OperationalError in priors.check_task.autoretry_for
    assert OperationalError in volumes.check_reader_volumes.autoretry_for
