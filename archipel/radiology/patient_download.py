"""A patient's own images: the list of their studies and the download of one as a DICOM ZIP with a DICOMDIR.

Both routes are for a patient signed in with their access code. The list is filtered inside the SQL by the
policy's read scope (their own master, merges included, without what is hidden from the patient); a download is
decided by the policy like any retrieve (another patient's study is refused) and audited as an Export.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import StreamingResponse
from sqlalchemy import select

from archipel.platform import access, access_facts, audit
from archipel.platform.credentials import PrincipalDep, RuntimeDep
from archipel.platform.http import guard
from archipel.platform.patient_portal_api import checked_record, own_master
from archipel.platform.runtime import Runtime
from archipel.platform.storage import BlobNotFound
from archipel.radiology import visibility
from archipel.radiology.dicom_media import MediaFile, dicomdir, stream_zip
from archipel.radiology.models import Instance, Series, Study

log = logging.getLogger("archipel.patient")

router = APIRouter(prefix="/api/patient", tags=["patient"])


@router.get("/studies")
def list_own_studies(request: Request, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """The signed-in patient's studies at every site, newest first, with the links to view and download them."""
    master, facts = checked_record(rt, principal, request)
    scope = access.read_scope(principal, facts)
    with rt.db.sessions() as s:
        # The scope names the patient's own master: the condition keeps their studies at every site.
        stmt = (
            select(Study)
            .where(visibility.condition(scope))
            .order_by(Study.study_date.desc(), Study.study_time.desc(), Study.id.desc())
        )
        studies = [
            {
                "study_uid": st.study_uid,
                "study_date": st.study_date,
                "description": st.description,
                "modalities": [m for m in st.modalities.split("\\") if m],
                "site": st.site,
                "links": {
                    "viewer": f"/app/study.html?study={st.study_uid}",
                    "download": f"/api/patient/studies/{st.study_uid}/dicom.zip",
                },
            }
            for st in s.execute(stmt).scalars().unique()
        ]
    return {"master_id": master, "studies": studies}


def _filename(study: Study) -> str:
    safe = re.sub(r"[^A-Za-z0-9_-]+", "-", study.description or "study").strip("-")[:40] or "study"
    return f"{study.study_date or 'undated'}-{safe}.zip"


def _zip_response(rt: Runtime, files: list[MediaFile], what: str, filename: str) -> StreamingResponse:
    if not files:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"{what} holds no instance")
    # The DICOMDIR is made before the answer starts: a stored file that cannot be read is an error, not a cut ZIP.
    try:
        directory, ids = dicomdir(rt.blobs, files)
    except BlobNotFound as exc:
        log.error("event=patient-download-missing-blob files=%d", len(files))
        raise HTTPException(
            status.HTTP_500_INTERNAL_SERVER_ERROR,
            f"a stored file of {what} cannot be read; nothing was sent, the archive's operators are told",
        ) from exc
    log.info("event=patient-download files=%d bytes=%d", len(files), sum(f.size for f in files))
    return StreamingResponse(
        stream_zip(rt.blobs, files, directory, ids),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get("/dicom.zip")
def download_all_images(request: Request, rt: RuntimeDep, principal: PrincipalDep) -> StreamingResponse:
    """Every study the patient may see, at every site, in one ZIP with one DICOMDIR (files as stored). The
    export of the record is audited once; which studies go in is decided inside the SQL by the read scope."""
    _, facts = checked_record(rt, principal, request, event_type=audit.EXPORT)
    scope = access.read_scope(principal, facts)
    with rt.db.sessions() as s:
        files = [
            MediaFile(sop_uid, key, size)
            for sop_uid, key, size in s.execute(
                select(Instance.sop_uid, Instance.blob_key, Instance.size)
                .join(Series, Instance.series_pk == Series.id)
                .join(Study, Series.study_pk == Study.id)
                .where(visibility.condition(scope))
                .order_by(
                    Study.study_date, Study.id, Series.series_number, Series.id, Instance.instance_number
                )
            )
        ]
    return _zip_response(rt, files, "your record", "my-images.zip")


@router.get("/studies/{study_uid}/dicom.zip")
def download_study(
    study_uid: str, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> StreamingResponse:
    """One of the patient's studies as a ZIP: every Part-10 file exactly as stored, and a DICOMDIR that indexes
    them (open it with any DICOM viewer or burn it to a disc)."""
    own_master(rt, principal)
    with rt.db.sessions() as s:
        owner = visibility.study_owner(s, study_uid)
        study = s.execute(select(Study).where(Study.study_uid == study_uid)).scalar_one_or_none()
        if owner is None or study is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no study {study_uid}")
        s.expunge(study)
        site, patient, codes = owner
    resource, facts = access_facts.load(
        rt.db,
        principal,
        access.Resource(kind="study", site=site, patient=patient, ident=study_uid, confidentiality=codes),
        rt.clock(),
    )
    guard(rt, principal, access.READ, resource, event_type=audit.EXPORT, request=request, facts=facts)
    with rt.db.sessions() as s:
        files = [
            MediaFile(sop_uid, key, size)
            for sop_uid, key, size in s.execute(
                select(Instance.sop_uid, Instance.blob_key, Instance.size)
                .join(Series, Instance.series_pk == Series.id)
                .where(Series.study_pk == study.id)
                .order_by(Series.series_number, Series.id, Instance.instance_number, Instance.id)
            )
        ]
    return _zip_response(rt, files, f"study {study_uid}", _filename(study))
