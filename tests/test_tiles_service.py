"""The tile service: Deep Zoom and IIIF Image 3 on slides served from their source, converted with passthrough
(JPEG) and with re-encoding (JPEG 2000), the switch from source to pyramid while viewing, the fast path, ETags and
caching, and the access check (cached per session, audited at open)."""

from __future__ import annotations

import hashlib
import io
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openslide
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from archipel.app import create_app
from archipel.platform.audit import AuditEvent
from archipel.platform.authn import Principal, create_user
from archipel.platform.db import utcnow
from archipel.platform.http import current_principal
from archipel.platform.runtime import Runtime
from archipel.tiles import api as tiles_api
from archipel.tiles.cache import ByteLRU, CachedTile
from archipel.tiles.pyramid import Codec
from archipel.wsi.intake import SlideMetadata
from archipel.wsi.models import READY, Slide
from archipel.wsi.slides import hash_file, register_slide
from archipel.wsi.sources import open_slide
from archipel.wsi.synthetic import SvsCompression, write_svs
from archipel.wsi.tasks import convert_job
from tests.access_support import ensure_master

#: The tile service reads the index as any route does; SQLite is enough here (the policy is tested on both).
sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

SITE, OTHER = "SITE-A", "SITE-B"
PATIENT_ID = "TILE0001"
WIDTH, HEIGHT, TILE = 1000, 700, 240


@dataclass
class Lab:
    runtime: Runtime
    folder: Path

    def client(self, principal: Principal) -> TestClient:
        app = create_app()
        app.dependency_overrides[current_principal] = lambda: principal
        return TestClient(app)

    def upload(self, name: str, compression: SvsCompression) -> tuple[str, str, Path]:
        """A synthetic SVS registered as an upload (not converted yet): (slide id, job id, file)."""
        path = write_svs(self.folder / name, WIDTH, HEIGHT, tile=TILE, compression=compression, seed=3)
        spool = self.folder / f"{name}.spool"
        spool.write_bytes(path.read_bytes())
        sha, size = hash_file(spool)
        meta = SlideMetadata(patient_id=PATIENT_ID, issuer=SITE, accession="TACC1", stain="HE")
        reg = register_slide(
            self.runtime,
            spool,
            sha,
            size,
            meta,
            filename=name,
            origin="upload",
            created_by="patho",
            role="pathologist",
        )
        return reg.slide_id, reg.job_id, path


def pathologist(site: str = SITE, session: str = "s1") -> Principal:
    return Principal(
        "patho" if site == SITE else "patho-b", "pathologist", site, session=session, auth_time=utcnow()
    )


@pytest.fixture
def lab(runtime: Runtime, tmp_path: Path) -> Iterator[Lab]:
    with runtime.db.write() as s:
        create_user(s, "patho", "pathologist", site=SITE)
    ensure_master(runtime.db, SITE, PATIENT_ID, "TILETEST", "19700101")
    yield Lab(runtime, tmp_path)
    tiles_api.service(runtime).views.clear()


def _dzi(client: TestClient, slide_id: str) -> tuple[int, int, int]:
    r = client.get(f"/tiles/{slide_id}.dzi")
    assert r.status_code == 200, r.text
    root = ET.fromstring(r.text)
    size = root.find("{http://schemas.microsoft.com/deepzoom/2008}Size")
    assert root.get("Overlap") == "0" and root.get("Format") == "jpeg" and size is not None
    return int(root.get("TileSize", 0)), int(size.get("Width", 0)), int(size.get("Height", 0))


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(np.int16)


def _openslide_region(path: Path, x: int, y: int, w: int, h: int) -> np.ndarray:
    with openslide.OpenSlide(str(path)) as osr:
        return np.asarray(osr.read_region((x, y), 0, (w, h)).convert("RGB")).astype(np.int16)


