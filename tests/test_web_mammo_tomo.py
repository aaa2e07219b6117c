"""A tomosynthesis-only screening exam on the reading screen, in headless Chromium against a real ``archipel
serve``: four Breast Tomosynthesis stacks (no 2D image) hang in the four views' places at their middle slice,
mirrored so that the chest walls face each other; the reader scrolls a stack with the mouse wheel and the arrow
keys (its label says the slice), marks a finding on it and submits; the server stores the mark with its view,
image coordinates and slice.

Frame n (0-based) of each view's stack is a flat grey of LEVEL[view] + STEP n on a 0-1200 window, with a bright
chest-wall band along its posterior edge; on the screenshot each cell must show its view's level for the slice
shown, and the band on the side facing the middle of the screen.
"""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import BrowserContext, Page

from archipel.app import WEB_DIST
from archipel.platform.db import Database
from archipel.radiology.samples import SyntheticPatient, mammo_study, to_bytes
from tests.access_support import ensure_master
from tests.browser import chromium
from tests.dicomweb_messages import stow_body
from tests.mammo_images import tomosynthesis_exam
from tests.support import ArchipelServer

pytestmark = pytest.mark.e2e

CENTRE = "CENTRE-T"
LEVEL = {"R-CC": 300, "L-CC": 500, "R-MLO": 700, "L-MLO": 900}
STEP, FRAMES, SIZE, CHEST_WALL = 20, 8, 256, 1150
TOLERANCE = 15.0


def displayed(value: float) -> float:
    """The grey level of a stored value on the 0-1200 linear window."""
    return 255 * min(max(value / 1200, 0), 1)


@dataclass
class Case:
    srv: ArchipelServer
    ctx: BrowserContext
    task: int
    episode: int
    sops: dict[str, str]

    def api(self, user: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(
            method, self.srv.url + path, headers=self.srv.headers(user), timeout=60, **kwargs
        )


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Case]:
    """A blinded programme's episode whose exam is four tomosynthesis stacks, and its first reader logged in."""
    if not (WEB_DIST / "mammo-reading.html").exists():
        pytest.fail("the web front end is not built: run `make web`")
    srv = ArchipelServer(tmp_path_factory.mktemp("web-mammo-tomo") / "data")
    srv.data.mkdir(parents=True)
    srv.add_user("admin-tomo", "admin")
    srv.add_user("radio-tomo", "radiologist", CENTRE)
    srv.add_user("lecteur-tomo", "screening-reader", "CRCDC-T")
    srv.add_user("lecteur-tomo-2", "screening-reader", "CRCDC-T")
    srv.start()
    try:
        admin = {"headers": srv.headers("admin-tomo"), "timeout": 30}
        r = httpx.post(
            srv.url + "/api/mammo/programmes", json={"code": "tomo", "protocol": "eu-blinded"}, **admin
        )
        assert r.status_code == 201, r.text
        for reader in ("lecteur-tomo", "lecteur-tomo-2"):
            body = {"reader": reader, "qualification": "reader"}
            r = httpx.post(srv.url + "/api/mammo/programmes/tomo/readers", json=body, **admin)
            assert r.status_code == 201, r.text
        woman = SyntheticPatient("MGT001", "TESTTOMO^N1", "19600101", "F", issuer=CENTRE)
        db = Database(f"sqlite:///{(srv.data / 'index.sqlite').resolve()}")
        ensure_master(db, CENTRE, woman.patient_id, "WEBTOMO1", "19600101")
        db.dispose()
        body = {"programme": "tomo", "issuer": CENTRE, "patient_id": woman.patient_id, "site": CENTRE,
                "round": "first", "screen_date": "2026-11-27"}  # fmt: skip
        r = httpx.post(srv.url + "/api/mammo/episodes", json=body, headers=srv.headers("radio-tomo"))
        assert r.status_code == 201, r.text
        episode = int(r.json()["id"])
        (like, *_) = mammo_study(woman, study_date="20261127", accession="TOMO1", key="web-tomo-1")
        levels = {view: [level + STEP * n for n in range(FRAMES)] for view, level in LEVEL.items()}
        stacks = tomosynthesis_exam(like, levels, size=SIZE, chest_wall=CHEST_WALL)
        boundary = f"b-{uuid.uuid4().hex}"
        r = httpx.post(
            srv.url + "/dicom-web/studies",
            content=stow_body([to_bytes(ds) for ds in stacks], boundary),
            headers={
                **srv.headers("radio-tomo"),
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            },
            timeout=60,
        )
        assert r.status_code == 200, r.text
        ep = httpx.get(f"{srv.url}/api/mammo/episodes/{episode}", headers=srv.headers("radio-tomo")).json()
        assert ep["status"] == "reading" and ep["flag"] == "", ep
        task = next(t["id"] for t in ep["tasks"] if t["role"] == "first")
        sops = dict(zip(LEVEL, (str(ds.SOPInstanceUID) for ds in stacks), strict=True))
        with chromium() as browser:
            ctx = browser.new_context(viewport={"width": 1280, "height": 820}, device_scale_factor=1)
            page = ctx.new_page()
            url = srv.url + "/app/mammo-reading.html"
            page.goto(url)
            page.wait_for_url("**/app/login.html?next=*")
            page.fill("#username", "lecteur-tomo")
            page.fill("#password", srv._passwords["lecteur-tomo"])
            page.fill("#totp", srv.totp_code("lecteur-tomo"))
            page.click("#login-submit")
            page.wait_for_url(url)
            page.close()
            yield Case(srv, ctx, task, episode, sops)
            ctx.close()
    finally:
        srv.stop()


