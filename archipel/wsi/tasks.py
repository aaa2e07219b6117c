"""The ``wsi.convert`` job: convert an uploaded slide, index its DICOM WSI instances, keep its OME-Zarr store.

The task takes a job id and is safe to run again: conversion output lives in ``DATA/wsi-work/<slide>`` and is
published per format only when complete (:mod:`archipel.wsi.convert`). One delivery at a time converts a slide,
whichever worker it is on (:func:`_claim`, decision 0043); a job redelivered after its worker died (``acks_late``)
removes what that worker had indexed and converts again. A slide that cannot be converted is marked failed with
the reason, its job too, and nothing of it stays indexed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from celery import shared_task
from celery.exceptions import Retry
from celery.utils.time import get_exponential_backoff_interval

from archipel.platform import access, audit, jobs, locks
from archipel.platform.db import utcnow
from archipel.platform.runtime import Runtime, get_runtime
from archipel.platform.storage import BlobNotFound
from archipel.radiology.archive import Archive
from archipel.radiology.dicomfile import InvalidInstance
from archipel.wsi.convert import ConversionError, ConvertOptions, OutputFormat, convert
from archipel.wsi.indexing import index_instances, slide_metadata, unindex_series
from archipel.wsi.models import CONVERTING, FAILED, INDEXING, READY, Slide
from archipel.wsi.slides import CONVERT_TASK, source_store
from archipel.wsi.zarr_store import publish_zarr

log = logging.getLogger("archipel.jobs")


def work_dir(rt: Runtime, slide_id: str) -> Path:
    """Where a slide's conversion output is built."""
    return rt.settings.data_dir / "wsi-work" / slide_id


