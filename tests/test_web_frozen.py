"""The frozen-section pages in headless Chromium against a real ``archipel serve``: the surgeon sends a request
from the request page, which then shows the slide as it is scanned and the verdict the moment the pathologist
signs it (no reload), and records that the surgeon read it; the on-duty pathologist's worklist announces a new
request live (tone, badge in the page and the title), claims it and signs the verdict from the page; the
turnaround page shows the report's figures, its plot and the viewer timings."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, ViewportSize

from archipel.app import WEB_DIST
from archipel.platform.db import Database
from archipel.wsi.synthetic import write_svs
from tests.access_support import ensure_master
from tests.browser import chromium
from tests.support import ArchipelServer

pytestmark = pytest.mark.e2e

HOSPITAL, LAB, PATIENT = "CH-EST", "CHU-OUEST", "FSW0001"
VIEWPORT: ViewportSize = {"width": 1100, "height": 800}
REQUEST = {
    "issuer": HOSPITAL,
    "patient_id": PATIENT,
    "specimen": "sentinel node",
    "specimen_site": "left axilla",
    "clinical_question": "metastasis?",
    "or_phone": "+33 3 00 00 00 12",
}


@dataclass
class Hospital:
    srv: ArchipelServer
    slide: Path
    browser: Browser

    def page(self, user: str, url: str) -> tuple[BrowserContext, Page]:
        """A browser context of its own, logged in as ``user`` through the login page, showing ``url``."""
        ctx = self.browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
        ctx.set_default_timeout(60_000)  # a loaded 2-core CI machine answers slowly
        page = ctx.new_page()
        page.goto(self.srv.url + url)
        page.wait_for_url("**/app/login.html?next=*")
        page.fill("#username", user)
        page.fill("#password", self.srv._passwords[user])
        page.fill("#totp", self.srv.totp_code(user))
        page.click("#login-submit")
        page.wait_for_url(self.srv.url + url)
        page.wait_for_selector("body[data-ready=true]", timeout=20_000)
        return ctx, page

    def api(self, user: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(
            method, self.srv.url + path, headers=self.srv.headers(user), timeout=60, **kwargs
        )

    def scan(self, request_id: int) -> str:
        """The technician uploads the frozen section's slide for ``request_id``."""
        meta = {"issuer": HOSPITAL, "patient_id": PATIENT, "frozen_request": request_id}
        with self.slide.open("rb") as f:
            r = self.api(
                "technicien",
                "POST",
                "/api/slides",
                data={"metadata": json.dumps(meta)},
                files={"file": ("frozen.svs", f, "application/octet-stream")},
            )
        assert r.status_code == 202, r.text
        return str(r.json()["slide_id"])


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hospital]:
    if not (WEB_DIST / "frozen-request.html").exists():
        pytest.fail("the web front end is not built: run `make web`")
    root = tmp_path_factory.mktemp("web-frozen")
    srv = ArchipelServer(root / "data")
    srv.data.mkdir(parents=True)
    srv.add_user("chirurgien", "surgeon", HOSPITAL)
    srv.add_user("technicien", "technician", HOSPITAL)
    srv.add_user("patho-garde", "pathologist", LAB)
    srv.start()
    db = Database(f"sqlite:///{(srv.data / 'index.sqlite').resolve()}")
    ensure_master(db, HOSPITAL, PATIENT, "WEBFROZEN", "19600606")
    db.dispose()
    now = datetime.now(UTC)
    shift = {"start": (now - timedelta(minutes=5)).isoformat(), "end": (now + timedelta(hours=4)).isoformat()}
    on = httpx.post(srv.url + "/api/duty", json=shift, headers=srv.headers("patho-garde"))
    assert on.status_code == 201, on.text
    slide = write_svs(root / "frozen.svs", 600, 400, tile=240, downsamples=(1,), seed=11)
    try:
        with chromium() as browser:
            yield Hospital(srv, slide, browser)
    finally:
        srv.stop()