def screenshot(page: Page) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("L")).astype(np.float32)


def cell(shot: np.ndarray, page: Page, view: str) -> np.ndarray:
    box = page.locator(f'.view-cell[data-view="{view}"] .view-element').bounding_box()
    assert box is not None
    x, y = round(box["x"]), round(box["y"])
    return shot[y : y + int(box["height"]), x : x + int(box["width"])]


def tissue(grey: np.ndarray) -> float:
    """The median grey of the cell's middle (away from the chest-wall band)."""
    h, w = grey.shape
    return float(np.median(grey[h // 2 - 10 : h // 2 + 10, w // 2 - 10 : w // 2 + 10]))


def test_a_tomosynthesis_only_exam_hangs_scrolls_and_takes_a_finding_with_its_slice(case: Case) -> None:
    c = case
    errors: list[str] = []
    page = c.ctx.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{c.srv.url}/app/mammo-reading.html?task={c.task}")
    page.wait_for_selector(f"body[data-case='{c.episode}']", timeout=60_000)
    assert page.locator("#screen-state").inner_text() == ""  # no view missing

    # Each view's stack hangs in its place, at its middle slice (4 of 8); none is left in the extra strip.
    hung = page.evaluate("archipelMammo.hung()")
    assert {v: hung[v]["sop"] for v in LEVEL} == c.sops
    assert all(hung[v]["tomo"] and (hung[v]["frame"], hung[v]["frames"]) == (4, FRAMES) for v in LEVEL), hung
    assert page.locator("#extra-views button").count() == 0
    assert "slice 4/8" in page.locator('.view-cell[data-view="L-CC"] .view-label').inner_text()
    boxes = {v: page.locator(f'.view-cell[data-view="{v}"]').bounding_box() for v in LEVEL}
    xs = {v: b["x"] for v, b in boxes.items() if b}
    ys = {v: b["y"] for v, b in boxes.items() if b}
    assert xs["R-CC"] < xs["L-CC"] and xs["R-MLO"] < xs["L-MLO"] and ys["R-CC"] < ys["R-MLO"]
    shot = screenshot(page)
    for view, level in LEVEL.items():
        grey = cell(shot, page, view)
        assert abs(tissue(grey) - displayed(level + 3 * STEP)) < TOLERANCE, (view, tissue(grey))
        h, w = grey.shape
        middle_rows = grey[h // 4 : 3 * h // 4]
        band_x = float(np.nonzero(middle_rows > displayed(CHEST_WALL) - 15)[1].mean())
        # The chest wall faces the middle of the screen: right side of a right view, left side of a left one.
        assert (band_x > w / 2) if view.startswith("R") else (band_x < w / 2), (view, band_x, w)

    def shows(view: str, frame: int) -> None:
        """``view`` is at slice ``frame`` (1-based) and, once redrawn, shows that slice's level."""
        page.wait_for_function(f"archipelMammo.hung()['{view}'].frame === {frame}", timeout=30_000)
        want = displayed(LEVEL[view] + (frame - 1) * STEP)
        deadline = time.monotonic() + 20
        grey = tissue(cell(screenshot(page), page, view))
        while abs(grey - want) >= TOLERANCE and time.monotonic() < deadline:
            grey = tissue(cell(screenshot(page), page, view))  # redrawn on a coming animation frame
        assert abs(grey - want) < TOLERANCE, (view, frame, grey, want)
        label = page.locator(f'.view-cell[data-view="{view}"] .view-label')
        page.wait_for_function(
            "([el, text]) => el.textContent.includes(text)",
            arg=[label.element_handle(), f"slice {frame}/8"],
            timeout=10_000,
        )

    # The wheel over the left CC stack moves it one slice on; the arrow keys move the stack under the pointer.
    box = page.locator('.view-cell[data-view="L-CC"] .view-element').bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, 120)
    shows("L-CC", 5)
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowUp")
    shows("L-CC", 3)
    assert page.evaluate("archipelMammo.hung()['R-CC'].frame") == 4  # the other stacks stay where they were

    # A finding marked on slice 3 of the left CC stack.
    page.select_option("#left-assessment", "4")
    page.click("[data-tool=mark]")
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_selector("#findings li.finding")
    (marked,) = page.evaluate("archipelMammo.readBody().findings[0].views")
    assert marked["view"] == "L-CC" and marked["sop_uid"] == c.sops["L-CC"] and marked["frame"] == 3, marked
    assert 0 <= marked["x"] <= SIZE and 0 <= marked["y"] <= SIZE, marked
    assert "L-CC slice 3" in page.locator("#findings li.finding .where").inner_text()
    # Scrolled to another slice, the mark is drawn dashed with its slice; back on its slice, in full.
    page.keyboard.press("ArrowDown")
    page.wait_for_selector('.view-cell[data-view="L-CC"] circle.mark.other-slice', timeout=30_000)
    page.keyboard.press("ArrowUp")
    page.wait_for_selector('.view-cell[data-view="L-CC"] circle.mark:not(.other-slice)', timeout=30_000)
    page.select_option("#findings li.finding .quadrant", "UOQ")
    page.click("#submit-read")
    page.wait_for_selector(f"body[data-submitted='{c.episode}']", timeout=30_000)

    # The server stored the mark with its view, image, coordinates and slice.
    ep = c.api("lecteur-tomo", "GET", f"/api/mammo/episodes/{c.episode}").json()
    mine = next(r for r in ep["readings"] if r["role"] == "first")
    read = c.api("lecteur-tomo", "GET", f"/api/mammo/episodes/{c.episode}/readings/{mine['id']}").json()
    (finding,) = read["findings"]
    assert finding["laterality"] == "L" and finding["quadrant"] == "UOQ"
    (mark,) = finding["views"]
    assert (mark["view"], mark["sop_uid"], mark["frame"]) == ("L-CC", c.sops["L-CC"], 3), mark
    assert abs(mark["x"] - marked["x"]) < 0.01 and abs(mark["y"] - marked["y"]) < 0.01
    assert errors == []
    page.close()
