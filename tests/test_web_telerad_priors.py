"""A teleradiologist's claim brings the patient's prior from the region, seen in headless Chromium against a real
``archipel serve`` and its worker: a real Orthanc of another site holds an earlier CT of the patient under that
site's PatientID; the claim from the worklist page queues the prefetch, the server's worker retrieves the study by
C-GET, and the page lists the prior as fetched, linked to the viewer. A screenshot is kept as a test artifact."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, ViewportSize

from archipel.app import WEB_DIST
from archipel.radiology.remote_nodes import configure_remote
from archipel.radiology.samples import SyntheticPatient, ct_series, uid
from tests.browser import chromium
from tests.prefetch_peers import OrthancPacs, person
from tests.support import ArchipelServer, wait_until

pytestmark = pytest.mark.e2e

HOSPITAL, TELERAD, REMOTE_SITE = "CH-ESTUAIRE", "TELERAD-OUEST", "CH-BOCAGE"
HERE_ID, THERE_ID = "WPR0001", "BOC-0001"
VIEWPORT: ViewportSize = {"width": 1200, "height": 850}


@dataclass
class Region:
    srv: ArchipelServer
    browser: Browser
    prior: str
    artifacts: Path

    def api(self, user: str, method: str, path: str, **kwargs: object) -> httpx.Response:
        return httpx.request(
            method, self.srv.url + path, headers=self.srv.headers(user), timeout=60, **kwargs
        )  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Region]:
    if not (WEB_DIST / "telerad-worklist.html").exists():
        pytest.fail("the web front end is not built: run `make web`")
    root = tmp_path_factory.mktemp("web-telerad-priors")
    artifacts = Path(os.environ.get("ARCHIPEL_TEST_ARTIFACTS", "var/test-artifacts")) / "web-telerad-priors"
    orthanc = OrthancPacs(root / "orthanc", aet="ORTHANCBOC")
    srv = ArchipelServer(root / "data")
    try:
        woman = SyntheticPatient(THERE_ID, "WEBPRIOR^Camille", "19610412", "F", REMOTE_SITE)
        prior = uid()
        orthanc.upload(ct_series(woman, 3, study_uid=prior, study_date="20250607", rows=32, cols=32,
                                 accession="BOC-25", description="CT THORAX"))  # fmt: skip
        srv.data.mkdir(parents=True)
        srv.add_user("dr-estuaire", "treating-doctor", HOSPITAL)
        srv.add_user("radio-ouest", "radiologist", TELERAD)
        srv.add_node(orthanc.aet, orthanc.dicom_port, REMOTE_SITE)
        configure_remote(srv.index(), orthanc.aet, "127.0.0.1", retrieve="get", attempts=2)
        person(srv.index(), [(HOSPITAL, HERE_ID), (REMOTE_SITE, THERE_ID)], "WEBPRIOR")
        srv.start()
        with chromium() as browser:
            yield Region(srv, browser, prior, artifacts)
    finally:
        srv.stop()
        orthanc.stop()


def test_the_claim_fetches_the_prior_from_the_region_and_the_page_lists_it_as_fetched(region: Region) -> None:
    made = region.api("dr-estuaire", "POST", "/api/telerad/requests", json={
        "issuer": HOSPITAL, "patient_id": HERE_ID, "accession_number": "WPR-26", "priority": "urgent",
        "clinical_info": "cough for three months", "justification": "progression since the 2025 CT?",
    })  # fmt: skip
    assert made.status_code == 201, made.text
    rid = made.json()["request_id"]

    ctx = region.browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
    ctx.set_default_timeout(90_000)  # a loaded 2-core machine answers slowly
    try:
        page = ctx.new_page()
        url = "/app/telerad-worklist.html"
        page.goto(region.srv.url + url)
        page.wait_for_url("**/app/login.html?next=*")
        page.fill("#username", "radio-ouest")
        page.fill("#password", region.srv._passwords["radio-ouest"])
        page.fill("#totp", region.srv.totp_code("radio-ouest"))
        page.click("#login-submit")
        page.wait_for_url(region.srv.url + url)
        page.wait_for_selector("body[data-ready=true]")
        item = page.locator(f"li[data-request='{rid}']")
        item.locator("button.claim").click()
        page.wait_for_selector(f"li[data-request='{rid}'][data-state=claimed]")

        def fetched() -> bool:
            jobs = region.api("radio-ouest", "GET", "/api/jobs").json()
            states = [j["state"] for j in jobs if j["kind"] == "prefetch"]
            assert "failed" not in states, jobs
            return states == ["succeeded"]

        wait_until(fetched, 180, "the server's worker to fetch the prior")
        item.locator("button.show-priors").click()
        shown = item.locator("ul.telerad-priors li[data-status=available]")
        shown.wait_for()
        assert shown.locator("a").get_attribute("href") == f"/app/study.html?study={region.prior}"
        assert re.search(r"20250607 CT THORAX \(CH-BOCAGE\) - (fetched|rapatriée)", shown.inner_text())
        region.artifacts.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(region.artifacts / "prior-fetched.png"), full_page=True)
    finally:
        ctx.close()
