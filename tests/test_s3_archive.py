"""The platform on an S3 blob store (moto's S3 server, decision 0038): DICOM stored by STOW comes back unchanged by
WADO and its frames by ranged GETs; a slide uploaded to S3 is viewable from its source, then from its pyramid,
and its OME-Zarr store lives in the bucket and opens with zarr through fsspec."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydicom.encaps import generate_frames

from archipel.app import create_app
from archipel.platform import settings as settings_mod
from archipel.platform.authn import Principal, create_user
from archipel.platform.db import forget_databases, utcnow
from archipel.platform.http import current_principal
from archipel.platform.jobs import reset_celery
from archipel.platform.runtime import Runtime, get_runtime, reset_runtime
from archipel.platform.storage_s3 import S3BlobStore
from archipel.radiology.samples import SyntheticPatient, jpeg_multiframe, to_bytes
from archipel.tiles import api as tiles_api
from archipel.wsi.intake import SlideMetadata
from archipel.wsi.models import READY, Slide
from archipel.wsi.slides import hash_file, register_slide
from archipel.wsi.sources import open_slide
from archipel.wsi.synthetic import SvsCompression, write_svs
from archipel.wsi.tasks import convert_job
from archipel.wsi.zarr_store import open_zarr, publish_zarr
from tests.access_support import ensure_master
from tests.dicomweb_messages import read_multipart, sha256, stow_body
from tests.dicomweb_study import OHIF_FRAMES_ACCEPT

if TYPE_CHECKING:
    from tests.s3_support import RequestLog, S3Bucket

pytest_plugins = ["tests.s3_support"]

#: What is tested here is the store under the routes; the index is the same on both databases.
sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

SITE = "SITE-A"
WIDTH, HEIGHT, TILE = 1000, 700, 240


@dataclass
class S3Platform:
    runtime: Runtime
    bucket: S3Bucket
    folder: Path

    def client(self, principal: Principal) -> TestClient:
        app = create_app()
        app.dependency_overrides[current_principal] = lambda: principal
        return TestClient(app)


@pytest.fixture
def s3_platform(db_url: str, tmp_path: Path, s3_bucket: S3Bucket) -> Iterator[S3Platform]:
    """A runtime whose archive blobs and slide sources are in the test's bucket."""
    settings_mod.configure(
        data_dir=tmp_path / "data",
        database_url=db_url,
        blob_url=s3_bucket.url("blobs"),
        wsi_source_url=s3_bucket.url("slide-sources"),
        s3_endpoint_url=s3_bucket.endpoint,
        s3_region="us-east-1",
    )
    reset_runtime()
    reset_celery()
    rt = get_runtime()
    assert isinstance(rt.blobs, S3BlobStore) or hasattr(rt.blobs, "hot")
    try:
        yield S3Platform(rt, s3_bucket, tmp_path)
    finally:
        tiles_api.service(rt).views.clear()
        reset_runtime()
        forget_databases()


def radiologist() -> Principal:
    return Principal("dr-s3", "radiologist", SITE, auth_time=utcnow(), method="password+totp")


def pathologist() -> Principal:
    return Principal("patho-s3", "pathologist", SITE, session="s1", auth_time=utcnow())


@sqlite_only
def test_an_instance_stored_by_stow_on_s3_comes_back_byte_identical_and_its_frames_by_range(
    s3_platform: S3Platform, s3_request_log: RequestLog
) -> None:
    patient = SyntheticPatient(
        patient_id=f"S3-{uuid.uuid4().hex[:8]}",
        name="TESTPATIENT^Objet",
        birth_date="19700101",
        sex="F",
        issuer=SITE,
    )
    ds = jpeg_multiframe(patient, frames=3, size=64)
    data = to_bytes(ds)
    with s3_platform.client(radiologist()) as c:
        headers = {"Content-Type": 'multipart/related; type="application/dicom"; boundary=s3test'}
        r = c.post("/dicom-web/studies", content=stow_body([data], "s3test"), headers=headers)
        assert r.status_code == 200, r.text
        assert [k for k in s3_platform.bucket.object_keys("blobs/objects/")] == [
            f"blobs/objects/{sha256(data)}"
        ]
        base = f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
        [(_, content)] = read_multipart(
            c.get(base, headers={"Accept": 'multipart/related; type="application/dicom"'})
        )
        assert content == data
        with s3_request_log.recording():
            r = c.get(f"{base}/frames/2", headers={"Accept": OHIF_FRAMES_ACCEPT})
        [(_, frame)] = read_multipart(r)
        assert frame == list(generate_frames(ds.PixelData, number_of_frames=3))[1]
    gets = [e for e in s3_request_log.requests(s3_platform.bucket.name) if e["method"] == "GET"]
    assert gets, "the frame was read from the bucket"
    assert all("range" in {k.lower() for k in e["headers"]} for e in gets), "every GET of the frame is ranged"


