"""The web viewer in headless Chromium against a real ``archipel serve``: log in through the login page, open a
synthetic slide whose pixels are known, go to 20x and compare the screen with the slide; measure a length and an
area; draw a labelled polygon, save it, reload, and find it again on the server and in the overlay; switch
slides, and compare two side by side.

Tolerance of the pixel check: the mean absolute difference per channel between the screenshot and the painted
slide region must stay under 12 grey levels (JPEG quality 80 tiles, then the browser's drawing; about 9 is
measured, the best match lying within half a pixel), and under half of the difference found when the expected
region is shifted by 7 pixels (about 22), so that the check fails for a view of the wrong place.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, BrowserContext, Page

from archipel.app import WEB_DIST
from archipel.wsi.synthetic import write_svs
from archipel.wsi.synthetic_content import TissueField, paint
from tests.browser import chromium
from tests.support import ArchipelServer, wait_until

pytestmark = pytest.mark.e2e

SITE = "SITE-A"
WIDTH, HEIGHT, SEED, MPP = 2000, 1500, 3, 0.5
VIEWPORT = {"width": 1100, "height": 760}
TOLERANCE = 12.0
#: Limits of the browser waits (ms); each ends as soon as its condition holds, the limits allow for a loaded
#: 2-core machine.
PAGE_READY, SETTLED = 45_000, 30_000


def _upload(srv: ArchipelServer, path: Path, stain: str) -> str:
    meta = {"patient_id": "WEB0001", "issuer": SITE, "accession": "WEBACC1", "stain": stain}
    return srv.upload_slide(path, meta)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ArchipelServer, list[str]]]:
    """A platform with a pathologist and two slides of one case (H&E, then an IHC), uploaded."""
    if not (WEB_DIST / "viewer.html").exists():
        pytest.fail("the web front end is not built: run `make web`")
    root = tmp_path_factory.mktemp("web")
    srv = ArchipelServer(root / "data")
    srv.data.mkdir(parents=True)
    srv.cli("identity", "issuers", "add", SITE)
    srv.add_user("pathologist", "pathologist", SITE)
    srv.start()
    try:
        he = write_svs(root / "he.svs", WIDTH, HEIGHT, tile=256, downsamples=(1, 4), mpp=MPP, seed=SEED)
        ihc = write_svs(root / "ihc.svs", WIDTH, HEIGHT, tile=256, downsamples=(1, 4), mpp=MPP, seed=SEED + 1)
        slides = [_upload(srv, he, "HE"), _upload(srv, ihc, "KI67")]

        yield srv, slides
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def context(browser: Browser, site: tuple[ArchipelServer, list[str]]) -> Iterator[BrowserContext]:
    """A browser logged in as the pathologist through the login page (one TOTP code for the whole module)."""
    srv, slides = site
    ctx = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
    page = ctx.new_page()
    page.goto(f"{srv.url}/app/viewer.html?slide={slides[0]}")
    page.wait_for_url("**/app/login.html?next=*")
    page.fill("#username", "pathologist")
    page.fill("#password", srv._passwords["pathologist"])
    page.fill("#totp", srv.totp_code("pathologist"))
    page.click("#login-submit")
    page.wait_for_url(f"**/app/viewer.html?slide={slides[0]}")
    page.close()
    yield ctx
    ctx.close()


def open_viewer(ctx: BrowserContext, url: str) -> Page:
    page = ctx.new_page()
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]", timeout=PAGE_READY)
    page.evaluate("archipel.fullyLoaded()")
    return page


def settle(page: Page) -> None:
    """Wait until the viewer stopped moving and drew every tile of the view."""
    page.wait_for_function("archipel.isSettled()", timeout=SETTLED)


def test_the_pathologist_goes_to_20x_and_the_screen_shows_the_slides_own_pixels(
    context: BrowserContext, site: tuple[ArchipelServer, list[str]]
) -> None:
    srv, slides = site
    srv.wait_converted(slides[0])  # viewed converted; the IHC may still be read from its source
    page = open_viewer(context, f"{srv.url}/app/viewer.html?slide={slides[0]}")
    page.keyboard.press("4")  # the fourth preset: 20x
    # 20x is 0.5 µm per screen pixel: on a 0.5 µm/px slide, one screen pixel per level-0 pixel.
    page.wait_for_function("Math.abs(archipel.imageViewport().zoom - 1) < 0.002", timeout=SETTLED)
    settle(page)
    assert page.locator("#scale-bar .magnification").inner_text() == "20.0\u00d7"
    assert page.locator("#scale-bar .scale-bar-text").inner_text() == "50 µm"
    # A 200 x 200 patch of the page at the viewer's centre (away from the navigator and the scale bar); the
    # level-0 position of its first pixel's centre comes from the viewer, so that the element's fractional
    # position on the page does not shift the comparison.
    box = page.locator("#viewer").bounding_box()
    assert box is not None
    half = 100
    left, top = int(box["x"] + box["width"] / 2) - half, int(box["y"] + box["height"] / 2) - half
    shot = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB")).astype(np.float32)
    patch = shot[top : top + 2 * half, left : left + 2 * half]
    ((first_x, first_y),) = page.evaluate(
        "points => archipel.screenToImage(points)", [[left + 0.5 - box["x"], top + 0.5 - box["y"]]]
    )
    field = TissueField(WIDTH, HEIGHT, SEED)
    x0, y0 = first_x - 0.5, first_y - 0.5  # paint() samples pixel centres at x0 + 0.5, x0 + 1.5...

    def error(dx: float, dy: float) -> float:
        expected = paint(field, x0 + dx, y0 + dy, 1.0, 2 * half, 2 * half).astype(np.float32)
        return float(np.abs(patch - expected).mean())

    assert paint(field, x0, y0, 1.0, 2 * half, 2 * half).std() > 10  # the patch is tissue, not blank glass
    exact, shifted = error(0, 0), min(error(7, 0), error(0, 7), error(-7, 0), error(0, -7))
    assert exact < TOLERANCE, (exact, shifted)
    assert exact < shifted / 2, (exact, shifted)
    page.close()


def test_a_labelled_polygon_is_saved_shown_again_after_a_reload_and_deleted(
    context: BrowserContext, site: tuple[ArchipelServer, list[str]]
) -> None:
    srv, slides = site
    url = f"{srv.url}/app/viewer.html?slide={slides[0]}"
    page = open_viewer(context, url)
    box = page.locator("#viewer").bounding_box()
    assert box is not None
    # The ruler and the area, in µm and mm² from the slide's pixel size.
    centre = (box["width"] / 2, box["height"] / 2)
    ruler = [(centre[0] - 150, centre[1]), (centre[0] + 150, centre[1] + 40)]
    page.click("button[data-tool=ruler]")
    for sx, sy in ruler:
        page.mouse.click(box["x"] + sx, box["y"] + sy)
    (ax, ay), (bx, by) = page.evaluate("points => archipel.screenToImage(points)", ruler)
    shown = page.locator("#measure").inner_text()
    assert shown.endswith(" µm") and float(shown[:-3]) == pytest.approx(
        np.hypot(bx - ax, by - ay) * MPP, abs=0.2
    )
    triangle = [
        (centre[0] - 100, centre[1] - 80),
        (centre[0] + 120, centre[1] - 60),
        (centre[0], centre[1] + 90),
    ]
    page.click("button[data-tool=area]")
    for sx, sy in triangle:
        page.mouse.click(box["x"] + sx, box["y"] + sy)
    page.keyboard.press("Enter")
    (p1, p2, p3) = np.array(page.evaluate("points => archipel.screenToImage(points)", triangle))
    (ux, uy), (vx, vy) = p2 - p1, p3 - p1
    area_px = abs(ux * vy - uy * vx) / 2
    shown = page.locator("#measure").inner_text()
    assert shown.endswith(" mm²") and float(shown[:-4]) == pytest.approx(area_px * MPP * MPP * 1e-6, abs=2e-4)

    page.click("button[data-tool=Polygon]")
    corners = [(-120, -90), (130, -80), (110, 100), (-100, 90)]
    clicked = [(box["width"] / 2 + dx, box["height"] / 2 + dy) for dx, dy in corners]
    for sx, sy in clicked:
        page.mouse.click(box["x"] + sx, box["y"] + sy)
    clicked_in_image = page.evaluate("points => archipel.screenToImage(points)", clicked)
    page.click("#finish")
    page.fill("#annotation-label", "invasive front")
    page.click("#annotation-save")
    page.wait_for_selector("#annotation-list li:has-text('invasive front')")

    answer = page.request.get(f"{srv.url}/api/slides/{slides[0]}/annotations")
    assert answer.ok, answer.text()
    (saved,) = [f for f in answer.json()["features"] if f["properties"]["label"] == "invasive front"]
    ring = saved["geometry"]["coordinates"][0]
    assert saved["geometry"]["type"] == "Polygon" and len(ring) == 5 and ring[0] == ring[-1]
    assert saved["properties"]["author"] == "pathologist"
    assert np.allclose(np.array(ring[:-1]), np.array(clicked_in_image), atol=0.5)

    page.reload()
    page.wait_for_selector("body[data-ready=true]", timeout=PAGE_READY)
    settle(page)
    shape = page.locator("svg.shape-overlay g.annotation[data-kind=Polygon]", has_text="invasive front")
    shape.wait_for(timeout=SETTLED)
    points = [
        tuple(float(v) for v in p.split(","))
        for p in shape.locator("polygon").get_attribute("points").split()  # type: ignore[union-attr]
    ]
    # Drawn where the image coordinates the server holds fall on the screen now.
    on_screen = page.evaluate("points => archipel.imageToScreen(points)", ring[:-1])
    assert np.allclose(np.array(points), np.array(on_screen), atol=1.0)

    page.click(f"#annotation-list li[data-id='{saved['id']}'] button")  # deleted from the list
    page.wait_for_selector(f"#annotation-list li[data-id='{saved['id']}']", state="detached")
    assert shape.count() == 0
    left = page.request.get(f"{srv.url}/api/slides/{slides[0]}/annotations").json()["features"]
    assert saved["id"] not in {f["id"] for f in left}
    page.close()


def test_the_case_strip_keys_and_a_locked_side_by_side_view_and_the_timings_sent(
    context: BrowserContext, site: tuple[ArchipelServer, list[str]]
) -> None:
    srv, slides = site
    page = open_viewer(context, f"{srv.url}/app/viewer.html?slide={slides[0]}")
    assert page.locator("#case-strip button").count() == 2
    page.wait_for_function("document.querySelector('#label-image').naturalWidth === 320")
    page.wait_for_function("document.querySelector('#overview-image').naturalWidth > 0")

    page.keyboard.press("n")  # the next slide of the case
    page.wait_for_function(f"archipel.info().slide_id === {slides[1]!r}")
    assert page.locator("#case-strip button.current").get_attribute("data-slide") == slides[1]
    assert "KI67" in page.locator("#slide-title").inner_text()
    settle(page)
    page.keyboard.press("p")
    page.wait_for_function(f"archipel.info().slide_id === {slides[0]!r}")
    assert f"slide={slides[0]}" in page.url
    settle(page)

    before = page.evaluate("archipel.imageViewport()")
    page.keyboard.press("ArrowRight")  # a quarter of the view to the right: the next field
    settle(page)
    after = page.evaluate("archipel.imageViewport()")
    view_width = VIEWPORT["width"]  # an upper bound of the viewer's width in screen pixels
    assert 0 < after["center"][0] - before["center"][0] < view_width / 4 / before["zoom"] + 1
    page.wait_for_function("archipel.timings.some(t => t.event === 'next_field')")
    events = {t["event"] for t in page.evaluate("archipel.timings")}
    assert events >= {"open_case", "switch_slide", "next_field"}

    def recorded() -> bool:  # the server's turnaround report counts them
        viewer = page.request.get(f"{srv.url}/api/frozen-sections/report").json()["viewer"]
        return all(viewer.get(e, {}).get("count", 0) >= 1 for e in events)

    wait_until(recorded, 10, "the viewer's timings on the server")

    page.select_option("#compare", slides[1])  # side by side, locked
    page.wait_for_function("archipel.secondViewport() !== null")
    page.focus("#lock")  # away from the list, which keeps its keys
    settle(page)  # the first viewer has half the width now
    zoom = page.evaluate("archipel.imageViewport().zoom")
    page.keyboard.press("+")
    settle(page)
    assert page.evaluate("archipel.imageViewport().zoom") == pytest.approx(zoom * 1.5, rel=0.01)

    def apart() -> float:
        a, b = page.evaluate("[archipel.imageViewport(), archipel.secondViewport()]")
        return float(
            abs(a["zoom"] - b["zoom"]) / a["zoom"] + np.hypot(*np.subtract(a["center"], b["center"]))
        )

    page.wait_for_function(
        "(() => { const a = archipel.imageViewport(), b = archipel.secondViewport();"
        " return Math.abs(a.zoom - b.zoom) / a.zoom < 1e-3 && Math.abs(a.center[0] - b.center[0]) < 1; })()"
    )
    page.uncheck("#lock")
    page.keyboard.press("ArrowDown")
    settle(page)
    assert apart() > 1  # unlocked: the second view stayed where it was
    page.close()
