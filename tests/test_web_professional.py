"""The professional home in headless Chromium against a real ``archipel serve``: a treating doctor signs in,
searches a patient by name, opens her timeline with the studies of two sites (and not the one she hid from
professionals), narrows it to one site, opens the CT study, which shows in MPR (three rendered views); the
notifications bell shows a critical result, which the doctor acknowledges. The page works at a tablet's size
and by keyboard. A report is found by a word of its text and opens the patient's timeline. Screenshots are kept
in ``var/test-artifacts/web-professional/`` (or ``$ARCHIPEL_TEST_ARTIFACTS``)."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page

from archipel.app import WEB_DIST
from archipel.platform import inbox
from archipel.platform.authn import Principal
from archipel.platform.db import Database
from archipel.platform.identity import review
from archipel.radiology.samples import SyntheticPatient, ct_series
from tests.access_support import ensure_master, mark, relate
from tests.browser import chromium
from tests.support import ArchipelServer
from tests.test_web_study import cube_ct, sign_in, stow

pytestmark = pytest.mark.e2e

AT_A = SyntheticPatient("WPRO0001", "LIGNEDEVIE^Ondine", "19660918", "F", "SITE-A")
AT_B = SyntheticPatient("WPRB0042", "LIGNEDEVIE^Ondine", "19660918", "F", "SITE-B")
ARTIFACTS = Path(os.environ.get("ARCHIPEL_TEST_ARTIFACTS", "var/test-artifacts")) / "web-professional"


def keep(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@dataclass
class Region:
    srv: ArchipelServer
    browser: Browser
    master: int
    ct: str
    mr_b: str
    hidden_b: str
    critical: int


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Region]:
    if not (WEB_DIST / "index.html").exists() or not (WEB_DIST / "study.html").exists():
        pytest.fail("the web front end is not built: run `make web`")
    srv = ArchipelServer(tmp_path_factory.mktemp("web-professional") / "data")
    srv.data.mkdir(parents=True)
    srv.add_user("radio-a", "radiologist", "SITE-A")
    srv.add_user("radio-b", "radiologist", "SITE-B")
    srv.add_user("dr-suivi", "treating-doctor", "SITE-A")
    srv.start()
    try:
        ct = cube_ct(AT_A, "web-pro-ct")
        mr = ct_series(
            AT_B, 2, rows=16, cols=16, study_date="20260105", description="IRM GENOU", key="web-pro-mr"
        )
        hidden = ct_series(
            AT_B, 1, rows=16, cols=16, study_date="20260201", description="CACHE", key="web-pro-h"
        )
        stow(srv, "radio-a", ct)
        stow(srv, "radio-b", mr)
        stow(srv, "radio-b", hidden)
        db = Database(f"sqlite:///{(srv.data / 'index.sqlite').resolve()}")
        master = ensure_master(db, "SITE-A", AT_A.patient_id)
        other = ensure_master(db, "SITE-B", AT_B.patient_id)
        if other != master:
            officer = Principal("officer", "identity-officer")
            review.link(db, officer, "SITE-B", AT_B.patient_id, master, "same woman")
        hidden_uid = str(hidden[0].StudyInstanceUID)
        mark(db, hidden_uid, "MASQUE_PS")
        relate(db, "dr-suivi", master)
        with db.write() as s:
            critical = inbox.notify_user(
                s,
                "dr-suivi",
                kind="critical-result",
                title="Résultat critique : embolie pulmonaire",
                body="Scanner thoracique : embolie pulmonaire bilatérale.",
                link=f"/app/study.html?study={ct[0].StudyInstanceUID}",
                requires_ack=True,
                master=master,
            ).id
        db.dispose()
        with chromium() as browser:
            yield Region(
                srv,
                browser,
                master,
                str(ct[0].StudyInstanceUID),
                str(mr[0].StudyInstanceUID),
                hidden_uid,
                critical,
            )
    finally:
        srv.stop()


def test_a_treating_doctor_searches_opens_the_timeline_and_the_ct_in_mpr(region: Region) -> None:
    ctx, page = sign_in(region.browser, region.srv, "dr-suivi", "/app/index.html")
    try:
        # Search by name, from the keyboard.
        page.locator("#search-q").focus()
        page.keyboard.type("lignedevie")
        page.keyboard.press("Enter")
        page.wait_for_selector("body[data-search=done]")
        hits = page.locator("#patient-list li")
        assert hits.count() == 1
        assert "SITE-A, SITE-B" in hits.first.inner_text()
        keep(page, "search")

        hits.first.locator("a").click()
        page.wait_for_selector("body[data-timeline=done]")
        items = page.locator("#timeline-items li")
        ids = [items.nth(i).get_attribute("data-id") for i in range(items.count())]
        # Newest first (10 and 5 January), both sites, not the hidden one.
        assert ids == [region.ct, region.mr_b]
        assert region.hidden_b not in page.content()
        assert "patient=" in page.url
        keep(page, "timeline")

        page.select_option("#timeline-site", "SITE-A")
        page.click("#timeline-filters button[type=submit]")
        page.wait_for_function("document.querySelectorAll('#timeline-items li').length === 1")
        assert page.locator("#timeline-items li").first.get_attribute("data-site") == "SITE-A"

        page.locator("#timeline-items li a.open").first.click()
        page.wait_for_url(f"**/app/study.html?study={region.ct}*")
        page.wait_for_selector("#viewports[data-viewports='axial,sagittal,coronal']", timeout=120_000)
        assert page.locator(".viewport-cell[data-rendered=true]").count() == 3
        keep(page, "study-mpr")
    finally:
        ctx.close()


def test_the_bell_shows_the_critical_result_and_the_doctor_acknowledges_it(region: Region) -> None:
    ctx, page = sign_in(region.browser, region.srv, "dr-suivi", "/app/index.html")
    try:
        page.wait_for_selector("#bell-slot[data-loaded=true]")
        assert page.locator("#bell-count").inner_text() == "1"
        assert page.locator("#bell").get_attribute("data-awaiting-ack") == "1"
        page.locator("#bell").focus()
        page.keyboard.press("Enter")
        item = page.locator(f".inbox-item[data-id='{region.critical}']")
        assert "embolie pulmonaire" in item.inner_text()
        keep(page, "bell")
        item.locator("button.inbox-ack").click()
        page.wait_for_selector(f".inbox-item[data-id='{region.critical}'] .inbox-acked")
        assert page.locator("#bell").get_attribute("data-awaiting-ack") == "0"
        assert page.locator("#bell-count").inner_text() == ""
        page.keyboard.press("Escape")
        assert page.locator("#inbox-panel").is_hidden()
    finally:
        ctx.close()


def test_the_home_works_on_a_tablet_in_french(region: Region) -> None:
    ctx, page = sign_in(region.browser, region.srv, "dr-suivi", f"/app/index.html?patient={region.master}")
    try:
        page.set_viewport_size({"width": 768, "height": 1024})
        page.click(".language-switch button[data-lang=fr]")
        page.wait_for_selector("body[data-timeline=done]")
        assert page.locator("#timeline-heading").inner_text() == "Ligne de vie"
        assert page.locator("#timeline-items li").count() == 2
        search = page.locator("#search-q").bounding_box()
        timeline = page.locator("#timeline").bounding_box()
        assert search and timeline and search["y"] < timeline["y"]  # one column: search above the timeline
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        keep(page, "tablet-fr")
    finally:
        ctx.close()


def test_a_doctor_finds_a_report_by_a_word_of_its_text_and_opens_the_patients_timeline(
    region: Region,
) -> None:
    # A signed report of the other site; the word searched is in its text only, not in its title.
    text = "Fissure horizontale de la corne posterieure du menisque interne. Pas d'epanchement articulaire."
    body = {
        "issuer": "SITE-B", "patient_id": AT_B.patient_id, "site": "SITE-B", "type_code": "18748-4",
        "type_display": "Diagnostic imaging study", "title": "IRM du genou droit", "author": "Dr Invented",
        "organisation": "Site B imaging", "content_type": "text/plain",
        "content": base64.b64encode(text.encode()).decode(), "study_uids": [region.mr_b],
    }  # fmt: skip
    headers = region.srv.headers("radio-b")
    r = httpx.post(region.srv.url + "/api/documents", json=body, headers=headers, timeout=60)
    assert r.status_code == 201, r.text
    report = r.json()["id"]
    r = httpx.post(f"{region.srv.url}/api/documents/{report}/sign", headers=headers, timeout=60)
    assert r.status_code == 200 and r.json()["status"] == "final", r.text

    ctx, page = sign_in(region.browser, region.srv, "dr-suivi", "/app/index.html")
    try:

        def search(words: str) -> None:
            page.fill("#search-q", words)
            page.locator("#search-q").press("Enter")
            page.wait_for_selector("body[data-search=done]")

        page.select_option("#search-kind", "report")
        search("menisque")
        hits = page.locator("#report-list li.report-hit")
        assert hits.count() == 1 and hits.first.get_attribute("data-id") == str(report)
        assert "IRM du genou droit" in hits.first.inner_text() and "SITE-B" in hits.first.inner_text()
        assert page.locator("#patient-results").is_hidden()
        keep(page, "report-search")

        # A word of no report finds nothing.
        page.evaluate("document.body.dataset.search = 'idle'")
        search("rotule")
        assert page.locator("#report-results").is_hidden() and page.locator("#report-list li").count() == 0

        # The hit opens the woman's timeline, where the report is listed.
        page.evaluate("document.body.dataset.search = 'idle'")
        search("menisque")
        hits.first.locator("a").click()
        page.wait_for_selector("body[data-timeline=done]")
        assert f"patient={region.master}" in page.url
        assert page.locator(f"#timeline-items li[data-id='{report}']").count() == 1
    finally:
        ctx.close()