def _register(platform: S3Platform, name: str) -> tuple[str, str, Path]:
    path = write_svs(
        platform.folder / name, WIDTH, HEIGHT, tile=TILE, compression=SvsCompression.JPEG, seed=3
    )
    spool = platform.folder / f"{name}.spool"
    spool.write_bytes(path.read_bytes())
    sha, size = hash_file(spool)
    meta = SlideMetadata(patient_id="S3SLIDE1", issuer=SITE, accession="S3ACC1", stain="HE")
    reg = register_slide(
        platform.runtime,
        spool,
        sha,
        size,
        meta,
        filename=name,
        origin="upload",
        created_by="patho-s3",
        role="pathologist",
    )
    return reg.slide_id, reg.job_id, path


@sqlite_only
def test_a_slide_on_s3_is_viewable_from_its_source_then_from_its_pyramid_whose_zarr_is_in_the_bucket(
    s3_platform: S3Platform,
) -> None:
    rt = s3_platform.runtime
    with rt.db.write() as s:
        create_user(s, "patho-s3", "pathologist", site=SITE)
    ensure_master(rt.db, SITE, "S3SLIDE1", "SLIDETEST", "19700101")
    slide_id, job_id, path = _register(s3_platform, "he.svs")
    sha, _ = hash_file(path)
    assert s3_platform.bucket.object_keys("slide-sources/") == [f"slide-sources/objects/{sha}"]
    with open_slide(path) as source:
        stored = source.read_raw_tile(0, 1, 1)
    assert stored is not None
    with s3_platform.client(pathologist()) as c:
        before = c.get(f"/tiles/{slide_id}_files/10/1_1.jpeg")
        assert before.status_code == 200 and before.content == stored.data
        convert_job(job_id)
        with rt.db.sessions() as s:
            slide = s.get(Slide, slide_id)
            assert slide is not None and slide.status == READY, slide.error if slide else "no slide"
            zarr_path = slide.zarr_path
        after = c.get(f"/tiles/{slide_id}_files/10/1_1.jpeg")
        assert after.status_code == 200 and after.headers["x-tile-source"] == "stored"
        assert after.content == stored.data  # level 0 passed through into the DICOM WSI held in the bucket
    assert zarr_path == s3_platform.bucket.url(f"blobs/zarr/{slide_id}.zarr")
    keys = s3_platform.bucket.object_keys(f"blobs/zarr/{slide_id}.zarr/")
    assert f"blobs/zarr/{slide_id}.zarr/.zattrs" in keys and f"blobs/zarr/{slide_id}.zarr/0/.zarray" in keys
    assert not (rt.settings.data_dir / "zarr").exists()
    # The pyramid's tiles were read from the instances in the bucket by range, not from local copies of them.
    assert not (rt.settings.data_dir / "tile-views" / "series").exists()
    root = open_zarr(rt, zarr_path)
    assert root["0"].shape == (3, HEIGHT, WIDTH)
    with open_slide(path) as source:
        expected = source.read_tile(0, 0, 0)
    assert np.array_equal(np.asarray(root["0"][:, :TILE, :TILE]).transpose(1, 2, 0), expected)


def _tiny_zarr(folder: Path, chunks: list[tuple[int, int]]) -> Path:
    """A one-level zarr v2 store of 2 x 2 chunks with only ``chunks`` written."""
    import zarr

    root = zarr.open_group(store=str(folder), mode="w", zarr_format=2)
    array = root.create_array(name="0", shape=(4, 4), chunks=(2, 2), dtype="uint8", fill_value=255)
    for row, col in chunks:
        array[row * 2 : row * 2 + 2, col * 2 : col * 2 + 2] = 7
    return folder


@sqlite_only
def test_a_zarr_published_again_to_s3_replaces_the_earlier_copy_whole(s3_platform: S3Platform) -> None:
    rt = s3_platform.runtime
    first = publish_zarr(rt, "slide-1", _tiny_zarr(s3_platform.folder / "a.zarr", [(0, 0), (1, 1)]))
    assert not (s3_platform.folder / "a.zarr").exists()  # the local build is consumed
    assert "blobs/zarr/slide-1.zarr/0/1.1" in s3_platform.bucket.object_keys("blobs/zarr/")
    # A conversion run again (a worker died after publishing) publishes a store without the chunk (1, 1).
    again = publish_zarr(rt, "slide-1", _tiny_zarr(s3_platform.folder / "b.zarr", [(0, 0)]))
    assert again == first == s3_platform.bucket.url("blobs/zarr/slide-1.zarr")
    assert "blobs/zarr/slide-1.zarr/0/1.1" not in s3_platform.bucket.object_keys("blobs/zarr/")
    level = np.asarray(open_zarr(rt, again)["0"][:])
    assert (level[:2, :2] == 7).all() and (level[2:, 2:] == 255).all()
