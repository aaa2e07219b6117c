"""The sign-in page and the patient portal in headless Chromium against a real ``archipel serve``: ``/`` opens the
sign-in page; a patient types the access code from their exam slip, then the one-time code that arrives in the
file outbox, sees their signed frozen-section report and their study, switches the page to English, and
withdraws their consent to sharing. Screenshots are kept in ``var/test-artifacts/web-patient/`` (or
``$ARCHIPEL_TEST_ARTIFACTS``), at a tablet's size."""

from __future__ import annotations

import base64
import os
import re
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, ViewportSize

from archipel.app import WEB_DIST
from archipel.platform.db import Database
from archipel.radiology.samples import SyntheticPatient, ct_series
from archipel.wsi.frozen_models import FrozenSectionRequest
from tests.access_support import ensure_master
from tests.browser import chromium
from tests.dicomweb_messages import stow
from tests.support import ArchipelServer, wait_until

pytestmark = pytest.mark.e2e

SITE, PATIENT_ID = "CH-NORD", "WPAT0001"
PERSON = SyntheticPatient(PATIENT_ID, "WEBPATIENT^Test", "19810303", "F", issuer=SITE)
TABLET: ViewportSize = {"width": 820, "height": 1180}
REPORT = "No nodule. No pleural effusion. Conclusion: normal CT of the thorax."
ARTIFACTS = Path(os.environ.get("ARCHIPEL_TEST_ARTIFACTS", "var/test-artifacts")) / "web-patient"


def _signed_verdict(db: Database, master: int) -> int:
    """A frozen-section request of the patient whose verdict is signed (so released to them)."""
    now = datetime.now(UTC)
    with db.write() as s:
        req = FrozenSectionRequest(
            issuer=SITE,
            patient_id=PATIENT_ID,
            master_id=master,
            specimen="lumpectomy",
            specimen_site="right breast",
            clinical_question="margins?",
            or_phone="+33 3 00 00 00 21",
            requested_by="dr-test",
            requesting_site=SITE,
            requested_at=now - timedelta(minutes=30),
            verdict_at=now - timedelta(minutes=12),
            verdict_by="patho-test",
            diagnosis="benign",
            margins="clear",
            verdict_text="Fibroadenoma, no malignancy seen.",
            signed_payload="{}",
            signature="ab" * 32,
            signing_key_id="k1",
        )
        s.add(req)
        s.flush()
        return req.id


def _signed_report(srv: ArchipelServer) -> None:
    """The radiologist registers a CT report and signs it: final, so released to the patient."""
    body = {
        "issuer": SITE,
        "patient_id": PATIENT_ID,
        "site": SITE,
        "type_code": "18748-4",
        "type_display": "Diagnostic imaging study",
        "title": "CT thorax report",
        "author": "radiologue",
        "content_type": "text/plain",
        "content": base64.b64encode(REPORT.encode()).decode(),
    }
    made = httpx.post(srv.url + "/api/documents", json=body, headers=srv.headers("radiologue"), timeout=60)
    assert made.status_code == 201, made.text
    doc = made.json()["id"]
    signed = httpx.post(f"{srv.url}/api/documents/{doc}/sign", headers=srv.headers("radiologue"), timeout=60)
    assert signed.status_code == 200, signed.text
    draft = {**body, "title": "CT thorax report (draft)"}
    assert httpx.post(
        srv.url + "/api/documents", json=draft, headers=srv.headers("radiologue"), timeout=60
    ).is_success


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ArchipelServer, str]]:
    if not (WEB_DIST / "patient.html").exists():
        pytest.fail("the web front end is not built: run `make web`")
    srv = ArchipelServer(tmp_path_factory.mktemp("web-patient") / "data")
    srv.data.mkdir(parents=True)
    srv.add_user("radiologue", "radiologist", SITE)
    srv.start()
    stored = stow(srv, list(ct_series(PERSON, 2, key="web-patient/ct", rows=32, cols=32)), user="radiologue")
    assert stored.status_code == 200, stored.text
    db = Database(f"sqlite:///{(srv.data / 'index.sqlite').resolve()}")
    master = ensure_master(db, SITE, PATIENT_ID, "WEBPATIENT", "19810303")
    _signed_verdict(db, master)
    db.dispose()
    _signed_report(srv)
    # a professional reads the record: the patient will see it in "who accessed my record"
    read = httpx.get(
        f"{srv.url}/api/patients/{master}/studies", headers=srv.headers("radiologue"), timeout=60
    )
    assert read.status_code == 200 and len(read.json()["studies"]) == 1, read.text
    made = srv.cli("patients", "access-code", SITE, PATIENT_ID, "--email", "patient.web@example.org")
    code = made.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"([0-9A-Z]{4}-){4}[0-9A-Z]{4}", code)
    try:
        yield srv, code
    finally:
        srv.stop()


def _one_time_code(srv: ArchipelServer, before: set[str]) -> str:
    outbox = srv.data / "outbox"
    found: list[str] = []

    def arrived() -> bool:
        new = sorted(p for p in outbox.iterdir() if p.name not in before) if outbox.exists() else []
        for message in new:
            hit = re.search(r"one-time code is (\d{6})", message.read_text())
            if hit:
                found.append(hit.group(1))
        return bool(found)

    wait_until(arrived, 60, "the one-time code in the outbox")
    return found[-1]


