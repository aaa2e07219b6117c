"""Celery tasks of the archive. Each takes a job id and is safe to run twice."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from celery import shared_task

from archipel.platform import access, audit, jobs
from archipel.platform.runtime import get_runtime
from archipel.radiology.archive import Archive
from archipel.radiology.export_api import EXPORT_TASK, package_path
from archipel.radiology.export_documents import DocumentsRefused
from archipel.radiology.export_package import ExportFormat, ExportRefused, ExportRequest, export
from archipel.radiology.importer import count_items, import_paths

log = logging.getLogger("archipel.jobs")

IMPORT_TASK = "radiology.import"


@shared_task(name=IMPORT_TASK, **jobs.RETRY_TRANSIENT)
def import_job(job_id: str) -> None:
    """Import the files of an uploaded archive or server path into the archive, reporting progress.

    Re-running is harmless: instances already stored with the same bytes are counted as such.
    """
    rt = get_runtime()
    job = jobs.get_job(rt.db, job_id)
    if job is None or job.state == jobs.SUCCEEDED:
        return
    params = json.loads(job.params)
    paths = [Path(p) for p in params["paths"]]
    progress = jobs.Progress(rt.db, job_id)
    try:
        resource = access.Resource(kind="study", site=params.get("issuer", ""))
        actor = jobs.authorize_run(rt.db, job, access.CREATE, resource, audit.IMPORT)
    except access.AccessDenied as exc:
        progress.fail(f"refused: {exc.reason}")
        return
    try:
        progress.start(count_items(paths), "importing")
        archive = Archive(rt.db, rt.blobs, rt.settings.duplicate_policy)
        summary = import_paths(
            archive,
            paths,
            default_issuer=params.get("issuer", ""),
            source=params.get("source", "upload"),
            on_item=lambda _name, _outcome: progress.advance(),
        )
        audit.record(
            rt.db,
            actor,
            audit.IMPORT,
            "import",
            obj=f"job:{job_id}",
            detail=f"stored={summary.counts['stored']} refused={len(summary.refused)}",
        )
        progress.finish(summary.as_dict(), "done")
        if params.get("delete_after"):
            for p in paths:
                p.unlink(missing_ok=True)
    except Exception as exc:
        log.exception("event=job_failed job=%s", job_id)
        progress.fail(str(exc))
        raise


@shared_task(name=EXPORT_TASK, **jobs.RETRY_TRANSIENT)
def export_job(job_id: str) -> None:
    """Write the package an export job names to ``exports/<job>.zip``, reporting progress per file.

    The policy decides again, as the job's creator is now. Re-running is harmless: a finished job is left as it
    is, and a partial package left by a worker that died is written again from the start.
    """
    rt = get_runtime()
    job = jobs.get_job(rt.db, job_id)
    if job is None or job.state in (jobs.SUCCEEDED, jobs.FAILED):
        return
    params = json.loads(job.params)
    request = ExportRequest(
        params.get("study_uid", ""),
        params.get("master_id"),
        params.get("issuer", ""),
        params.get("patient_id", ""),
    )
    target = package_path(rt, job_id)
    target.unlink(missing_ok=True)
    progress = jobs.Progress(rt.db, job_id)
    actor = jobs.acting_principal(rt.db, job)
    try:
        summary = export(
            rt, actor, request, ExportFormat(params["format"]), target, source=f"job:{job_id}",
            on_start=lambda total: progress.start(total, "exporting"), on_file=progress.advance,
        )  # fmt: skip
    except (ExportRefused, DocumentsRefused) as exc:
        progress.fail(f"refused: {exc.reason}")
        return
    except Exception as exc:
        log.exception("event=job_failed job=%s", job_id)
        progress.fail(str(exc))
        raise
    progress.finish(summary.as_dict(), "done")