def test_the_surgeon_sees_the_verdict_appear_without_reloading_and_records_reading_it(
    hospital: Hospital,
) -> None:
    ctx, page = hospital.page("chirurgien", "/app/frozen-request.html")
    try:
        for name, value in REQUEST.items():
            page.fill(f"[name={name}]", value)
        page.click("#send-request")
        page.wait_for_url("**/app/frozen-request.html?id=*")
        page.wait_for_function("window.archipel && archipel.live()", timeout=30_000)
        request_id = int(page.evaluate("archipel.request().request_id"))
        assert page.locator("#state").get_attribute("data-state") == "requested"
        page.evaluate("window.stillTheSamePage = true")

        slide_id = hospital.scan(request_id)
        page.wait_for_function("archipel.request().slides.length === 1", timeout=15_000)
        assert page.locator("#slides li").inner_text().startswith("Slide 1:")
        assert (
            hospital.api("patho-garde", "POST", f"/api/frozen-sections/{request_id}/claim").status_code == 200
        )
        assert hospital.api("patho-garde", "GET", f"/tiles/{slide_id}.dzi").status_code == 200
        signed = hospital.api(
            "patho-garde",
            "POST",
            f"/api/frozen-sections/{request_id}/verdict",
            json={"diagnosis": "malignant", "margins": "involved", "text": "metastatic carcinoma, 4 mm"},
        )
        assert signed.status_code == 201, signed.text

        page.wait_for_selector("#verdict-box:not([hidden])", timeout=30_000)
        assert page.locator("#verdict").inner_text() == "MALIGNANT"
        assert page.locator("#verdict-margins").inner_text() == "Margins: involved"
        assert page.locator("#verdict-text").inner_text() == "metastatic carcinoma, 4 mm"
        assert page.evaluate("window.stillTheSamePage") is True, "the page was reloaded"

        page.click("#seen")
        page.wait_for_function("archipel.request().state === 'seen'", timeout=30_000)
        assert page.locator("#seen").is_hidden()
        state = hospital.api("chirurgien", "GET", f"/api/frozen-sections/{request_id}").json()
        assert state["state"] == "seen" and state["steps"]["seen_at"] is not None
    finally:
        ctx.close()


def test_the_worklist_announces_a_new_request_live_and_the_pathologist_signs_from_it(
    hospital: Hospital,
) -> None:
    ctx, page = hospital.page("patho-garde", "/app/frozen-worklist.html")
    try:
        page.wait_for_function("archipel.live()", timeout=30_000)
        before = page.evaluate("archipel.beeps()")
        made = hospital.api(
            "chirurgien", "POST", "/api/frozen-sections", json={**REQUEST, "accession": "FSW26-2"}
        )
        assert made.status_code == 201, made.text
        request_id = made.json()["request_id"]
        item = page.locator(f"li[data-request='{request_id}']")
        item.wait_for(timeout=30_000)
        assert page.evaluate("archipel.beeps()") == before + 1
        page.wait_for_function("document.title.startsWith('(1) ')", timeout=30_000)
        assert page.locator("#badge").inner_text() == "1 waiting"

        hospital.scan(request_id)
        item.locator(".slides a").wait_for(timeout=15_000)
        item.locator("button.claim").click()
        item.locator("form.verdict-form").wait_for(timeout=30_000)
        # The claim holder opens the slide in the viewer (a new tab), from its source or converted.
        with ctx.expect_page() as opened:
            item.locator(".slides a").first.click()
        viewer = opened.value
        viewer.wait_for_selector("body[data-ready=true]", timeout=30_000)
        assert viewer.evaluate("archipel.info().slide_id") == item.locator(".slides a").first.get_attribute(
            "data-slide"
        )
        viewer.close()
        assert page.locator("#badge").is_hidden() and not page.title().startswith("(")
        item.locator("select[name=diagnosis]").select_option("benign")
        item.locator("select[name=margins]").select_option("clear")
        item.locator("textarea[name=text]").fill("reactive lymph node")
        item.locator("button.sign").click()
        item.get_by_text("Verdict: benign, margins clear").wait_for(timeout=15_000)
        state = hospital.api("chirurgien", "GET", f"/api/frozen-sections/{request_id}").json()
        assert (
            state["verdict"]["pathologist"] == "patho-garde"
            and state["verdict"]["text"] == "reactive lymph node"
        )

        turnaround = ctx.new_page()
        hospital.api(
            "patho-garde", "POST", "/api/viewer-timings", json={"event": "switch_slide", "ms": 1500.0}
        )
        turnaround.goto(hospital.srv.url + "/app/frozen-turnaround.html")
        turnaround.wait_for_selector("body[data-ready=true]", timeout=20_000)
        report = turnaround.evaluate("archipel.report()")
        assert report["requests"] >= 1 and report["answered"] >= 1
        assert turnaround.locator("#steps tr[data-step=arrival_to_verdict] td").first.inner_text() == str(
            report["steps"]["arrival_to_verdict"]["count"]
        )
        switch = turnaround.locator("#viewer tr[data-event=switch_slide] td")
        assert switch.nth(0).inner_text() == "1" and switch.nth(4).inner_text() == "0 %"
        turnaround.wait_for_function("document.querySelector('#plot').naturalWidth > 0", timeout=30_000)
    finally:
        ctx.close()
