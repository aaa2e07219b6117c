"""Composition root: builds the FastAPI application from each module's router."""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from archipel import __version__
from archipel.mammo import api as mammo_api
from archipel.mammo import deadlines_api as mammo_deadlines_api
from archipel.mammo import flags_api as mammo_flags_api
from archipel.mammo import forms_api as mammo_forms_api
from archipel.mammo import intake as mammo_intake
from archipel.mammo import timeline as mammo_timeline
from archipel.mammo import worklist_api as mammo_worklist_api
from archipel.mammo import workup_api as mammo_workup_api
from archipel.platform import (
    audit_api,
    breakglass_api,
    care_api,
    consent_api,
    inbox_api,
    notify_api,
    patient_codes_api,
    patient_portal_api,
    patient_session_api,
    storage_api,
    timeline_api,
)
from archipel.platform import http as platform_http
from archipel.platform.access import AccessDenied
from archipel.platform.identity import officer_api as identity_officer_api
from archipel.radiology import api as radiology_api
from archipel.radiology import (
    confidentiality_api,
    dicomweb,
    documents_api,
    documents_expected,
    documents_fhir,
    documents_portal,
    export_api,
    patient_download,
    patients_api,
    retention_api,
    search_api,
    telerad_api,
    tumorboard_api,
)
from archipel.radiology import timeline as radiology_timeline
from archipel.radiology.hl7 import api as hl7_api
from archipel.tiles import api as tiles_api
from archipel.tiles.fastpath import answered_ahead
from archipel.wsi import (
    annotations_api,
    duty_api,
    frozen_api,
    frozen_portal,
    frozen_report,
    multihead_api,
    tile_source,
    validation_study_api,
    viewer_api,
)
from archipel.wsi import api as wsi_api
from archipel.wsi import timeline as wsi_timeline

log = logging.getLogger("archipel.http")

#: The built web front end (``make web``); its pages are public static files, their data comes from the API.
WEB_DIST = Path(__file__).resolve().parent.parent / "web" / "dist"


class ArchipelApp(FastAPI):
    """FastAPI with the tile fast path ahead of everything it does for a request."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Tiles come by dozens a second per viewer: cached ones are answered ahead of the framework and of its
        # own middleware and telemetry, each of which wraps every request (tiles/fastpath.py).
        if await answered_ahead(scope, send):
            return
        await super().__call__(scope, receive, send)


def create_app() -> FastAPI:
    """The Archipel HTTP application."""
    app = ArchipelApp(
        title="Archipel",
        version=__version__,
        description="Regional imaging platform: DICOM archive, whole-slide imaging, screening mammography.",
    )
    # The tile routes come first, since routes are matched in order (cached tiles do not even get here: ArchipelApp).
    app.include_router(tiles_api.router)
    app.include_router(mammo_api.router)
    app.include_router(mammo_worklist_api.router)
    app.include_router(mammo_flags_api.router)
    app.include_router(mammo_deadlines_api.router)
    app.include_router(mammo_workup_api.router)
    app.include_router(mammo_forms_api.router)
    mammo_intake.install()
    app.include_router(platform_http.public)
    app.include_router(platform_http.router)
    app.include_router(audit_api.router)
    app.include_router(consent_api.router)
    app.include_router(care_api.router)
    app.include_router(breakglass_api.router)
    app.include_router(inbox_api.router)
    app.include_router(notify_api.router)
    app.include_router(storage_api.router)
    app.include_router(confidentiality_api.router)
    app.include_router(radiology_api.router)
    app.include_router(export_api.router)
    app.include_router(patients_api.router)
    app.include_router(documents_api.router)
    app.include_router(documents_fhir.router)
    app.include_router(telerad_api.router)
    app.include_router(tumorboard_api.router)
    app.include_router(timeline_api.router)
    app.include_router(search_api.router)
    app.include_router(patient_portal_api.router)
    app.include_router(patient_codes_api.router)
    app.include_router(patient_session_api.public)
    app.include_router(patient_session_api.ways_in)
    app.include_router(patient_download.router)
    app.include_router(hl7_api.router)
    app.include_router(retention_api.router)
    app.include_router(identity_officer_api.router)
    app.include_router(dicomweb.router)
    app.include_router(wsi_api.router)
    app.include_router(viewer_api.router)
    app.include_router(annotations_api.router)
    app.include_router(multihead_api.router)
    app.include_router(multihead_api.ws_router)
    app.include_router(frozen_api.router)
    app.include_router(duty_api.router)
    app.include_router(frozen_report.timings_router)
    app.include_router(validation_study_api.router)
    frozen_api.install()
    documents_portal.install()
    documents_expected.install()  # a report that came before its images is linked to the study when it arrives
    telerad_api.install()
    frozen_portal.install()
    tile_source.install()
    radiology_timeline.install()
    wsi_timeline.install()
    mammo_timeline.install()

    # Mounted even before the front end is built (then every page is a 404), so the app's routes do not
    # depend on the build.
    app.mount("/app", StaticFiles(directory=WEB_DIST, html=True, check_dir=False), name="web")

    @app.get("/", include_in_schema=False)
    def _home() -> RedirectResponse:
        # The sign-in page (professional or patient); the API's documentation stays at /docs.
        return RedirectResponse("/app/login.html")

    @app.exception_handler(AccessDenied)
    async def _denied(_request: Request, exc: AccessDenied) -> JSONResponse:
        return JSONResponse({"detail": exc.reason}, status_code=403)

    return app
