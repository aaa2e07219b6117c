"""DICOMweb under ``/dicom-web``: QIDO-RS, WADO-RS and STOW-RS."""

from __future__ import annotations

from fastapi import APIRouter

from archipel.radiology.dicomweb import qido, stow, wado

router = APIRouter(prefix="/dicom-web", tags=["dicomweb"])
router.include_router(qido.router)
router.include_router(wado.router)
router.include_router(stow.router)
