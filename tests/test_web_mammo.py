"""The screening reading screen in headless Chromium against a real ``archipel serve``: the L2 reader of the
French programme logs in, claims the first case of the worklist and finds the four views hung in their places
(right breast on the left of the screen, left breast mirrored so that the chest walls face each other, the
woman's prior beside them); marks a finding on the left CC view, sees the server refuse a positive breast
without a finding with its reason, submits, and the read is recorded with the finding and its image
coordinates; the reading tools act on the views; the next case, preloaded while the first was read, opens in
under a second. A blind second reader of the European protocol sees the server's refusal of the first read.
The dashboard shows the programme's figures, trends, the reader against the programme and the CSV export.
A woman with two earlier mammograms and, beyond her four views, an exaggerated CC and a tomosynthesis stack: the
reader chooses the older prior from the list (keyboard), opens the stack from the strip of extra views in its own
viewport and scrolls its frames with the wheel and the arrow keys (each frame has its own grey level).

Each synthetic view is a flat grey "breast" of its own level (R-CC 300, L-CC 500, R-MLO 700, L-MLO 900 on a
0-1200 window) on a dim background, with a bright chest-wall band along the stored right edge (the images say so
in PatientOrientation: columns run toward posterior). On the screenshot each view cell must show its view's grey
level (within 15 of 255), and the band on the side facing the middle of the screen.
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
from playwright.sync_api import Browser, BrowserContext, Page

from archipel.app import WEB_DIST
from archipel.platform.db import Database
from archipel.radiology.samples import SyntheticPatient, mammo_study, to_bytes
from tests.access_support import ensure_master
from tests.browser import chromium
from tests.dicomweb_messages import stow_body
from tests.mammo_images import extra_view, tomosynthesis
from tests.support import ArchipelServer

pytestmark = pytest.mark.e2e

CENTRE, COORDINATION = "CENTRE-A", "CRCDC"
ROWS, COLS, BAND = 320, 256, 32
BACKGROUND, CHEST_WALL = 120, 1150
LEVEL = {"R-CC": 300, "L-CC": 500, "R-MLO": 700, "L-MLO": 900}
EXAM, PRIOR, OLDER_PRIOR = "20261125", "20241120", "20221118"
#: The tomosynthesis stack's frames: frame n (0-based) is a flat grey of FRAME_LEVELS[n].
FRAME_LEVELS = [300 + 100 * n for n in range(8)]
XCCL_LEVEL = 1100
TOLERANCE = 15.0


def displayed(value: float) -> float:
    """The grey level of a stored value on the 0-1200 linear window."""
    return 255 * min(max(value / 1200, 0), 1)


def paint(images: list[Any]) -> None:
    """Give each view its own flat level and a chest-wall band at the stored right edge."""
    for ds in images:
        view = f"{ds.ImageLaterality}-{ds.ViewPosition}"
        img = np.full((ROWS, COLS), BACKGROUND, dtype=np.uint16)
        img[16 : ROWS - 16, 24 : COLS - BAND] = LEVEL[view]
        img[:, COLS - BAND :] = CHEST_WALL
        ds.Rows, ds.Columns = ROWS, COLS
        ds.PixelData = img.tobytes()
        ds.PatientOrientation = ["P", "F" if ds.ViewPosition == "MLO" else ds.ImageLaterality]
        ds.WindowCenter, ds.WindowWidth = "600", "1200"


@dataclass
class Programme:
    srv: ArchipelServer
    episodes: list[int]
    blind_task: int
    studies: list[list[Any]]
    browser: Browser
    #: The case with two priors and extra views: its task, episode, the priors' R-CC SOP UIDs (latest first),
    #: and its extra views (the exaggerated CC, the tomosynthesis stack).
    extras_task: int = 0
    extras_episode: int = 0
    prior_sops: tuple[str, str] = ("", "")
    prior_uids: tuple[str, str] = ("", "")
    extras: tuple[Any, Any] | None = None

    def api(self, user: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(
            method, self.srv.url + path, headers=self.srv.headers(user), timeout=60, **kwargs
        )


def _stow(p: ArchipelServer, images: list[Any]) -> None:
    boundary = f"b-{uuid.uuid4().hex}"
    r = httpx.post(
        p.url + "/dicom-web/studies",
        content=stow_body([to_bytes(ds) for ds in images], boundary),
        headers={
            **p.headers("radio-centre"),
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        },
        timeout=60,
    )
    assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def programme(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Programme]:
    """The French programme with two women screened on one day (the first with a prior mammogram), each with
    her L1 form read normal, so that both wait for L2."""
    if not (WEB_DIST / "mammo-reading.html").exists():
        pytest.fail("the web front end is not built: run `make web`")
    root = tmp_path_factory.mktemp("web-mammo")
    srv = ArchipelServer(root / "data")
    srv.data.mkdir(parents=True)
    srv.add_user("admin-depistage", "admin")
    srv.add_user("radio-centre", "radiologist", CENTRE)
    srv.add_user("lecteur-deux", "screening-reader", COORDINATION)
    srv.add_user("lecteur-trois", "screening-reader", COORDINATION)
    srv.start()
    try:
        admin = {"headers": srv.headers("admin-depistage"), "timeout": 30}
        r = httpx.post(
            srv.url + "/api/mammo/programmes", json={"code": "fr", "protocol": "fr-depistage"}, **admin
        )
        assert r.status_code == 201, r.text
        for reader, q in (("radio-centre", "l1"), ("lecteur-deux", "l2"), ("lecteur-deux", "coordinator")):
            r = httpx.post(
                srv.url + "/api/mammo/programmes/fr/readers",
                json={"reader": reader, "qualification": q},
                **admin,
            )
            assert r.status_code == 201, r.text
        db = Database(f"sqlite:///{(srv.data / 'index.sqlite').resolve()}")
        episodes, studies = [], []
        for n in (1, 2):
            woman = SyntheticPatient(f"MGW{n:03d}", f"TESTWEB^N{n}", "19600101", "F", issuer=CENTRE)
            ensure_master(db, CENTRE, woman.patient_id, f"WEBMAMMO{n}", "19600101")
            if n == 1:
                _stow(srv, mammo_study(woman, study_date=PRIOR, accession=f"PRIOR{n}", key=f"web-prior-{n}"))
            images = mammo_study(woman, study_date=EXAM, accession=f"EXAM{n}", key=f"web-exam-{n}")
            paint(images)
            _stow(srv, images)
            studies.append(images)
            form = {
                "programme": "fr", "issuer": CENTRE, "patient_id": woman.patient_id, "site": CENTRE,
                "round": "subsequent", "screen_date": f"{EXAM[:4]}-{EXAM[4:6]}-{EXAM[6:]}",
                "study_uid": str(images[0].StudyInstanceUID), "history": "no family history",
                "clinical_exam": "normal",
                "read": {"right": {"assessment": 1}, "left": {"assessment": 1}, "density": "b"},
            }  # fmt: skip
            r = httpx.post(srv.url + "/api/mammo/l1-forms", json=form, headers=srv.headers("radio-centre"))
            assert r.status_code == 201, r.text
            assert [t["role"] for t in r.json()["tasks"]] == ["l2"], r.json()
            episodes.append(int(r.json()["id"]))
        # A blinded programme's case: the other reader has made the first read, the second waits.
        r = httpx.post(
            srv.url + "/api/mammo/programmes", json={"code": "eu", "protocol": "eu-blinded"}, **admin
        )
        assert r.status_code == 201, r.text
        for reader in ("lecteur-deux", "lecteur-trois"):
            body = {"reader": reader, "qualification": "reader"}
            r = httpx.post(srv.url + "/api/mammo/programmes/eu/readers", json=body, **admin)
            assert r.status_code == 201, r.text
        woman = SyntheticPatient("MGW003", "TESTWEB^N3", "19600101", "F", issuer=CENTRE)
        ensure_master(db, CENTRE, woman.patient_id, "WEBMAMMO3", "19600101")
        body = {
            "programme": "eu", "issuer": CENTRE, "patient_id": woman.patient_id, "site": CENTRE,
            "round": "first", "screen_date": "2026-11-26",
        }  # fmt: skip
        r = httpx.post(srv.url + "/api/mammo/episodes", json=body, headers=srv.headers("radio-centre"))
        assert r.status_code == 201, r.text
        blind_episode = int(r.json()["id"])
        images = mammo_study(woman, study_date="20261126", accession="EXAM3", key="web-exam-3")
        paint(images)
        _stow(srv, images)
        tasks = httpx.get(
            f"{srv.url}/api/mammo/episodes/{blind_episode}", headers=srv.headers("radio-centre")
        )
        role_of = {t["role"]: t["id"] for t in tasks.json()["tasks"]}
        other = {"headers": srv.headers("lecteur-trois"), "timeout": 30}
        assert httpx.post(f"{srv.url}/api/mammo/tasks/{role_of['first']}/claim", **other).status_code == 200
        normal = {"right": {"assessment": 1}, "left": {"assessment": 1}, "density": "b"}
        r = httpx.post(f"{srv.url}/api/mammo/tasks/{role_of['first']}/reading", json=normal, **other)
        assert r.status_code == 201, r.text
        # A woman with two earlier mammograms, an exaggerated CC and a tomosynthesis stack beside her four views.
        woman = SyntheticPatient("MGW004", "TESTWEB^N4", "19600101", "F", issuer=CENTRE)
        ensure_master(db, CENTRE, woman.patient_id, "WEBMAMMO4", "19600101")
        priors = []
        for date, key in ((PRIOR, "web-prior-4"), (OLDER_PRIOR, "web-older-prior-4")):
            prior = mammo_study(woman, study_date=date, accession=f"P{date}", key=key)
            _stow(srv, prior)
            priors.append(prior)
        images = mammo_study(woman, study_date=EXAM, accession="EXAM4", key="web-exam-4")
        paint(images)
        r_cc = next(ds for ds in images if ds.ImageLaterality == "R" and ds.ViewPosition == "CC")
        xccl = extra_view(r_cc, "XCCL", level=XCCL_LEVEL)
        stack = tomosynthesis(images[1], "L", "CC", frames=len(FRAME_LEVELS), size=256, levels=FRAME_LEVELS)
        _stow(srv, [*images, xccl, stack])
        form = {
            "programme": "fr", "issuer": CENTRE, "patient_id": woman.patient_id, "site": CENTRE,
            "round": "subsequent", "screen_date": f"{EXAM[:4]}-{EXAM[4:6]}-{EXAM[6:]}",
            "study_uid": str(images[0].StudyInstanceUID),
            "read": {"right": {"assessment": 1}, "left": {"assessment": 2}, "density": "c"},
        }  # fmt: skip
        r = httpx.post(srv.url + "/api/mammo/l1-forms", json=form, headers=srv.headers("radio-centre"))
        assert r.status_code == 201, r.text
        assert r.json()["flag"] == "" and [t["role"] for t in r.json()["tasks"]] == ["l2"], r.json()
        extras_task, extras_episode = int(r.json()["tasks"][0]["id"]), int(r.json()["id"])
        db.dispose()
        with chromium() as browser:
            yield Programme(
                srv,
                episodes,
                role_of["second"],
                studies,
                browser,
                extras_task,
                extras_episode,
                tuple(
                    str(
                        next(
                            ds for ds in pr if ds.ViewPosition == "CC" and ds.ImageLaterality == "R"
                        ).SOPInstanceUID
                    )
                    for pr in priors
                ),  # type: ignore[arg-type]
                tuple(str(pr[0].StudyInstanceUID) for pr in priors),  # type: ignore[arg-type]
                (xccl, stack),
            )
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def reader(programme: Programme) -> Iterator[BrowserContext]:
    """A browser logged in as the L2 reader through the login page (one TOTP code for the module)."""
    ctx = programme.browser.new_context(viewport={"width": 1280, "height": 820}, device_scale_factor=1)
    page = ctx.new_page()
    url = programme.srv.url + "/app/mammo-reading.html"
    page.goto(url)
    page.wait_for_url("**/app/login.html?next=*")
    page.fill("#username", "lecteur-deux")
    page.fill("#password", programme.srv._passwords["lecteur-deux"])
    page.fill("#totp", programme.srv.totp_code("lecteur-deux"))
    page.click("#login-submit")
    page.wait_for_url(url)
    page.close()
    yield ctx
    ctx.close()


def open_page(ctx: BrowserContext, url: str, errors: list[str] | None = None) -> Page:
    page = ctx.new_page()
    if errors is not None:
        page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]", timeout=30_000)
    return page


def cell(shot: np.ndarray, page: Page, view: str) -> np.ndarray:
    box = page.locator(f'.view-cell[data-view="{view}"] .view-element').bounding_box()
    assert box is not None
    x, y = round(box["x"]), round(box["y"])
    return shot[y : y + int(box["height"]), x : x + int(box["width"])]


def image_box(grey: np.ndarray) -> tuple[int, int, int, int]:
    """Where the image lies in its cell: the extent of what is brighter than the black letterbox, along the
    middle rows and columns (the view's label sits in a corner)."""
    lit = grey > displayed(BACKGROUND) / 2
    h, w = lit.shape
    cols = np.nonzero(lit[h // 4 : 3 * h // 4].any(axis=0))[0]
    rows = np.nonzero(lit[:, w // 4 : 3 * w // 4].any(axis=1))[0]
    return int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1


def test_the_l2_reader_reads_a_hung_case_marks_a_finding_and_the_next_case_opens_at_once(
    programme: Programme, reader: BrowserContext
) -> None:
    p = programme
    errors: list[str] = []
    page = open_page(reader, p.srv.url + "/app/mammo-reading.html", errors)
    page.click("#claim-next")
    page.wait_for_selector(f"body[data-case='{p.episodes[0]}']", timeout=30_000)

    # The four views hang in their places, the prior's beside them.
    hung = page.evaluate("archipelMammo.hung()")
    sops = {f"{ds.ImageLaterality}-{ds.ViewPosition}": str(ds.SOPInstanceUID) for ds in p.studies[0]}
    assert {v: hung[v]["sop"] for v in LEVEL} == sops
    assert {f"prior:{v}" for v in LEVEL} <= set(hung)
    assert page.locator("#prior-title").inner_text().startswith("Prior 2024")
    shot = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("L")).astype(np.float32)
    boxes = {v: page.locator(f'.view-cell[data-view="{v}"]').bounding_box() for v in LEVEL}
    assert all(b is not None for b in boxes.values())
    xs = {v: b["x"] for v, b in boxes.items() if b}
    ys = {v: b["y"] for v, b in boxes.items() if b}
    assert xs["R-CC"] < xs["L-CC"] and xs["R-MLO"] < xs["L-MLO"]  # right breast on the left of the screen
    assert ys["R-CC"] < ys["R-MLO"] and ys["L-CC"] < ys["L-MLO"]  # CC above MLO
    for view, level in LEVEL.items():
        grey = cell(shot, page, view)
        left, top, right, bottom = image_box(grey)
        # Not stretched: the image keeps its aspect ratio in its cell.
        assert abs((right - left) / (bottom - top) - COLS / ROWS) < 0.03, (view, left, top, right, bottom)
        inner = grey[top + 4 : bottom - 4, left + 4 : right - 4]
        tissue = inner[(inner > displayed(BACKGROUND) + 15) & (inner < displayed(CHEST_WALL) - 15)]
        assert abs(float(np.median(tissue)) - displayed(level)) < TOLERANCE, view
        band_x = float(np.nonzero(inner > displayed(CHEST_WALL) - 15)[1].mean())
        middle = inner.shape[1] / 2
        # The chest wall faces the middle of the screen: right edge of a right view, left edge of a left view.
        if view.startswith("R"):
            assert band_x > middle * 1.6, (view, band_x, middle)
        else:
            assert band_x < middle * 0.4, (view, band_x, middle)

    def drag(view: str, dx: float, dy: float) -> None:
        box = page.locator(f'.view-cell[data-view="{view}"] .view-element').bounding_box()
        assert box is not None
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(x + dx / 2, y + dy / 2)
        page.mouse.move(x + dx, y + dy)
        page.mouse.up()

    # A positive left breast without a finding: the server's reason is shown, nothing is recorded.
    page.select_option("#left-assessment", "4")
    page.click("#submit-read")
    page.wait_for_function("document.querySelector('#read-error').textContent.length > 0")
    assert "left breast is positive (ACR 4) but has no finding" in page.locator("#read-error").inner_text()

    # Mark the finding on the left CC view at image point (100, 160): a mirrored view, so the point is placed
    # from the right edge of the image as it lies on the screen.
    page.click("[data-tool=mark]")
    shot = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("L")).astype(np.float32)
    grey = cell(shot, page, "L-CC")
    left, top, right, bottom = image_box(grey)
    scale = (right - left) / COLS
    box = page.locator('.view-cell[data-view="L-CC"] .view-element').bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + right - (100 + 0.5) * scale, box["y"] + top + (160 + 0.5) * scale)
    page.wait_for_selector("#findings li.finding")
    # The mark stays on its image point when the view is zoomed.
    (marked,) = page.evaluate("archipelMammo.readBody().findings[0].views")
    assert abs(marked["x"] - 100) < 3 and abs(marked["y"] - 160) < 3, marked
    where = f"archipelMammo.pagePoint('L-CC', {marked['x']}, {marked['y']})"
    before_zoom = page.evaluate(where)
    page.click("[data-tool=zoom]")
    drag("L-CC", 0, 60)
    page.wait_for_function(
        """() => {
            const ring = document.querySelector('.view-cell[data-view="L-CC"] circle.mark');
            const box = ring.ownerSVGElement.getBoundingClientRect();
            const [x, y] = WHERE;
            return Math.abs(box.left + Number(ring.getAttribute('cx')) - x) < 3
                && Math.abs(box.top + Number(ring.getAttribute('cy')) - y) < 3;
        }""".replace("WHERE", where),
        timeout=30_000,
    )
    assert page.evaluate(where) != before_zoom  # the view did zoom
    # The tools act on the views, and Reset gives the hanging back.
    state = lambda view: page.evaluate(f"archipelMammo.viewState('{view}')")  # noqa: E731
    hung_state = state("R-CC")
    assert (hung_state["lower"], hung_state["upper"]) == (0, 1200)
    page.click("[data-tool=window]")
    drag("R-CC", 60, 40)
    assert state("R-CC")["upper"] - state("R-CC")["lower"] != 1200
    page.click("[data-tool=zoom]")
    drag("R-MLO", 0, 80)
    assert state("R-MLO")["scale"] < state("L-MLO")["scale"]  # zoomed in
    page.click("[data-tool=pan]")
    before = page.evaluate("archipelMammo.pagePoint('L-MLO', 128, 160)")
    drag("L-MLO", 40, 25)
    after = page.evaluate("archipelMammo.pagePoint('L-MLO', 128, 160)")
    assert abs(after[0] - before[0] - 40) < 3 and abs(after[1] - before[1] - 25) < 3, (before, after)
    page.click("#reset")
    assert state("R-CC") == hung_state and state("R-MLO")["scale"] == state("L-MLO")["scale"]
    assert page.evaluate("archipelMammo.pagePoint('L-MLO', 128, 160)") == before
    assert page.evaluate(where) == before_zoom

    # The next case is prepared ahead, not claimed: its task stays open to every reader.
    page.wait_for_function("archipelMammo.preparing", timeout=15_000)
    assert page.evaluate("archipelMammo.nextReady()")
    ahead = p.api("radio-centre", "GET", f"/api/mammo/episodes/{p.episodes[1]}").json()
    assert [(t["status"], t["claimed_by"]) for t in ahead["tasks"] if t["role"] == "l2"] == [("open", "")]

    page.select_option("#findings li.finding .quadrant", "UOQ")
    page.select_option("#findings li.finding .suspicion", "4")
    page.fill("#further-tests", "ultrasound")
    page.click("#submit-read")
    page.wait_for_selector(f"body[data-submitted='{p.episodes[0]}']", timeout=15_000)

    # The read is recorded with its finding and the image coordinates on the left CC image.
    ep = p.api("lecteur-deux", "GET", f"/api/mammo/episodes/{p.episodes[0]}").json()
    l2 = next(r for r in ep["readings"] if r["role"] == "l2")
    read = p.api("lecteur-deux", "GET", f"/api/mammo/episodes/{p.episodes[0]}/readings/{l2['id']}").json()
    assert read["reader"] == "lecteur-deux" and read["left"]["assessment"] == 4
    (finding,) = read["findings"]
    assert finding["type"] == "mass" and finding["laterality"] == "L" and finding["quadrant"] == "UOQ"
    (mark,) = finding["views"]
    assert mark["view"] == "L-CC" and mark["sop_uid"] == sops["L-CC"]
    assert abs(mark["x"] - 100) < 3 and abs(mark["y"] - 160) < 3, mark

    # The next case was prepared and fetched while the first was read: claimed as it opens, in under a second.
    page.wait_for_selector(f"body[data-case='{p.episodes[1]}']", timeout=15_000)
    opened = page.evaluate("archipelMammo.lastOpen")
    assert opened["episode"] == p.episodes[1] and opened["preloaded"], opened
    assert opened["ms"] < 1000, opened
    # The magnifier shows a magnified patch under the pointer while pressed.
    page.click("[data-tool=magnify]")
    mbox = page.locator('.view-cell[data-view="L-CC"] .view-element').bounding_box()
    assert mbox is not None
    page.mouse.move(mbox["x"] + 100, mbox["y"] + 100)
    page.mouse.down()
    page.wait_for_selector('.view-cell[data-view="L-CC"] .magnifyTool', state="attached")
    page.mouse.up()
    assert errors == []
    page.close()


def test_the_dashboard_shows_the_programmes_figures_trends_and_csv(
    programme: Programme, reader: BrowserContext
) -> None:
    p = programme
    # The second woman read normal by API and both decided (whatever the reading screen did before).
    second = next(
        t
        for t in p.api("lecteur-deux", "GET", "/api/mammo/worklist").json()
        if t["episode_id"] == p.episodes[1]
    )
    if not second["claimed"]:
        assert p.api("lecteur-deux", "POST", f"/api/mammo/tasks/{second['task_id']}/claim").status_code == 200
    normal = {"right": {"assessment": 1}, "left": {"assessment": 2}, "density": "b"}
    r = p.api("lecteur-deux", "POST", f"/api/mammo/tasks/{second['task_id']}/reading", json=normal)
    assert r.status_code == 201, r.text
    for episode in p.episodes:
        p.api("lecteur-deux", "POST", f"/api/mammo/episodes/{episode}/decision")
    figures = p.api("lecteur-deux", "GET", "/api/mammo/metrics?programme=fr").json()
    assert figures["screened"] >= 1

    page = open_page(reader, p.srv.url + "/app/mammo-dashboard.html?programme=fr")
    tile = lambda name: page.locator(f'.tile[data-metric="{name}"] .value').inner_text()  # noqa: E731
    assert tile("screened") == str(figures["screened"])
    assert tile("recall rate") == f"{figures['recall_rate'] * 100:.1f} %"
    assert tile("CTI rate") == f"{figures['cti_rate'] * 100:.1f} %"
    plots = page.locator("figure.plot").evaluate_all("fs => fs.map(f => f.dataset.plot)")
    assert "Recall rate" in plots and "Cancer detection rate" in plots and "Delays (median, days)" in plots
    assert any(name.startswith("Recall rate: lecteur-deux against the programme") for name in plots)
    # One quarter, one point per series on the trend.
    assert page.locator('figure[data-plot="CTI rate"] circle').count() == 1
    # The delays' trend has its three series, exam → file received first, each at the API's median.
    delays = page.locator('figure[data-plot="Delays (median, days)"] circle title')
    points = delays.evaluate_all("ts => ts.map(t => t.textContent)")
    medians = [figures["delays"][k]["median"] for k in ("exam_to_received_days", "exam_to_l2_days",
                                                        "received_to_result_days")]  # fmt: skip
    assert medians[0] is not None, figures["delays"]
    names = ["exam → received", "exam → L2", "received → result"]
    shown = [(n, f"{m:.1f} d") for n, m in zip(names, medians, strict=True) if m is not None]
    assert len(points) == len(shown), points
    for point, (name, value) in zip(points, shown, strict=True):
        assert point.startswith(f"{name} ") and point.endswith(f": {value}"), (point, name, value)
    assert page.locator("#readers tr").first.locator("td").first.inner_text() == "lecteur-deux"
    href = page.get_attribute("#csv", "href")
    assert href and "format=csv" in href
    csv_text = page.evaluate("href => fetch(href).then(r => r.text())", href)
    assert f",screened,{figures['screened']},,{figures['screened']},women," in csv_text
    page.close()


def test_the_blind_second_reader_sees_the_servers_refusal_of_the_first_read(
    programme: Programme, reader: BrowserContext
) -> None:
    p = programme
    page = open_page(reader, f"{p.srv.url}/app/mammo-reading.html?task={p.blind_task}")
    page.wait_for_selector("#other-reads .other-read.refused", timeout=20_000)
    refusal = page.locator("#other-reads .other-read.refused").inner_text()
    assert refusal.startswith("FIRST read:") and "hidden until both reads" in refusal, refusal
    assert not page.is_visible("#consensus-line")  # an L2 consensus is the French programme's
    page.close()


def test_the_reader_chooses_an_older_prior_and_scrolls_a_tomosynthesis_stack(
    programme: Programme, reader: BrowserContext
) -> None:
    p = programme
    assert p.extras is not None
    xccl, stack = p.extras
    errors: list[str] = []
    page = open_page(reader, f"{p.srv.url}/app/mammo-reading.html?task={p.extras_task}", errors)
    page.wait_for_selector(f"body[data-case='{p.extras_episode}']", timeout=30_000)
    # The four views hang the plain 2D images; the latest prior hangs beside them by default.
    hung = page.evaluate("archipelMammo.hung()")
    assert str(xccl.SOPInstanceUID) not in {h["sop"] for h in hung.values()}
    assert str(stack.SOPInstanceUID) not in {h["sop"] for h in hung.values()}
    assert hung["prior:R-CC"]["sop"] == p.prior_sops[0]
    assert page.locator("#prior-title").inner_text().startswith("Prior 2024")
    options = page.locator("#prior-select option").evaluate_all("os => os.map(o => [o.value, o.textContent])")
    assert [v for v, _ in options] == list(p.prior_uids) and options[1][1].startswith("2022-11-18"), options
    assert page.input_value("#prior-select") == p.prior_uids[0]

    # The older prior, chosen with the keyboard.
    page.focus("#prior-select")
    page.keyboard.press("ArrowDown")
    page.wait_for_selector(f"body[data-prior='{p.prior_uids[1]}']", timeout=30_000)
    assert page.evaluate("archipelMammo.hung()")["prior:R-CC"]["sop"] == p.prior_sops[1]
    assert page.locator("#prior-title").inner_text().startswith("Prior 2022")

    # The strip of extra views: the exaggerated CC and the stack, each opening in the extra viewport.
    buttons = page.locator("#extra-views button")
    assert buttons.all_inner_texts() == ["R XCCL", f"L CC tomosynthesis ({len(FRAME_LEVELS)} frames)"]
    page.click(f"#extra-views button[data-sop='{stack.SOPInstanceUID}']")
    page.wait_for_selector(f"body[data-extra='{stack.SOPInstanceUID}']", timeout=30_000)
    state = lambda: page.evaluate("archipelMammo.extraState()")  # noqa: E731
    assert state() == {"sop": str(stack.SOPInstanceUID), "frame": 0, "frames": 8, "tomo": True}

    def centre_grey() -> float:
        shot = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("L")).astype(np.float32)
        grey = cell(shot, page, "extra")
        h, w = grey.shape
        return float(np.median(grey[h // 2 - 10 : h // 2 + 10, w // 2 - 10 : w // 2 + 10]))

    def shows(frame: int, level: int) -> None:
        """The extra viewport is at ``frame`` and, once redrawn, shows ``level`` in its middle."""
        page.wait_for_function(
            f"() => {{ const s = archipelMammo.extraState(); return s !== null && s.frame === {frame}; }}",
            timeout=30_000,
        )
        deadline = time.monotonic() + 20
        grey = centre_grey()
        while abs(grey - displayed(level)) >= TOLERANCE and time.monotonic() < deadline:
            grey = centre_grey()  # the canvas is redrawn on a coming animation frame
        assert abs(grey - displayed(level)) < TOLERANCE, (frame, level, grey)

    shows(0, FRAME_LEVELS[0])
    # The mouse wheel over the stack moves one frame on; the arrow keys move on, and back.
    box = page.locator('.view-cell[data-view="extra"] .view-element').bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, 120)
    shows(1, FRAME_LEVELS[1])
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    shows(3, FRAME_LEVELS[3])
    page.keyboard.press("ArrowUp")
    shows(2, FRAME_LEVELS[2])
    assert "frame 3/8" in page.locator("#extra-label").inner_text()

    # The exaggerated CC opens in the same viewport; Escape closes it.
    page.click(f"#extra-views button[data-sop='{xccl.SOPInstanceUID}']")
    page.wait_for_selector(f"body[data-extra='{xccl.SOPInstanceUID}']", timeout=30_000)
    assert state() == {"sop": str(xccl.SOPInstanceUID), "frame": 0, "frames": 1, "tomo": False}
    shows(0, XCCL_LEVEL)
    page.keyboard.press("Escape")
    page.wait_for_function("() => archipelMammo.extraState() === null")
    assert not page.is_visible("#extra-view")
    assert errors == []
    page.close()