def _shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_a_patient_signs_in_with_code_and_one_time_code_reads_a_report_and_withdraws_consent(
    server: tuple[ArchipelServer, str],
) -> None:
    srv, code = server
    assert httpx.get(srv.url + "/docs", timeout=30).status_code == 200  # the API's documentation stays
    with chromium() as browser:
        ctx = browser.new_context(viewport=TABLET, locale="fr-FR", has_touch=True)
        ctx.set_default_timeout(60_000)  # a loaded 2-core machine answers slowly
        page = ctx.new_page()
        try:
            page.goto(srv.url + "/")
            page.wait_for_url("**/app/login.html")
            page.wait_for_selector("body[data-ready=true]")
            assert page.locator("h1").inner_text() == "Connexion"
            # keyboard: from the professional tab, the right arrow reaches the patient tab
            page.focus("#tab-professional")
            page.keyboard.press("ArrowRight")
            assert page.evaluate("document.activeElement.id") == "tab-patient"
            assert page.locator("#panel-patient").is_visible()
            assert not page.locator("#panel-professional").is_visible()
            page.get_by_label("Code d'accès").fill("ZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZ")
            page.click("#patient-code-submit")
            page.wait_for_function("document.querySelector('#patient-error').textContent.length > 0")
            assert "n'est pas valable" in page.locator("#patient-error").inner_text()
            _shot(page, "1-wrong-access-code")

            outbox = srv.data / "outbox"
            before = {p.name for p in outbox.iterdir()} if outbox.exists() else set()
            page.get_by_label("Code d'accès").fill(code.lower())
            page.click("#patient-code-submit")
            page.wait_for_selector("#patient-otp-form:not([hidden])")
            assert "p***@example.org" in page.locator("#patient-sent").inner_text()
            assert page.evaluate("document.activeElement.id") == "one-time-code"
            _shot(page, "2-one-time-code-sent")
            page.get_by_label("Code à usage unique (6 chiffres)").fill(_one_time_code(srv, before))
            page.click("#patient-otp-submit")
            page.wait_for_url("**/app/patient.html")
            page.wait_for_selector("body[data-ready=true]")

            report = page.locator("#result-list li[data-kind=frozen-section]")
            assert report.count() == 1
            assert "Fibroadenoma, no malignancy seen." in report.inner_text()
            assert "Bénin" in report.inner_text() and "Marges saines" in report.inner_text()
            assert report.locator("h3").inner_text() == "Examen extemporané : lumpectomy"
            document = page.locator("#result-list li[data-kind=document]")
            assert document.count() == 1  # the signed report; the draft is not released
            assert "CT thorax report" in document.inner_text()
            with ctx.expect_page() as opened:
                document.get_by_role("link", name="Lire le compte rendu").click()
            content = opened.value
            content.wait_for_load_state()
            assert REPORT in content.inner_text("body")
            content.close()
            with page.expect_download() as saving:
                document.get_by_role("link", name="Télécharger le compte rendu").click()
            report_file = ARTIFACTS / "report.txt"
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            saving.value.save_as(report_file)
            assert report_file.read_text() == REPORT
            _shot(page, "3-portal-report")

            log = page.locator("#log-table tbody tr", has_text="radiologue")
            assert log.count() >= 1 and SITE in log.first.inner_text()
            study = page.locator("#study-list li[data-study]")
            assert study.count() == 1
            assert not page.locator("#download-all").is_visible()  # one study: its own link is enough
            with page.expect_download() as downloading:
                study.locator("a.download").click()
            saved = ARTIFACTS / "study.zip"
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            downloading.value.save_as(saved)
            with zipfile.ZipFile(saved) as zf:
                names = zf.namelist()
            assert names[0] == "DICOMDIR" and len(names) == 3

            # the images open in the radiology viewer, with the patient's own session
            viewer = ctx.new_page()
            viewer.goto(srv.url + study.get_by_role("link", name="Voir les images").get_attribute("href"))
            viewer.wait_for_selector("#viewports[data-viewports]")
            assert viewer.locator("#viewports").get_attribute("data-viewports") == "stack"
            _shot(viewer, "3b-images-in-the-viewer")
            viewer.close()

            page.click(".language-switch button[data-lang=en]")
            assert page.locator("h1").inner_text() == "My results"
            assert page.locator("html").get_attribute("lang") == "en"
            assert "Benign" in report.inner_text()  # the cards are drawn again in English
            assert "read (record)" in page.locator("#log-table tbody").inner_text()
            button = page.locator("#consent-toggle")
            assert button.inner_text() == "Withdraw my consent to sharing"
            button.focus()
            page.keyboard.press("Enter")
            page.wait_for_selector("#consent-state[data-state=refused]")
            assert page.locator("#consent-done").inner_text() == "Your consent is withdrawn."
            assert page.locator("#consent-toggle").inner_text() == "Give my consent to sharing"
            assert page.locator("#consent-history li").count() == 1
            _shot(page, "4-consent-withdrawn")

            # the choice is the server's, not the page's: a reload shows it, still in English
            page.reload()
            page.wait_for_selector("body[data-ready=true]")
            assert page.locator("#consent-state").get_attribute("data-state") == "refused"
            assert page.locator("h1").inner_text() == "My results"

            # signing out ends the session: the portal sends the browser back to the sign-in page
            page.click("#sign-out")
            page.wait_for_url("**/app/login.html?way=patient")
            assert page.locator("#panel-patient").is_visible()
            page.goto(srv.url + "/app/patient.html")
            page.wait_for_url("**/app/login.html?next=*")
        finally:
            ctx.close()
