"""The radiology viewer in headless Chromium against a real ``archipel serve``: a CT series of 32 slices opens in
MPR, three orthographic volume viewports (axial, sagittal, coronal) built from the slices fetched over WADO-RS;
the keyboard changes the window and the layout; a short series opens as a stack.

The synthetic CT is a bright cube (+1000 HU) in the middle of air (-1024 HU): on the CT window (40/400) every
view must show white in its centre and black in its corners; that holds in the sagittal and coronal views only
if the volume was built from all the slices in their order. Screenshots are kept in
``var/test-artifacts/web-study/`` (or ``$ARCHIPEL_TEST_ARTIFACTS``)."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, BrowserContext, Page, ViewportSize

from archipel.app import WEB_DIST
from archipel.platform.db import Database
from archipel.radiology.samples import SyntheticPatient, ct_series, to_bytes
from tests.access_support import ensure_master
from tests.browser import chromium
from tests.dicomweb_messages import stow_body
from tests.support import ArchipelServer

pytestmark = pytest.mark.e2e

SITE = "SITE-A"
PATIENT = SyntheticPatient("WSTU0001", "VOLUMETEST^Dominique", "19710203", "M", SITE)
SLICES, SIZE = 32, 64
VIEWPORT: ViewportSize = {"width": 1200, "height": 800}
ARTIFACTS = Path(os.environ.get("ARCHIPEL_TEST_ARTIFACTS", "var/test-artifacts")) / "web-study"


def cube_ct(patient: SyntheticPatient, key: str, slices: int = SLICES) -> list[Any]:
    """A CT series of ``slices`` 64x64 slices: air, with a +1000 HU cube over the middle half of each axis."""
    series = ct_series(patient, slices, rows=SIZE, cols=SIZE, key=key, description="CT CUBE")
    lo, hi = SIZE // 4, 3 * SIZE // 4
    for i, ds in enumerate(series):
        img = np.zeros((SIZE, SIZE), dtype=np.uint16)  # stored 0 = -1024 HU (intercept -1024)
        if slices // 4 <= i < 3 * slices // 4:
            img[lo:hi, lo:hi] = 2024  # +1000 HU
        ds.PixelData = img.tobytes()
        ds.SeriesDescription = f"cube {slices}"
    return series


def stow(srv: ArchipelServer, user: str, images: list[Any]) -> None:
    """Store ``images`` through STOW-RS as ``user``."""
    boundary = f"b-{uuid.uuid4().hex}"
    r = httpx.post(
        srv.url + "/dicom-web/studies",
        content=stow_body([to_bytes(ds) for ds in images], boundary),
        headers={
            **srv.headers(user),
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        },
        timeout=120,
    )
    assert r.status_code == 200, r.text


def sign_in(browser: Browser, srv: ArchipelServer, user: str, url: str) -> tuple[BrowserContext, Page]:
    """A browser context of its own, signed in as ``user`` through the sign-in page, showing ``url``."""
    ctx = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
    ctx.set_default_timeout(90_000)  # a loaded 2-core machine answers slowly
    page = ctx.new_page()
    page.goto(srv.url + url)
    page.wait_for_url("**/app/login.html?next=*")
    page.fill("#username", user)
    page.fill("#password", srv._passwords[user])
    page.fill("#totp", srv.totp_code(user))
    page.click("#login-submit")
    page.wait_for_url(srv.url + url)
    page.wait_for_selector("body[data-ready=true]", timeout=90_000)
    return ctx, page


def keep(page: Page, name: str) -> bytes:
    """A screenshot of the page, kept as a test artifact; its PNG bytes."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = page.screenshot()
    (ARTIFACTS / f"{name}.png").write_bytes(shot)
    return shot


