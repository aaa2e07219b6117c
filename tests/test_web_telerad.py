"""The teleradiology worklist page in headless Chromium against a real ``archipel serve``: a site's doctor asks
for a STAT reading of a CT volume; a teleradiologist of another site signs in, sees the request with its SLA
timer counting down, claims it, opens the study from the worklist in the radiology viewer (MPR: axial, sagittal
and coronal views rendered) and signs the report from the page. Screenshots are kept as test artifacts."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, ViewportSize

from archipel.app import WEB_DIST
from archipel.platform.db import Database
from archipel.radiology.samples import SyntheticPatient, ct_series, to_bytes
from tests.access_support import ensure_master
from tests.browser import chromium
from tests.dicomweb_messages import stow_body
from tests.support import ArchipelServer

pytestmark = pytest.mark.e2e

HOSPITAL, TELERAD = "CH-LITTORAL", "TELERAD-SUD"
PATIENT = SyntheticPatient("WTR0001", "WEBTELERAD^Camille", "19580808", "F", HOSPITAL)
VIEWPORT: ViewportSize = {"width": 1200, "height": 850}


@dataclass
class Pool:
    srv: ArchipelServer
    browser: Browser
    study: str
    artifacts: Path

    def api(self, user: str, method: str, path: str, **kwargs: object) -> httpx.Response:
        return httpx.request(
            method, self.srv.url + path, headers=self.srv.headers(user), timeout=60, **kwargs
        )  # type: ignore[arg-type]

    def keep(self, page: Page, name: str) -> None:
        self.artifacts.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(self.artifacts / f"{name}.png"), full_page=True)

    def sign_in(self, user: str, url: str) -> tuple[BrowserContext, Page]:
        ctx = self.browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
        ctx.set_default_timeout(90_000)  # a loaded 2-core machine answers slowly
        page = ctx.new_page()
        page.goto(self.srv.url + url)
        page.wait_for_url("**/app/login.html?next=*")
        page.fill("#username", user)
        page.fill("#password", self.srv._passwords[user])
        page.fill("#totp", self.srv.totp_code(user))
        page.click("#login-submit")
        page.wait_for_url(self.srv.url + url)
        page.wait_for_selector("body[data-ready=true]", timeout=90_000)
        return ctx, page


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    if not (WEB_DIST / "telerad-worklist.html").exists():
        pytest.fail("the web front end is not built: run `make web`")
    root = tmp_path_factory.mktemp("web-telerad")
    # Kept where the other browser tests keep theirs (var/ is not versioned): pytest prunes its old tmp dirs.
    artifacts = Path(os.environ.get("ARCHIPEL_TEST_ARTIFACTS", "var/test-artifacts")) / "web-telerad"
    srv = ArchipelServer(root / "data")
    srv.data.mkdir(parents=True)
    srv.add_user("manip-littoral", "technician", HOSPITAL)
    srv.add_user("dr-littoral", "treating-doctor", HOSPITAL)
    srv.add_user("radio-tele", "radiologist", TELERAD)
    srv.add_user("pr-expert", "radiologist", "CHU-EXPERT")
    srv.start()
    try:
        db = Database(f"sqlite:///{(srv.data / 'index.sqlite').resolve()}")
        ensure_master(db, HOSPITAL, PATIENT.patient_id, "WEBTELERAD", PATIENT.birth_date)
        db.dispose()
        images = ct_series(
            PATIENT, 24, rows=64, cols=64, key="web-telerad", accession="WTR-26", description="CT HEAD"
        )
        boundary = f"b-{uuid.uuid4().hex}"
        r = httpx.post(
            srv.url + "/dicom-web/studies",
            content=stow_body([to_bytes(ds) for ds in images], boundary),
            headers={
                **srv.headers("manip-littoral"),
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            },
            timeout=120,
        )
        assert r.status_code == 200, r.text
        with chromium() as browser:
            yield Pool(srv, browser, str(images[0].StudyInstanceUID), artifacts)
    finally:
        srv.stop()


def test_a_teleradiologist_claims_a_stat_request_opens_the_study_in_mpr_and_signs_the_report(
    pool: Pool,
) -> None:
    made = pool.api(
        "dr-littoral",
        "POST",
        "/api/telerad/requests",
        json={
            "issuer": HOSPITAL,
            "patient_id": PATIENT.patient_id,
            "accession_number": "WTR-26",
            "clinical_info": "sudden headache",
            "justification": "subarachnoid haemorrhage?",
            "priority": "stat",
            "subspecialty": "neuro",
        },
    )
    assert made.status_code == 201, made.text
    rid = made.json()["request_id"]
    assert made.json()["study_uid"] == pool.study  # the study was there: linked by its accession

    ctx, page = pool.sign_in("radio-tele", "/app/telerad-worklist.html")
    try:
        item = page.locator(f"li[data-request='{rid}']")
        item.wait_for()
        assert item.get_attribute("data-priority") == "stat"
        sla = item.locator(".telerad-sla")
        first = sla.inner_text()
        assert first  # e.g. "29:58 left" / "reste 29:58"
        page.wait_for_function(
            f"document.querySelector(\"li[data-request='{rid}'] .telerad-sla\").textContent !== {first!r}",
            timeout=30_000,
        )
        pool.keep(page, "worklist")

        item.locator("button.claim").click()
        page.wait_for_selector(
            f"li[data-request='{rid}'][data-state=claimed] .telerad-report", timeout=60_000
        )
        href = item.locator("a.open-study").get_attribute("href")
        assert href == f"/app/study.html?study={pool.study}"

        viewer = ctx.new_page()
        viewer.goto(pool.srv.url + href)
        viewer.wait_for_selector("#viewports[data-viewports='axial,sagittal,coronal']", timeout=180_000)
        pool.keep(viewer, "study-mpr")
        viewer.close()

        item.locator("textarea[name=text]").fill("No intracranial haemorrhage. No mass effect.")
        item.locator("button.sign-final").click()
        page.wait_for_selector(f"li[data-request='{rid}'][data-state=final]", timeout=60_000)
        assert "radio-tele" in page.locator(f"li[data-request='{rid}'] .telerad-signed").inner_text()
        pool.keep(page, "signed")
    finally:
        ctx.close()

    signed = pool.api("radio-tele", "GET", f"/api/telerad/requests/{rid}").json()
    assert signed["state"] == "final" and signed["reports"][-1]["signed_at"] is not None
    again = pool.api("radio-tele", "POST", f"/api/telerad/requests/{rid}/sign", json={"text": "again"})
    assert again.status_code == 409


def test_a_specialist_answers_a_second_opinion_from_the_page(pool: Pool) -> None:
    body = {
        "issuer": HOSPITAL,
        "patient_id": PATIENT.patient_id,
        "accession_number": "WTR-26",
        "clinical_info": "follow-up",
        "justification": "second look",
        "priority": "emergency",
    }
    rid = pool.api("dr-littoral", "POST", "/api/telerad/requests", json=body).json()["request_id"]
    assert pool.api("radio-tele", "POST", f"/api/telerad/requests/{rid}/claim").status_code == 200

    # The reader holding the request asks the specialist from the page.
    ctx, page = pool.sign_in("radio-tele", "/app/telerad-worklist.html")
    try:
        item = page.locator(f"li[data-request='{rid}']")
        item.wait_for()
        ask = item.locator("details.telerad-ask")
        ask.locator("summary").click()
        ask.locator("textarea[name=question]").fill("Subtle hypodensity?")
        ask.locator("select[name=to]").select_option("user")
        ask.locator("input[name=who]").fill("pr-expert")
        ask.locator("button.ask-send").click()
        note = item.locator("p[role=status]")
        note.wait_for(timeout=60_000)
        oid = int(re.search(r"(\d+)", note.inner_text()).group(1))  # type: ignore[union-attr]
        pool.keep(page, "second-opinion-asked")
    finally:
        ctx.close()
    asked = pool.api("radio-tele", "GET", f"/api/telerad/second-opinions/{oid}").json()
    assert asked["to_user"] == "pr-expert" and asked["reading_request_id"] == rid, asked

    ctx, page = pool.sign_in("pr-expert", "/app/telerad-worklist.html")
    try:
        card = page.locator(f"li[data-opinion='{oid}']")
        card.wait_for()
        assert "Subtle hypodensity?" in card.inner_text()
        card.locator("textarea[name=answer]").fill("No: partial volume of the sulci.")
        card.locator("button.send-answer").click()
        page.wait_for_selector("#opinions-section[hidden]", state="attached", timeout=60_000)
        pool.keep(page, "second-opinion-answered")
    finally:
        ctx.close()
    done = pool.api("radio-tele", "GET", f"/api/telerad/second-opinions/{oid}").json()
    assert done["state"] == "answered" and done["answered_by"] == "pr-expert" and done["answer_document_id"]
