"""The tumor board page in headless Chromium against a real ``archipel serve`` and a real Orthanc holding the
patient under its own PatientID: a radiologist creates a session, finds the patient through the patient
search, registers them, and watches their status go to "ready" once the worker has fetched the study by C-MOVE
(no reload). Screenshots are kept as test artifacts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, ViewportSize

from archipel.app import WEB_DIST
from archipel.platform.db import Database
from archipel.radiology.samples import SyntheticPatient, ct_series, uid
from tests.browser import chromium
from tests.dimse_peers import archive_look
from tests.prefetch_peers import OrthancPacs, person
from tests.support import ArchipelServer, wait_until

pytestmark = pytest.mark.e2e

TABLET: ViewportSize = {"width": 1024, "height": 900}
ARTIFACTS = Path(os.environ.get("ARCHIPEL_TEST_ARTIFACTS", "var/test-artifacts")) / "web-tumorboard"
STUDY = uid("web-rcp-study")


@dataclass
class Region:
    srv: ArchipelServer
    orthanc: OrthancPacs
    browser: Browser

    def page(self, user: str, url: str) -> tuple[BrowserContext, Page]:
        ctx = self.browser.new_context(viewport=TABLET, device_scale_factor=1, locale="fr-FR")
        ctx.set_default_timeout(60_000)  # a loaded 2-core machine answers slowly
        page = ctx.new_page()
        page.goto(self.srv.url + url)
        page.wait_for_url("**/app/login.html?next=*")
        page.fill("#username", user)
        page.fill("#password", self.srv._passwords[user])
        page.fill("#totp", self.srv.totp_code(user))
        page.click("#login-submit")
        page.wait_for_url(self.srv.url + url)
        page.wait_for_selector("body[data-ready=true]", timeout=30_000)
        return ctx, page


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Region]:
    if not (WEB_DIST / "tumor-board.html").exists():
        pytest.fail("the web front end is not built: run `make web`")
    root = tmp_path_factory.mktemp("web-tumorboard")
    orthanc = OrthancPacs(root / "orthanc")
    pat = SyntheticPatient(patient_id="B-RCP-77", name="WEBRCP^Dominique", birth_date="19580923", sex="F")
    orthanc.upload(ct_series(pat, 3, study_uid=STUDY, study_date="20260801", key="web-rcp"))
    srv = ArchipelServer(root / "data")
    srv.data.mkdir(parents=True)
    srv.add_user("dr-rcp", "radiologist", "SITE-A")
    srv.cli(
        "nodes",
        "add",
        orthanc.aet,
        "--host",
        "127.0.0.1",
        "--port",
        str(orthanc.dicom_port),
        "--site",
        "SITE-B",
    )
    srv.cli("nodes", "remote", orthanc.aet, "--host", "127.0.0.1", "--retrieve", "move", "--timeout", "15")
    db = Database(f"sqlite:///{(srv.data / 'index.sqlite').resolve()}")
    person(db, [("SITE-A", "A-RCP-77"), ("SITE-B", "B-RCP-77")], "WEBRCP")
    db.dispose()
    srv.start()
    orthanc.know_destination(srv.aet, srv.dicom_port)
    try:
        with chromium() as browser:
            yield Region(srv, orthanc, browser)
    finally:
        srv.stop()
        orthanc.stop()


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_a_tumor_board_patient_goes_from_registration_to_ready(region: Region) -> None:
    ctx, page = region.page("dr-rcp", "/app/tumor-board.html")
    try:
        assert page.locator("h2#sessions-heading").inner_text() == "Séances"
        when = (datetime.now() + timedelta(days=2)).replace(second=0, microsecond=0)
        page.fill("#session-title", "RCP thoracique")
        page.fill("#session-when", when.strftime("%Y-%m-%dT%H:%M"))
        page.fill("#session-place", "Salle Laennec")
        page.click("#session-create")
        page.wait_for_selector("#session:not([hidden])")
        assert page.locator("#session-heading").inner_text() == "RCP thoracique"
        shot(page, "1-session")

        page.fill("#find-q", "WEBRCP")
        page.fill("#register-reason", "nodule pulmonaire")
        page.fill("#register-modalities", "CT")
        page.click("#find-go")
        page.wait_for_selector("#find-results button[data-register]")
        shot(page, "2-found")
        page.click("#find-results button[data-register]")
        page.wait_for_selector("#patients tr[data-patient]")
        shot(page, "3-registered")

        page.wait_for_selector("#patients tr[data-status=ready]", timeout=180_000)
        row = page.locator("#patients tr[data-status=ready]")
        assert "prêt" in row.inner_text()
        assert row.locator("li[data-node=ORTHANCB]").get_attribute("data-state") == "ready"
        shot(page, "4-ready")

        page.click("button[data-lang=en]")
        page.wait_for_function(
            "document.querySelector('#patients tr[data-status=ready]')?.innerText.includes('ready')"
        )
        shot(page, "5-ready-en")
    finally:
        ctx.close()
    with archive_look(region.srv) as look:
        wait_until(
            lambda: sum(1 for i in look.instances().values() if i.source_ae == region.orthanc.aet) == 3,
            30,
            "the three instances of the study in the archive",
        )