def cell_levels(page: Page, shot: bytes, view: str) -> tuple[float, float]:
    """Mean grey level at the centre of a viewport cell and in its corners, from a screenshot."""
    box = page.locator(f".viewport-cell[data-view={view}]").bounding_box()
    assert box is not None
    grey = np.asarray(Image.open(io.BytesIO(shot)).convert("L")).astype(np.float32)
    x0, y0, w, h = int(box["x"]), int(box["y"]), int(box["width"]), int(box["height"])
    cell = grey[y0 : y0 + h, x0 : x0 + w]
    cy, cx, r = h // 2, w // 2, max(2, min(w, h) // 20)
    centre = float(cell[cy - r : cy + r, cx - r : cx + r].mean())
    m = max(2, min(w, h) // 20)
    corners = [cell[m : 2 * m, m : 2 * m], cell[-2 * m : -m, -2 * m : -m]]
    return centre, float(np.mean([c.mean() for c in corners]))


@dataclass
class Site:
    srv: ArchipelServer
    browser: Browser
    ct: str
    short: str


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    if not (WEB_DIST / "study.html").exists():
        pytest.fail("the web front end is not built: run `make web`")
    srv = ArchipelServer(tmp_path_factory.mktemp("web-study") / "data")
    srv.data.mkdir(parents=True)
    srv.add_user("radio-a", "radiologist", SITE)
    srv.start()
    try:
        db = Database(f"sqlite:///{(srv.data / 'index.sqlite').resolve()}")
        ensure_master(db, SITE, PATIENT.patient_id, "VOLUMETEST", PATIENT.birth_date)
        db.dispose()
        ct = cube_ct(PATIENT, "web-study-ct")
        short = cube_ct(PATIENT, "web-study-short", slices=3)
        stow(srv, "radio-a", ct)
        stow(srv, "radio-a", short)
        with chromium() as browser:
            yield Site(srv, browser, str(ct[0].StudyInstanceUID), str(short[0].StudyInstanceUID))
    finally:
        srv.stop()


def test_a_ct_volume_opens_in_mpr_with_three_rendered_views_of_the_cube(site: Site) -> None:
    ctx, page = sign_in(site.browser, site.srv, "radio-a", f"/app/study.html?study={site.ct}")
    try:
        page.wait_for_selector("#viewports[data-viewports='axial,sagittal,coronal']", timeout=120_000)
        assert page.locator(".viewport-cell[data-rendered=true]").count() == 3
        shot = keep(page, "ct-mpr")
        for view in ("axial", "sagittal", "coronal"):
            centre, corners = cell_levels(page, shot, view)
            assert centre > 200 and corners < 40, (view, centre, corners)
        assert "40" in page.locator("#window-status").inner_text()

        # Keyboard: the right arrow widens the window; M switches to the stack and back.
        before = page.evaluate("archipel.window()")
        page.locator(".viewport-cell[data-view=axial]").focus()
        page.keyboard.press("ArrowRight")
        page.wait_for_function(f"archipel.window().width > {before['width']}")
        # The keys scroll the focused view; dragging with the window/level tool changes the window.
        slice_before = page.evaluate("archipel.slice('axial')")
        page.keyboard.press("PageDown")
        page.wait_for_function(f"archipel.slice('axial') !== {slice_before}")
        width = page.evaluate("archipel.window().width")
        box = page.locator(".viewport-cell[data-view=axial]").bounding_box()
        assert box is not None
        cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(cx, cy)
        page.mouse.down()
        page.mouse.move(cx + 60, cy + 10, steps=6)
        page.mouse.up()
        page.wait_for_function(f"archipel.window().width !== {width}")
        page.keyboard.press("m")
        page.wait_for_selector("#viewports[data-viewports='stack']")
        keep(page, "ct-stack")
        page.keyboard.press("m")
        page.wait_for_selector("#viewports[data-viewports='axial,sagittal,coronal']", timeout=120_000)
    finally:
        ctx.close()


def test_a_series_too_short_for_a_volume_opens_as_a_stack(site: Site) -> None:
    ctx, page = sign_in(site.browser, site.srv, "radio-a", f"/app/study.html?study={site.short}")
    try:
        page.wait_for_selector("#viewports[data-viewports='stack']", timeout=120_000)
        assert page.locator("[data-layout=mpr]").is_disabled()
        shot = keep(page, "short-stack")
        centre, corners = cell_levels(page, shot, "stack")
        assert centre > 200 and corners < 40, (centre, corners)
    finally:
        ctx.close()
