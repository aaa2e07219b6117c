"""HTTP upload of L1 forms from CSV (``POST /api/mammo/l1-forms/import``): the same file as ``archipel mammo forms
import``, entered by the uploader as the L1 radiologist of every line.

Each line is checked by the access policy as one ``POST /api/mammo/l1-forms`` (``create`` of a screening episode,
audited, a refusal is that line's reason) before anything is stored; then the file loads whole or not at all
(:mod:`~archipel.mammo.l1_import`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, UploadFile, status

from archipel.mammo import l1_import
from archipel.mammo.api import check, episode_resource
from archipel.mammo.models import Episode
from archipel.platform import access, audit
from archipel.platform.credentials import PrincipalDep, RuntimeDep

router = APIRouter(prefix="/api/mammo", tags=["screening"])

#: The largest file taken (about 20,000 forms).
MAX_BYTES = 20 * 1024 * 1024


def _refused(message: str, refused: list[tuple[int, str]]) -> HTTPException:
    detail = {"message": message, "refused": [{"line": n, "reason": why} for n, why in refused]}
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail)


@router.post("/l1-forms/import", status_code=status.HTTP_201_CREATED)
def import_l1_forms(
    programme: str, file: UploadFile, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Load a CSV of L1 forms (columns of docs/mammo.md) for exams arrived or to come; 422 with every refused
    line (number and reason) and nothing stored when a line is bad, refused by the policy or by the workflow."""
    data = file.file.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"the file is over {MAX_BYTES} bytes")
    try:
        l1_import.check_programme(rt.db, programme)
        forms, refused = l1_import.parse(data, programme, principal.subject)
    except l1_import.FormsFileError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    allowed = []
    for form in forms:
        if form.reader != principal.subject:
            refused.append((form.line, f"l1_reader {form.reader}: an upload enters the uploader's own forms"))
            continue
        body = form.body
        probe = Episode(site=body.site, issuer=body.issuer, patient_id=body.patient_id, id=0)
        try:
            check(
                rt,
                principal,
                access.CREATE,
                episode_resource(probe, "L1 form"),
                request,
                audit.PATIENT_RECORD,
            )
        except HTTPException as exc:
            refused.append((form.line, f"refused by the access policy: {exc.detail}"))
            continue
        allowed.append(form)
    summary = l1_import.load(rt.db, programme, allowed, rt.clock(), refused)
    if summary.refused:
        raise _refused(f"refused {len(summary.refused)} line(s); nothing was loaded", summary.refused)
    return {
        "loaded": len(summary.stored),
        "awaiting_images": summary.awaiting_images,
        "forms": [{"line": f.line, "episode_id": f.episode_id, "status": f.status} for f in summary.stored],
    }