def _source_path(rt: Runtime, slide: Slide, work: Path) -> Path:
    """The source as a file the readers can open, named with its original extension (some readers look at it)."""
    store = source_store(rt.settings)
    suffix = Path(slide.filename).suffix.lower() or ".bin"
    link = work / f"source{suffix}"
    if link.exists() or link.is_symlink():
        return link
    work.mkdir(parents=True, exist_ok=True)
    path_of = getattr(store, "path", None)
    if path_of is not None:
        target = path_of(slide.source_key)
        if not target.exists():
            raise BlobNotFound(slide.source_key)
        link.symlink_to(target)
        return link
    with store.open(slide.source_key) as src, link.open("wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return link


def _set(rt: Runtime, slide_id: str, **values: Any) -> None:
    with rt.db.write() as s:
        slide = s.get(Slide, slide_id)
        if slide is not None:
            for key, value in values.items():
                setattr(slide, key, value)
            slide.updated_at = utcnow()


#: Seconds before a second delivery of a conversion that is running elsewhere looks again (it waits for the
#: running one rather than being dropped: that one may be on a worker that is dying).
DUPLICATE_RETRY_SECONDS = 5


def _claim(rt: Runtime, slide_id: str) -> contextlib.AbstractContextManager[bool]:
    """Hold the slide's conversion lock across every worker process (a second delivery of the same job, while
    the first runs, yields False); see :mod:`archipel.platform.locks`."""
    return locks.try_exclusive(rt.db, f"wsi-convert:{slide_id}", rt.settings.data_dir / "wsi-work")


class _JobProgress:
    """Turns the converter's ``(done, total)`` into the job row's progress (percent and tiles/s)."""

    def __init__(self, progress: jobs.Progress) -> None:
        self.progress = progress
        self.started = False
        self.seen = 0

    def __call__(self, done: int, total: int) -> None:
        if not self.started:
            self.progress.start(total, "converting")
            self.started = True
        if done > self.seen:
            self.progress.advance(done - self.seen)
            self.seen = done


@shared_task(name=CONVERT_TASK, acks_late=True, max_retries=None)
def convert_job(job_id: str, transient: int = 0) -> None:
    """Convert the job's slide to DICOM WSI and OME-Zarr, index the instances, and mark the slide ready.

    A transient error (:data:`jobs.TRANSIENT_ERRORS`: the store or the database not answering) sends the job
    back with exponential backoff, ``transient`` counting those retries, up to :data:`jobs.TRANSIENT_RETRIES`;
    a slide that cannot be converted fails at once with the reason and is never retried.
    """
    rt = get_runtime()
    job = jobs.get_job(rt.db, job_id)
    if job is None or job.state in (jobs.SUCCEEDED, jobs.FAILED):
        return
    params = json.loads(job.params)
    slide_id = params["slide_id"]
    with rt.db.sessions() as s:
        slide = s.get(Slide, slide_id)
    progress = jobs.Progress(rt.db, job_id)
    if slide is None:
        progress.fail(f"slide {slide_id} does not exist")
        return
    if slide.status == READY:
        _already_ready(slide, progress)
        return
    try:
        resource = access.Resource(
            kind="study", site=slide.issuer, patient=slide.patient, ident=f"slide:{slide_id}"
        )
        actor = jobs.authorize_run(rt.db, job, access.CREATE, resource, audit.IMPORT)
    except access.AccessDenied as exc:
        _fail(rt, slide, progress, f"refused: {exc.reason}")
        return
    try:
        with _claim(rt, slide_id) as claimed:
            if not claimed:
                # Another worker converts this slide now. This copy comes back later instead of being dropped,
                # so that the job still runs if that worker dies before it finishes; it ends at once when it
                # finds the job done.
                log.info("event=job_duplicate_deferred job=%s slide=%s", job_id, slide_id)
                raise convert_job.retry(countdown=DUPLICATE_RETRY_SECONDS)
            with rt.db.sessions() as s:
                current = s.get(Slide, slide_id)
            if current is not None and current.status == READY:  # the delivery that held the claim finished
                _already_ready(current, progress)
                return
            log.info("event=conversion_started job=%s slide=%s", job_id, slide_id)
            interrupted = current is not None and current.status in (CONVERTING, INDEXING)
            result = _run(rt, slide, progress, interrupted)
    except (ConversionError, InvalidInstance, BlobNotFound, ValueError) as exc:
        reason = getattr(exc, "reason", None) or str(exc)
        if isinstance(exc, BlobNotFound):
            reason = "the slide's source is missing from the store"
        _fail(rt, slide, progress, reason)
        return
    except Retry:
        raise
    except jobs.TRANSIENT_ERRORS as exc:
        if transient >= jobs.TRANSIENT_RETRIES:
            log.exception(
                "event=job_failed job=%s slide=%s transient_retries=%d", job_id, slide_id, transient
            )
            _fail(rt, slide, progress, f"gave up after {transient} retries: {exc}")
            return
        wait = get_exponential_backoff_interval(
            factor=10, retries=transient, maximum=jobs.TRANSIENT_BACKOFF_MAX, full_jitter=True
        )
        log.warning(
            "event=job_retry job=%s slide=%s attempt=%d wait_s=%d error=%r",
            job_id,
            slide_id,
            transient + 1,
            wait,
            exc,
        )
        raise convert_job.retry(
            kwargs={"job_id": job_id, "transient": transient + 1}, countdown=wait
        ) from exc
    except Exception as exc:
        log.exception("event=job_failed job=%s slide=%s", job_id, slide_id)
        _fail(rt, slide, progress, f"internal error: {exc}")
        raise
    audit.record(
        rt.db,
        actor,
        audit.IMPORT,
        "slide-indexed",
        patient=slide.patient,
        obj=f"slide:{slide_id}",
        detail=f"series={slide.series_uid} instances={result['instances']}",
    )
    progress.finish(result, "ready")


def _already_ready(slide: Slide, progress: jobs.Progress) -> None:
    progress.start(0, "ready")
    progress.finish({"slide_id": slide.id, "series_uid": slide.series_uid}, "already ready")


def _run(rt: Runtime, slide: Slide, progress: jobs.Progress, interrupted: bool = False) -> dict[str, Any]:
    work = work_dir(rt, slide.id)
    if interrupted:
        # An earlier delivery died while converting or indexing, maybe on another machine: what it indexed came
        # from output this run does not share and would not reproduce byte for byte (same SOP Instance UIDs,
        # other bytes, refused as different content). Start the series again from nothing.
        removed = unindex_series(rt.db, rt.blobs, slide.series_uid)
        log.info("event=conversion_restarted slide=%s instances_removed=%d", slide.id, removed)
    _set(rt, slide.id, status=CONVERTING, error="")
    source = _source_path(rt, slide, work)
    reporter = _JobProgress(progress)
    options = ConvertOptions(
        formats=OutputFormat.BOTH, max_instance_bytes=rt.settings.wsi_max_instance_mb << 20
    )
    report = convert(source, work / "out", lambda src: slide_metadata(rt.db, slide, src), options, reporter)
    if not reporter.started:
        progress.start(0, "converted")
    _set(rt, slide.id, status=INDEXING)
    progress.advance(0, "indexing")
    archive = Archive(rt.db, rt.blobs, rt.settings.duplicate_policy)
    sop_uids = index_instances(archive, report.dicom_files, slide.series_uid, slide.issuer)
    try:
        zarr = publish_zarr(rt, slide.id, report.zarr_path) if report.zarr_path is not None else ""
        _set(rt, slide.id, status=READY, instances=len(sop_uids), zarr_path=zarr, error="")
    except BaseException:
        unindex_series(rt.db, rt.blobs, slide.series_uid)
        raise
    shutil.rmtree(work, ignore_errors=True)
    log.info("event=slide_ready slide=%s series=%s instances=%d", slide.id, slide.series_uid, len(sop_uids))
    _write_annotations(rt, slide.id)
    return {
        "slide_id": slide.id,
        "study_uid": slide.study_uid,
        "series_uid": slide.series_uid,
        "instances": len(sop_uids),
        **report.as_dict(),
    }


def _write_annotations(rt: Runtime, slide_id: str) -> None:
    """Write the annotations made while the slide was converting, now that it has its study (decision 0024)."""
    from archipel.wsi.annotation_dicom import write_pending

    # The slide is ready whatever happens to its annotations; the next change or download writes them.
    try:
        write_pending(rt, slide_id)
    except Exception as exc:
        log.warning("event=annotations_not_written slide=%s reason=%s", slide_id, exc)


def _fail(rt: Runtime, slide: Slide, progress: jobs.Progress, reason: str) -> None:
    """Mark slide and job failed with ``reason``; leave nothing of the slide indexed or half-built."""
    unindex_series(rt.db, rt.blobs, slide.series_uid)
    shutil.rmtree(work_dir(rt, slide.id), ignore_errors=True)
    _set(rt, slide.id, status=FAILED, error=reason)
    progress.fail(reason)
    log.warning("event=slide_failed slide=%s reason=%s", slide.id, reason)


def resume_conversions(rt: Runtime) -> int:
    """Send again the conversion of every slide whose job was queued or running when the platform stopped.

    The embedded broker hands a message over as it is read, so a task that was running when the process died is
    not redelivered; ``archipel serve`` calls this at start-up, before its workers run. Returns how many.
    """
    from sqlalchemy import select

    from archipel.wsi.models import CONVERTING, INDEXING, RECEIVED
    from archipel.wsi.slides import enqueue

    with rt.db.sessions() as s:
        rows = s.execute(
            select(Slide.id, Slide.job_id, Slide.urgent)
            .join(jobs.Job, jobs.Job.id == Slide.job_id)
            .where(
                Slide.status.in_((RECEIVED, CONVERTING, INDEXING)),
                jobs.Job.state.in_((jobs.QUEUED, jobs.RUNNING)),
            )
        ).all()
    for slide_id, job_id, urgent in rows:
        enqueue(job_id, urgent)
        log.info("event=conversion_resumed slide=%s job=%s", slide_id, job_id)
    return len(rows)
