"""The multi-head microscope page in headless Chromium against a real ``archipel serve``: a presenter and a
follower, each logged in through the login page in a browser context of their own, open the same session; the
presenter zooms and pans with the mouse and the follower's viewer tracks it; the presenter's pointer shows on the
follower's screen; control is handed over with the page's button and then the presenter follows.

Tolerance: both windows are the same size, so the visible regions (level-0 pixels) must agree to within 1 % of
the visible width (the follower applies each received viewport at once; the last one sent is the final one).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, ViewportSize

from archipel.app import WEB_DIST
from archipel.platform.db import Database
from archipel.wsi.synthetic import write_svs
from tests.access_support import ensure_master
from tests.browser import chromium
from tests.support import ArchipelServer

pytestmark = pytest.mark.e2e

SITE = "SITE-A"
VIEWPORT: ViewportSize = {"width": 1000, "height": 700}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ArchipelServer, str]]:
    """A platform with two pathologists of one site and a slide (viewed from its source)."""
    if not (WEB_DIST / "multihead.html").exists():
        pytest.fail("the web front end is not built: run `make web`")
    root = tmp_path_factory.mktemp("web-multihead")
    srv = ArchipelServer(root / "data")
    srv.data.mkdir(parents=True)
    srv.add_user("presenter", "pathologist", SITE)
    srv.add_user("follower", "pathologist", SITE)
    srv.start()
    db = Database(f"sqlite:///{(srv.data / 'index.sqlite').resolve()}")
    ensure_master(db, SITE, "MHWEB01", "MULTIHEADWEB", "19800808")  # registers the site as an issuer too
    db.dispose()
    try:
        path = write_svs(root / "he.svs", 1600, 1200, tile=256, downsamples=(1, 4), seed=7)
        meta = {"patient_id": "MHWEB01", "issuer": SITE, "accession": "MHWEB1", "stain": "HE"}
        yield srv, srv.upload_slide(path, meta, user="presenter")
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


def _logged_in(
    browser: Browser, srv: ArchipelServer, user: str, url: str, ready: str = "body[data-ready=true]"
) -> tuple[BrowserContext, Page]:
    ctx = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
    ctx.set_default_timeout(60_000)  # a loaded 2-core CI machine answers slowly
    page = ctx.new_page()
    page.goto(url)
    page.wait_for_url("**/app/login.html?next=*")
    page.fill("#username", user)
    page.fill("#password", srv._passwords[user])
    page.fill("#totp", srv.totp_code(user))
    page.click("#login-submit")
    page.wait_for_url(url)
    page.wait_for_selector(ready, timeout=20_000)
    return ctx, page


def _bounds(page: Page) -> list[float]:
    found = page.evaluate("archipel.bounds()")
    assert found is not None
    return [float(v) for v in found]


def _tracks(follower: Page, leader: Page) -> None:
    """Wait until the follower shows the leader's region (within 1 % of its width)."""
    follower.wait_for_function(
        """([lead]) => {
            const b = archipel.bounds();
            return b !== null && b.every((v, i) => Math.abs(v - lead[i]) <= 0.01 * lead[2]);
        }""",
        arg=[_settled_bounds(leader)],
        timeout=30_000,
    )


def _settled_bounds(page: Page) -> list[float]:
    page.wait_for_function("archipel.isSettled()", timeout=30_000)
    return _bounds(page)


def _drag(page: Page, dx: float, dy: float) -> None:
    box = page.locator("#viewer").bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + dx / 2, y + dy / 2, steps=4)
    page.mouse.move(x + dx, y + dy, steps=4)
    page.mouse.up()


def test_the_follower_tracks_the_presenters_pan_and_zoom_and_control_changes_hands(
    browser: Browser, site: tuple[ArchipelServer, str]
) -> None:
    srv, slide_id = site
    # The presenter opens the session from the page (prefilled with the slide) and invites the follower.
    start = f"{srv.url}/app/multihead.html?slide={slide_id}"
    p_ctx, presenter = _logged_in(browser, srv, "presenter", start, "#start-session:not([hidden])")
    presenter.fill("#start-invitees", "follower")
    presenter.click("#start-submit")
    presenter.wait_for_url("**/app/multihead.html?session=*")
    presenter.wait_for_selector("body[data-ready=true]", timeout=20_000)
    f_ctx, follower = _logged_in(browser, srv, "follower", presenter.url)
    try:
        presenter.wait_for_function("archipel.state().participants.length === 2", timeout=30_000)
        assert presenter.locator("#control-status").inner_text() == "You have control"
        assert follower.locator("#control-status").inner_text() == "Following presenter"
        before = _bounds(follower)

        box = presenter.locator("#viewer").bounding_box()
        assert box is not None
        presenter.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.4)
        for _ in range(3):  # zoom in about the pointer, one wheel step at a time (quick ones may merge)
            zoom = presenter.evaluate("archipel.imageViewport().zoom")
            presenter.mouse.wheel(0, -240)
            presenter.wait_for_function(
                "z => archipel.imageViewport().zoom > z * 1.1 && archipel.isSettled()",
                arg=zoom,
                timeout=30_000,
            )
        _drag(presenter, -180, 120)
        _tracks(follower, presenter)
        after = _bounds(follower)
        assert after[2] < before[2] * 0.75, f"the follower did not zoom in: {before} -> {after}"

        # The presenter's pointer appears on the follower's screen, where it points on the slide.
        presenter.mouse.move(box["x"] + 400, box["y"] + 300)
        follower.wait_for_selector("#pointer:not([hidden])", timeout=30_000)
        assert follower.locator("#pointer .who").inner_text() == "presenter"
        # Same region, same window size: the ring sits where the presenter's mouse is (to within 2 px).
        follower.wait_for_function(
            """() => {
                const ring = document.querySelector('#pointer');
                const near = (value, want) => Math.abs(parseFloat(value) - want) <= 2;
                return near(ring.style.left, 400) && near(ring.style.top, 300);
            }""",
            timeout=30_000,
        )

        # A follower cannot drive: their mouse does nothing to either view.
        held = _bounds(presenter)
        _drag(follower, 200, 0)
        assert _settled_bounds(presenter) == held

        presenter.select_option("#handover-to", "follower")
        presenter.click("#handover")
        follower.wait_for_function(
            "document.querySelector('#control-status').textContent === 'You have control'", timeout=30_000
        )
        presenter.wait_for_function(  # the presenter's page hears of the handover a moment after the follower's
            "document.querySelector('#control-status').textContent === 'Following follower'", timeout=30_000
        )
        _drag(follower, 250, -100)
        _tracks(presenter, follower)
        presenter.click("#take-control")
        presenter.wait_for_function("archipel.inControl()", timeout=30_000)
    finally:
        p_ctx.close()
        f_ctx.close()
