"""HTTP routes for a study's confidentiality codes (``MASQUE_PS``, ``INVISIBLE_PATIENT``,
``INVISIBLE_REPRESENTANTS_LEGAUX``) and sensitivity labels (``PSY``...): read them, set some, release some.

Professionals of the producing site may set and release any code; the patient may hide a study from
professionals or show it again (``MASQUE_PS`` only). Reading the codes needs read access to the study. Every
change is checked by ``access`` (kind ``confidentiality``) and audited as a Patient Record event naming the
codes set and released.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel, Field
from sqlalchemy import select

from archipel.platform import access, audit, confidentiality
from archipel.platform.credentials import PrincipalDep, RuntimeDep
from archipel.platform.http import guard, guard_patient_record
from archipel.platform.runtime import Runtime
from archipel.radiology.models import Study
from archipel.radiology.visibility import study_owner

router = APIRouter(prefix="/api/studies", tags=["confidentiality"])


class ConfidentialityChange(BaseModel):
    """Codes to add to the study and codes to remove from it."""

    set: list[str] = Field(default_factory=list, max_length=20)
    release: list[str] = Field(default_factory=list, max_length=20)


def _study(rt: Runtime, study_uid: str) -> tuple[str, str, frozenset[str]]:
    """``(site, issuer/PatientID, codes)`` of a study, or 404."""
    with rt.db.sessions() as s:
        owner = study_owner(s, study_uid)
    if owner is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no study {study_uid}")
    return owner


@router.get("/{study_uid}/confidentiality")
def read_codes(study_uid: str, request: Request, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """The study's codes, for whoever may read the study."""
    site, patient, codes = _study(rt, study_uid)
    resource = access.Resource("study", site=site, patient=patient, ident=study_uid, confidentiality=codes)
    guard(rt, principal, access.READ, resource, event_type=audit.PATIENT_RECORD, request=request)
    return {"study": study_uid, "codes": sorted(codes)}


@router.post("/{study_uid}/confidentiality")
def change_codes(
    study_uid: str, body: ConfidentialityChange, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Set and release codes in one change; a code both set and released is refused (400)."""
    try:
        to_set, to_release = confidentiality.validate(body.set), confidentiality.validate(body.release)
    except confidentiality.ConfidentialityError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
    if to_set & to_release:
        both = ", ".join(sorted(to_set & to_release))
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"{both} cannot be both set and released")
    if not to_set and not to_release:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "name codes to set or to release")
    site, patient, _codes = _study(rt, study_uid)
    obj = f"study {study_uid} set={','.join(sorted(to_set))} release={','.join(sorted(to_release))}"
    resource = access.Resource(
        kind=access.CONFIDENTIALITY,
        site=site,
        patient=patient,
        ident=obj,
        confidentiality=to_set | to_release,
    )
    guard_patient_record(rt, principal, access.UPDATE, resource, request)
    with rt.db.write() as s:
        study = s.execute(select(Study).where(Study.study_uid == study_uid)).scalar_one()
        codes = (confidentiality.decode(study.confidentiality) | to_set) - to_release
        study.confidentiality = confidentiality.encode(codes)
        study.updated_at = rt.clock()
    return {"study": study_uid, "codes": sorted(codes)}