def _convert(lab: Lab, slide_id: str, job_id: str) -> None:
    convert_job(job_id)
    with lab.runtime.db.sessions() as s:
        slide = s.get(Slide, slide_id)
        assert slide is not None and slide.status == READY, slide.error if slide else "no slide"


@sqlite_only
def test_a_jpeg_slide_is_viewable_from_its_source_then_switches_to_its_dicom_wsi_with_the_same_tiles(
    lab: Lab,
) -> None:
    with lab.client(pathologist()) as c:
        slide_id, job_id, path = lab.upload("he.svs", SvsCompression.JPEG)
        uploaded = time.perf_counter()  # the upload is complete: the 202 would leave now
        # Served from the source right after the upload: same geometry as the source's level 0.
        first = c.get(f"/tiles/{slide_id}_files/10/0_0.jpeg")
        first_tile_seconds = time.perf_counter() - uploaded
        assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
        assert _dzi(c, slide_id) == (TILE, WIDTH, HEIGHT)
        assert first.headers["cache-control"] == "private, no-cache"
        with open_slide(path) as source:
            stored = source.read_raw_tile(0, 1, 1)
            assert stored is not None and source.levels[0].codec is Codec.JPEG
        before = c.get(f"/tiles/{slide_id}_files/10/1_1.jpeg")
        assert before.headers["x-tile-source"] == "stored" and before.content == stored.data
        etag = before.headers["etag"]
        assert (
            c.get(f"/tiles/{slide_id}_files/10/1_1.jpeg", headers={"If-None-Match": etag}).status_code == 304
        )
        # An edge tile is cropped to the image, as Deep Zoom wants; a level with no stored twin is rendered.
        edge = c.get(f"/tiles/{slide_id}_files/10/4_2.jpeg")
        assert Image.open(io.BytesIO(edge.content)).size == (WIDTH - 4 * TILE, HEIGHT - 2 * TILE)
        low = c.get(f"/tiles/{slide_id}_files/9/0_0.jpeg")
        assert low.headers["x-tile-source"] == "encoded" and Image.open(io.BytesIO(low.content)).size == (
            240,
            240,
        )
        before_low = _pixels(c.get(f"/tiles/{slide_id}_files/7/0_0.jpeg").content)

        _convert(lab, slide_id, job_id)
        tiles_api.service(lab.runtime).views.recheck = 0  # do not wait the second the switch may take
        after = c.get(f"/tiles/{slide_id}_files/10/1_1.jpeg")
        assert after.status_code == 200 and after.headers["etag"] != etag
        assert after.content == before.content and after.headers["x-tile-source"] == "stored"
        assert after.headers["cache-control"] == "private, max-age=31536000, immutable"
        assert _dzi(c, slide_id) == (TILE, WIDTH, HEIGHT)
        # Every factor-2 level is now stored: level 10 passes through too, and matches what was rendered.
        low_after = c.get(f"/tiles/{slide_id}_files/9/0_0.jpeg")
        assert low_after.headers["x-tile-source"] == "stored"
        assert np.abs(_pixels(low_after.content) - _pixels(low.content)).mean() < 4
        after_low = _pixels(c.get(f"/tiles/{slide_id}_files/7/0_0.jpeg").content)
        assert before_low.shape == after_low.shape and np.abs(before_low - after_low).mean() < 4
        assert c.get(f"/tiles/{slide_id}_files/11/0_0.jpeg").status_code == 404
        assert c.get(f"/tiles/{slide_id}_files/10/5_0.jpeg").status_code == 404

        # IIIF: a region at full resolution is OpenSlide's read_region (JPEG tolerance), a tile request passes through.
        region = c.get(f"/iiif/{slide_id}/300,200,256,128/max/0/default.png")
        assert region.status_code == 200 and region.headers["content-type"] == "image/png"
        assert np.abs(_pixels(region.content) - _openslide_region(path, 300, 200, 256, 128)).mean() < 3
        tile = c.get(f"/iiif/{slide_id}/240,240,240,240/240,240/0/default.jpg")
        assert tile.content == stored.data and tile.headers["x-tile-source"] == "stored"
        assert (
            c.get(f"/iiif/{slide_id}/full/max/0/default.jpg", headers={"If-None-Match": "*"}).status_code
            == 304
        )

        # The DICOMweb frame of the converted level 0 is the stored tile, untouched.
        with lab.runtime.db.sessions() as s:
            slide = s.get(Slide, slide_id)
            assert slide is not None
            study, series = slide.study_uid, slide.series_uid
        listed = c.get(f"/dicom-web/studies/{study}/series/{series}/instances").json()
        level0 = next(i for i in listed if i["00200013"]["Value"][0] == 1)["00080018"]["Value"][0]
        frame = c.get(
            f"/dicom-web/studies/{study}/series/{series}/instances/{level0}/frames/{1 * 5 + 1 + 1}",
            headers={"Accept": 'multipart/related; type="image/jpeg"'},
        )
        assert frame.status_code == 200 and stored.data in frame.content
    assert first_tile_seconds < 1.0, f"first tile {first_tile_seconds:.2f} s after the upload"


