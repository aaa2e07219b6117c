"""The archive's own REST API (beside DICOMweb): uploads that import in the background."""

from __future__ import annotations

import shutil
import uuid
from typing import Any

from fastapi import APIRouter, HTTPException, Request, UploadFile, status

from archipel.platform import access, audit, jobs
from archipel.platform.http import PrincipalDep, RuntimeDep, guard
from archipel.radiology.tasks import IMPORT_TASK

router = APIRouter(prefix="/api", tags=["archive"])


@router.post("/imports", status_code=status.HTTP_202_ACCEPTED)
def upload_import(
    request: Request, file: UploadFile, rt: RuntimeDep, principal: PrincipalDep, issuer: str = ""
) -> dict[str, Any]:
    """Upload a DICOM file or a ZIP of files; it is imported by a background job whose id is returned."""
    guard(
        rt,
        principal,
        access.CREATE,
        access.Resource(kind="study", site=issuer),
        event_type=audit.IMPORT,
        request=request,
    )
    if not file.filename:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "a file is required")
    uploads = rt.settings.data_dir / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    suffix = ".zip" if file.filename.lower().endswith(".zip") else ".dcm"
    target = uploads / f"{uuid.uuid4().hex}{suffix}"
    with target.open("wb") as out:
        shutil.copyfileobj(file.file, out, length=1 << 20)
    params = {
        "paths": [str(target.resolve())],
        "issuer": issuer or principal.site,
        "source": f"http:{principal.subject}",
        "delete_after": True,
        "filename": file.filename,
    }
    job_id = jobs.create_job(rt.db, IMPORT_TASK, params, principal)
    jobs.celery_app().send_task(IMPORT_TASK, args=[job_id], queue="ingest")
    return {"job": job_id, "status_url": f"/api/jobs/{job_id}"}
