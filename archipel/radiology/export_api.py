"""Exports over HTTP: ask for a study's or a patient's package, follow its job, download the ZIP.

``POST /api/exports`` decides the export at once (every study and document through the policy's ``export``
action, audited; 403 with the reason on a refusal) and queues a job that decides again when it runs, as its
creator is then, and writes ``exports/<job>.zip`` in the data directory. ``GET /api/exports/{id}`` shows its
state and progress; once it has succeeded, ``GET /api/exports/{id}/download`` sends the ZIP (a DICOMDIR
file-set or a BagIt bag) to its creator, audited as a transfer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from archipel.platform import audit, jobs
from archipel.platform.credentials import client_address
from archipel.platform.http import PrincipalDep, RuntimeDep
from archipel.platform.runtime import Runtime
from archipel.radiology.export_package import (
    ExportFormat,
    ExportRefused,
    ExportRequest,
    authorise,
    select_package,
)

router = APIRouter(prefix="/api/exports", tags=["archive"])

EXPORT_TASK = "radiology.export"


class NewExport(BaseModel):
    """What to export (one of ``study_uid``, ``master_id``, or ``patient_id`` with its ``issuer``) and how."""

    study_uid: str = Field("", max_length=64)
    master_id: int | None = None
    issuer: str = Field("", max_length=64)
    patient_id: str = Field("", max_length=64)
    format: ExportFormat = ExportFormat.BAGIT

    def request(self) -> ExportRequest:
        """The export request, refused (422) unless it names exactly one thing."""
        named = [bool(self.study_uid), self.master_id is not None, bool(self.patient_id or self.issuer)]
        if sum(named) != 1 or (named[2] and not (self.issuer and self.patient_id)):
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                "name one of study_uid, master_id, or patient_id with its issuer",
            )
        return ExportRequest(self.study_uid, self.master_id, self.issuer, self.patient_id)


def package_path(rt: Runtime, job_id: str) -> Path:
    """Where the job ``job_id`` writes its ZIP."""
    return rt.settings.data_dir / "exports" / f"{job_id}.zip"


def _own_job(rt: Runtime, job_id: str, subject: str) -> jobs.Job:
    job = jobs.get_job(rt.db, job_id, owner=subject)
    if job is None or job.kind != EXPORT_TASK:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no export {job_id}")
    return job


@router.post("", status_code=status.HTTP_202_ACCEPTED)
def create_export(
    body: NewExport, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Queue the export of a study or a patient; 403 (audited) when the policy refuses any of it."""
    wanted = body.request()
    try:
        resources = select_package(rt, wanted, body.format).resources
    except ExportRefused as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, exc.reason) from exc
    try:
        authorise(rt, principal, resources, body.format, client_address(request))
    except ExportRefused as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, exc.reason) from exc
    params = {
        "study_uid": wanted.study_uid,
        "master_id": wanted.master_id,
        "issuer": wanted.issuer,
        "patient_id": wanted.patient_id,
        "format": body.format.value,
    }
    job_id = jobs.create_job(rt.db, EXPORT_TASK, params, principal)
    jobs.celery_app().send_task(EXPORT_TASK, args=[job_id], queue="ingest")
    return {"job": job_id, "status_url": f"/api/exports/{job_id}"}


@router.get("/{job_id}")
def get_export(job_id: str, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """The caller's export: state, progress and summary, and the download link once it is ready."""
    job = _own_job(rt, job_id, principal.subject)
    shown = job.as_dict()
    if job.state == jobs.SUCCEEDED and package_path(rt, job_id).is_file():
        shown["download_url"] = f"/api/exports/{job_id}/download"
    return shown


@router.get("/{job_id}/download")
def download_export(job_id: str, request: Request, rt: RuntimeDep, principal: PrincipalDep) -> FileResponse:
    """The finished export's ZIP, for the one who asked for it; audited as a transfer of the package."""
    job = _own_job(rt, job_id, principal.subject)
    path = package_path(rt, job_id)
    if job.state != jobs.SUCCEEDED or not path.is_file():
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"export {job_id} is {job.state}, not ready to download"
        )
    result = job.as_dict()["result"]
    audit.record(
        rt.db, principal, audit.EXPORT, "transfer:export", obj=f"job:{job_id}", source=client_address(request),
        master=result.get("master_id"), detail=f"format={result.get('format', '')}",
    )  # fmt: skip
    return FileResponse(path, media_type="application/zip", filename=f"archipel-export-{job_id}.zip")