@sqlite_only
def test_a_jpeg2000_slide_is_re_encoded_and_its_pixels_match_the_source(lab: Lab) -> None:
    slide_id, job_id, path = lab.upload("j2k.svs", SvsCompression.J2K_RGB)
    with lab.client(pathologist()) as c:
        from_source = c.get(f"/tiles/{slide_id}_files/10/1_1.jpeg")
        assert from_source.headers["x-tile-source"] == "encoded"
        expected = _openslide_region(path, TILE, TILE, TILE, TILE)
        assert np.abs(_pixels(from_source.content) - expected).mean() < 4
        _convert(lab, slide_id, job_id)
        tiles_api.service(lab.runtime).views.recheck = 0
        assert _dzi(c, slide_id) == (TILE, WIDTH, HEIGHT)
        converted = c.get(f"/tiles/{slide_id}_files/10/1_1.jpeg")
        assert converted.headers["cache-control"].endswith("immutable")
        assert np.abs(_pixels(converted.content) - expected).mean() < 4
        region = c.get(f"/iiif/{slide_id}/100,50,300,200/150,/0/default.png")
        assert region.status_code == 200 and Image.open(io.BytesIO(region.content)).size == (150, 100)
        half = np.asarray(
            Image.fromarray(_openslide_region(path, 100, 50, 300, 200).astype(np.uint8)).reduce(2)
        )
        assert np.abs(_pixels(region.content) - half.astype(np.int16)).mean() < 4


@sqlite_only
def test_iiif_info_and_requests_follow_the_image_api_3(lab: Lab) -> None:
    slide_id, _, _ = lab.upload("info.svs", SvsCompression.JPEG)
    with lab.client(pathologist()) as c:
        info = c.get(f"/iiif/{slide_id}/info.json")
        assert info.status_code == 200
        body = info.json()
        assert (
            body["@context"] == "http://iiif.io/api/image/3/context.json" and body["type"] == "ImageService3"
        )
        assert body["protocol"] == "http://iiif.io/api/image" and body["profile"] == "level1"
        assert body["id"].endswith(f"/iiif/{slide_id}") and (body["width"], body["height"]) == (WIDTH, HEIGHT)
        assert body["tiles"][0]["width"] == TILE and body["tiles"][0]["scaleFactors"][:3] == [1, 2, 4]
        assert body["sizes"] and all(s["width"] <= WIDTH for s in body["sizes"])
        ok = {
            "full/max/0/default.jpg": (WIDTH, HEIGHT),
            "square/100,/0/color.jpg": (100, 100),
            "pct:10,10,50,50/pct:50/0/gray.png": (250, 175),
            "0,0,500,500/!100,50/0/default.jpg": (50, 50),
            "900,600,400,400/max/0/default.png": (100, 100),
            "0,0,100,100/^200,/0/default.jpg": (200, 200),
        }
        for path, size in ok.items():
            r = c.get(f"/iiif/{slide_id}/{path}")
            assert r.status_code == 200, (path, r.text)
            assert Image.open(io.BytesIO(r.content)).size == size, path
        bad = [
            "0,0,0,10/max/0/default.jpg",
            "2000,0,10,10/max/0/default.jpg",
            "a,b,c,d/max/0/default.jpg",
            "full/0,/0/default.jpg",
            "full/2000,/0/default.jpg",
            "full/max/abc/default.jpg",
            "full/max/0/fancy.jpg",
            "full/max/0/default.bmp",
            "full/max/0/default",
        ]
        for path in bad:
            r = c.get(f"/iiif/{slide_id}/{path}")
            assert r.status_code == 400 and r.json()["detail"], path
        for path in (
            "full/max/90/default.jpg",
            "full/max/!0/default.jpg",
            "full/max/0/bitonal.jpg",
            "full/max/0/default.webp",
        ):
            assert c.get(f"/iiif/{slide_id}/{path}").status_code == 501, path
        assert c.get("/iiif/nosuchslide/info.json").status_code == 404


@sqlite_only
def test_a_pathologist_of_another_site_is_refused_and_only_the_open_is_audited(lab: Lab) -> None:
    slide_id, _, _ = lab.upload("audit.svs", SvsCompression.JPEG)

    def events(outcome: str) -> int:
        with lab.runtime.db.sessions() as s:
            rows = (
                s.execute(select(AuditEvent).where(AuditEvent.object == f"slide:{slide_id}")).scalars().all()
            )
            return sum(1 for e in rows if e.outcome == outcome)

    with lab.client(pathologist(OTHER)) as c:
        assert c.get(f"/tiles/{slide_id}.dzi").status_code == 403
        assert c.get(f"/iiif/{slide_id}/info.json").status_code == 403
        for _ in range(3):
            assert c.get(f"/tiles/{slide_id}_files/9/0_0.jpeg").status_code == 403
            assert c.get(f"/iiif/{slide_id}/full/100,/0/default.jpg").status_code == 403
    # Two refused opens, one refused tile decision (then cached): three denials, no success.
    assert (events("denied"), events("success")) == (3, 0)
    with lab.client(pathologist()) as c:
        _dzi(c, slide_id)
        for col in range(4):
            assert c.get(f"/tiles/{slide_id}_files/10/{col}_0.jpeg").status_code == 200
    assert events("success") == 1


def test_the_tile_cache_stays_under_its_byte_bound() -> None:
    cache = ByteLRU(10_000)
    for i in range(50):
        cache.put(i, CachedTile(hashlib.sha256(str(i).encode()).digest() * 50, "image/jpeg"))  # 1600 bytes
        assert cache.bytes <= 10_000
    assert len(cache) == 6 and cache.get(49) is not None and cache.get(0) is None
    cache.put("huge", CachedTile(b"x" * 20_000, "image/jpeg"))
    assert cache.get("huge") is None and cache.bytes <= 10_000


@sqlite_only
def test_a_ycbcr_jpeg2000_slide_keeps_its_colours_once_converted(lab: Lab) -> None:
    slide_id, job_id, path = lab.upload("j2k-ycbcr.svs", SvsCompression.J2K_YCBCR)
    expected = _openslide_region(path, TILE, TILE, TILE, TILE)
    with lab.client(pathologist()) as c:
        assert np.abs(_pixels(c.get(f"/tiles/{slide_id}_files/10/1_1.jpeg").content) - expected).mean() < 4
        _convert(lab, slide_id, job_id)
        tiles_api.service(lab.runtime).views.recheck = 0
        assert np.abs(_pixels(c.get(f"/tiles/{slide_id}_files/10/1_1.jpeg").content) - expected).mean() < 4
