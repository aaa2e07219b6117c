"""WADO-RS against a running server: instances as stored, metadata with bulk data, frames by range, rendering,
the access gate, and the requests OHIF v3 makes (rendering: test_wado_rendered.py)."""

from __future__ import annotations

import sqlite3
import uuid

import httpx
import numpy as np
import pytest
from pydicom.encaps import generate_frames
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian
from sqlalchemy import select

from archipel.platform.runtime import Runtime
from archipel.platform.storage import BlobStore
from archipel.radiology.archive import Archive
from archipel.radiology.dicomweb.frames import read_frame
from archipel.radiology.dicomweb.resources import StoredInstance, stored_instance
from archipel.radiology.models import Instance
from archipel.radiology.samples import SyntheticPatient, ct_series, jpeg_multiframe, to_bytes, uid
from tests.dicomweb_messages import read_multipart, sha256, stow
from tests.dicomweb_study import (
    EXPLICIT_LE,
    JPEG_BASELINE,
    OHIF_FRAMES_ACCEPT,
    StoredStudy,
    get,
    image,
    store_study,
    url,
)
from tests.support import ArchipelServer


@pytest.fixture(scope="module")
def study(server: ArchipelServer) -> StoredStudy:
    return store_study(server)


def audit_count(server: ArchipelServer, event_type: str) -> int:
    with sqlite3.connect(f"file:{server.data / 'index.sqlite'}?mode=ro", uri=True) as db:
        return int(
            db.execute("SELECT count(*) FROM audit_events WHERE event_type = ?", (event_type,)).fetchone()[0]
        )


# --- instances as stored ---------------------------------------------------------------------------------------


def test_a_study_is_returned_byte_identical_in_one_multipart_stream(
    server: ArchipelServer, study: StoredStudy
) -> None:
    r = get(server, f"{server.url}/dicom-web/studies/{study.study_uid}")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith('multipart/related; type="application/dicom"')
    parts = read_multipart(r)
    assert sorted(sha256(content) for _, content in parts) == sorted(
        sha256(to_bytes(d)) for d in study.everything
    )
    syntaxes = {h["content-type"] for h, _ in parts}
    assert syntaxes == {f"application/dicom; transfer-syntax={ts}" for ts in (EXPLICIT_LE, JPEG_BASELINE)}


def test_a_series_and_an_instance_are_returned_byte_identical(
    server: ArchipelServer, study: StoredStudy
) -> None:
    ct = study.ct
    series_url = f"{server.url}/dicom-web/studies/{study.study_uid}/series/{ct[0].SeriesInstanceUID}"
    parts = read_multipart(get(server, series_url))
    assert [sha256(c) for _, c in parts] == [sha256(to_bytes(d)) for d in ct]
    [(headers, content)] = read_multipart(get(server, url(server, study.jpeg)))
    assert sha256(content) == sha256(to_bytes(study.jpeg))
    assert headers["content-location"] == url(server, study.jpeg)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ('multipart/related; type="application/dicom"; transfer-syntax=*', 200),
        (f'multipart/related; type="application/dicom"; transfer-syntax={JPEG_BASELINE}', 200),
        (f'multipart/related; type="application/dicom"; transfer-syntax={EXPLICIT_LE}', 406),
        (f'multipart/related; type="application/dicom"; transfer-syntax={EXPLICIT_LE}, */*;q=0.1', 200),
        ("application/dicom+json", 406),
    ],
)
def test_a_transfer_syntax_other_than_the_stored_one_is_406(
    server: ArchipelServer, study: StoredStudy, accept: str, expected: int
) -> None:
    r = get(server, url(server, study.jpeg), accept)
    assert r.status_code == expected, r.text
    if expected == 406:
        assert JPEG_BASELINE in r.json()["detail"]


def test_unknown_or_misplaced_uids_are_404_with_a_reason(server: ArchipelServer, study: StoredStudy) -> None:
    ct, base = study.ct[0], f"{server.url}/dicom-web/studies"
    unknown = uid()
    cases = {
        f"{base}/{unknown}": f"no study {unknown}",
        f"{base}/{study.study_uid}/series/{unknown}": f"no series {unknown}",
        f"{base}/{study.study_uid}/series/{ct.SeriesInstanceUID}/instances/{unknown}": "no instance",
        # the JPEG instance exists, but not in the CT series
        f"{base}/{study.study_uid}/series/{ct.SeriesInstanceUID}/instances/{study.jpeg.SOPInstanceUID}": "no instance",
        f"{base}/{study.study_uid}/series/{ct.SeriesInstanceUID}/metadata".replace(
            study.study_uid, unknown
        ): "study",
    }
    other = SyntheticPatient(f"O{uuid.uuid4().hex[:8]}", "OTHER^Study", "19500101", "M", issuer="SITE-A")
    elsewhere = ct_series(other, 1, rows=16, cols=16)[0]
    assert stow(server, [elsewhere]).status_code == 200
    cases[f"{base}/{study.study_uid}/series/{elsewhere.SeriesInstanceUID}"] = "in study"
    for target, reason in cases.items():
        r = get(server, target)
        assert r.status_code == 404, target
        assert reason in r.json()["detail"]


def test_every_read_is_audited_once_and_refused_to_a_non_clinical_role(
    server: ArchipelServer, study: StoredStudy
) -> None:
    before = audit_count(server, "110103")
    assert get(server, f"{server.url}/dicom-web/studies/{study.study_uid}").status_code == 200
    assert audit_count(server, "110103") == before + 1
    denied = get(server, f"{server.url}/dicom-web/studies/{study.study_uid}/metadata", user="admin")
    assert denied.status_code == 403
    assert "may not read" in denied.json()["detail"]
    assert audit_count(server, "110103") == before + 2


def test_every_wado_route_needs_a_token(server: ArchipelServer, study: StoredStudy) -> None:
    ct = study.ct[0]
    for suffix in ("", "/metadata", "/frames/1", "/rendered", "/thumbnail", "/bulkdata/7FE00010"):
        r = httpx.get(url(server, ct, suffix))
        assert r.status_code == 401, suffix
        assert r.headers["www-authenticate"] == "Bearer"


# --- metadata and bulk data ------------------------------------------------------------------------------------


def test_metadata_replaces_bulk_data_with_uris_that_resolve(
    server: ArchipelServer, study: StoredStudy
) -> None:
    ct = study.ct[0]
    r = get(server, url(server, ct, "/metadata"), "application/dicom+json")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/dicom+json")
    [meta] = r.json()
    assert meta["00100010"]["Value"] == [{"Alphabetic": "WADO^Test"}]
    assert meta["00280010"]["Value"] == [64]
    assert "00020010" not in meta
    pixel_uri = meta["7FE00010"]["BulkDataURI"]
    assert pixel_uri == url(server, ct, "/bulkdata/7FE00010")
    assert meta["7FE00010"]["vr"] == "OW"
    private_uri = meta["00091010"]["BulkDataURI"]
    icon_uri = meta["00880200"]["Value"][0]["7FE00010"]["BulkDataURI"]
    assert icon_uri.endswith("/bulkdata/00880200/0/7FE00010")
    single = "application/octet-stream"
    assert get(server, pixel_uri, single).content == ct.PixelData
    assert get(server, private_uri, single).content == bytes(range(256)) * 8
    [(_, icon)] = read_multipart(get(server, icon_uri))
    assert icon == bytes(range(256)) * 4
    assert get(server, url(server, ct, "/bulkdata/00091011"), single).status_code == 404


def test_uris_follow_the_host_a_proxy_forwards(server: ArchipelServer, study: StoredStudy) -> None:
    headers = {
        **server.headers("radiologist"),
        "X-Forwarded-Host": "pacs.example",
        "X-Forwarded-Proto": "https",
    }
    [meta] = httpx.get(url(server, study.ct[1], "/metadata"), headers=headers).json()
    assert meta["7FE00010"]["BulkDataURI"].startswith("https://pacs.example/dicom-web/studies/")


def test_bulk_data_honours_a_byte_range(server: ArchipelServer, study: StoredStudy) -> None:
    ct = study.ct[1]
    headers = {
        **server.headers("radiologist"),
        "Accept": "application/octet-stream",
        "Range": "bytes=100-199",
    }
    r = httpx.get(url(server, ct, "/bulkdata/7FE00010"), headers=headers)
    assert r.status_code == 206
    assert r.content == ct.PixelData[100:200]
    assert r.headers["content-range"] == f"bytes 100-199/{len(ct.PixelData)}"
    headers["Range"] = f"bytes={len(ct.PixelData) + 10}-"
    assert httpx.get(url(server, ct, "/bulkdata/7FE00010"), headers=headers).status_code == 416


def test_series_and_study_metadata_list_every_instance(server: ArchipelServer, study: StoredStudy) -> None:
    ct = study.ct
    series = get(
        server, f"{server.url}/dicom-web/studies/{study.study_uid}/series/{ct[0].SeriesInstanceUID}/metadata"
    )
    assert [m["00080018"]["Value"][0] for m in series.json()] == [d.SOPInstanceUID for d in ct]
    whole = get(server, f"{server.url}/dicom-web/studies/{study.study_uid}/metadata").json()
    assert {m["00080018"]["Value"][0] for m in whole} == {d.SOPInstanceUID for d in study.everything}
    jpeg_meta = next(m for m in whole if m["00080018"]["Value"][0] == study.jpeg.SOPInstanceUID)
    assert jpeg_meta["7FE00010"]["vr"] == "OB"


# --- frames ----------------------------------------------------------------------------------------------------


def test_native_frames_are_the_pixel_bytes_in_the_order_asked(
    server: ArchipelServer, study: StoredStudy
) -> None:
    mf = study.multiframe
    size = 32 * 48 * 2
    r = get(server, url(server, mf, "/frames/3,1,2"), 'multipart/related; type="application/octet-stream"')
    assert r.status_code == 200
    parts = read_multipart(r)
    assert [c for _, c in parts] == [
        mf.PixelData[2 * size :],
        mf.PixelData[:size],
        mf.PixelData[size : 2 * size],
    ]
    assert parts[0][0]["content-type"] == f"application/octet-stream; transfer-syntax={EXPLICIT_LE}"
    [(_, single)] = read_multipart(get(server, url(server, study.ct[2], "/frames/1")))
    assert single == study.ct[2].PixelData


def test_jpeg_frames_are_the_source_fragments_unchanged(server: ArchipelServer, study: StoredStudy) -> None:
    source = list(generate_frames(study.jpeg.PixelData, number_of_frames=3))
    r = get(server, url(server, study.jpeg, "/frames/1,2,3"), 'multipart/related; type="image/jpeg"')
    assert r.status_code == 200
    assert r.headers["content-type"].startswith('multipart/related; type="image/jpeg"')
    parts = read_multipart(r)
    assert [c for _, c in parts] == source
    assert {h["content-type"] for h, _ in parts} == {f"image/jpeg; transfer-syntax={JPEG_BASELINE}"}


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ('multipart/related; type="application/octet-stream"', 406),
        ('multipart/related; type="image/jp2"', 406),
        (f'multipart/related; type="image/jpeg"; transfer-syntax={JPEG_BASELINE}', 200),
        ('multipart/related; type="*/*"', 200),
        (OHIF_FRAMES_ACCEPT, 200),
    ],
)
def test_frames_are_never_transcoded(
    server: ArchipelServer, study: StoredStudy, accept: str, expected: int
) -> None:
    assert get(server, url(server, study.jpeg, "/frames/2"), accept).status_code == expected


@pytest.mark.parametrize(("frames", "reason"), [("4", "out of range"), ("0", "out of range"), ("1,x", "'x'")])
def test_frame_numbers_outside_the_instance_are_400(
    server: ArchipelServer, study: StoredStudy, frames: str, reason: str
) -> None:
    r = get(server, url(server, study.jpeg, f"/frames/{frames}"))
    assert r.status_code == 400
    assert reason in r.json()["detail"]


def test_frames_that_do_not_fit_the_pixel_data_are_refused_before_streaming(server: ArchipelServer) -> None:
    patient = SyntheticPatient(f"S{uuid.uuid4().hex[:8]}", "SHORT^Pixels", "19620202", "F", issuer="SITE-A")
    short = ct_series(patient, 1, rows=16, cols=16)[0]
    short.NumberOfFrames = 3  # but Pixel Data holds one frame
    assert stow(server, [short]).status_code == 200
    r = get(server, url(server, short, "/frames/1"))
    assert r.status_code == 422
    assert "needed for 3 frame(s)" in r.json()["detail"]


def test_frames_of_deflated_and_big_endian_instances_are_little_endian_pixels(server: ArchipelServer) -> None:
    patient = SyntheticPatient(f"E{uuid.uuid4().hex[:8]}", "ENDIAN^Test", "19610101", "M", issuer="SITE-A")
    deflated, big = ct_series(patient, 2, rows=32, cols=32)
    little = big.PixelData
    deflated.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    big.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    big.PixelData = np.frombuffer(little, dtype="<u2").astype(">u2").tobytes()
    assert stow(server, [deflated, big]).status_code == 200
    for ds, expected in ((deflated, deflated.PixelData), (big, little)):
        [(headers, frame)] = read_multipart(get(server, url(server, ds, "/frames/1")))
        assert headers["content-type"] == f"application/octet-stream; transfer-syntax={EXPLICIT_LE}"
        assert frame == expected
        [meta] = get(server, url(server, ds, "/metadata")).json()
        assert meta["00280010"]["Value"] == [32]
        assert image(get(server, url(server, ds, "/rendered"))).size == (32, 32)


# --- OHIF v3 ---------------------------------------------------------------------------------------------------


def test_ohif_loads_a_series_with_metadata_frames_and_thumbnails(
    server: ArchipelServer, study: StoredStudy
) -> None:
    """The requests OHIF v3 makes after QIDO: series metadata, then frames of each instance, then a thumbnail."""
    series_uid = study.ct[0].SeriesInstanceUID
    base = f"{server.url}/dicom-web/studies/{study.study_uid}/series/{series_uid}"
    meta = get(server, f"{base}/metadata", "application/dicom+json")
    assert meta.status_code == 200
    by_uid = {d.SOPInstanceUID: d for d in study.ct}
    for instance in meta.json():
        sop = instance["00080018"]["Value"][0]
        assert instance["0020000D"]["Value"] == [study.study_uid]
        assert instance["00281050"]["Value"] == [40.0]  # WindowCenter, for the viewport's initial VOI
        r = get(server, f"{base}/instances/{sop}/frames/1", OHIF_FRAMES_ACCEPT)
        assert r.status_code == 200
        [(headers, pixels)] = read_multipart(r)
        assert "transfer-syntax=" in headers["content-type"]
        assert pixels == by_uid[sop].PixelData
        assert image(get(server, f"{base}/instances/{sop}/thumbnail", "image/jpeg")).format == "JPEG"
    jpeg = study.jpeg
    r = get(server, url(server, jpeg, "/frames/1"), OHIF_FRAMES_ACCEPT)
    [(headers, frame)] = read_multipart(r)
    assert headers["content-type"] == f"image/jpeg; transfer-syntax={JPEG_BASELINE}"
    assert frame == next(iter(generate_frames(jpeg.PixelData, number_of_frames=3)))


# --- frames read by range, in process --------------------------------------------------------------------------


class RecordingBlobs:
    """A blob store that serves only range reads and records them; whole-object reads fail the test."""

    def __init__(self, inner: BlobStore) -> None:
        self.inner = inner
        self.ranges: list[tuple[int, int]] = []

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        self.ranges.append((offset, length))
        return self.inner.read_range(key, offset, length)

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"frames must be read by range, not with {name}")


def stored(runtime: Runtime, sop_uid: str) -> StoredInstance:
    with runtime.db.sessions() as s:
        row = s.execute(select(Instance).where(Instance.sop_uid == sop_uid)).scalar_one()
        return stored_instance("", "", row)


def test_frames_are_read_by_range_without_loading_the_instance(
    archive: Archive, runtime: Runtime, patient: SyntheticPatient
) -> None:
    jpeg = jpeg_multiframe(patient, frames=3, size=64)
    native = ct_series(patient, 3, rows=32, cols=32)
    native[0].NumberOfFrames = 3
    native[0].PixelData = b"".join(d.PixelData for d in native)
    for ds in (jpeg, native[0]):
        archive.store(to_bytes(ds))
    blobs = RecordingBlobs(runtime.blobs)
    inst = stored(runtime, jpeg.SOPInstanceUID)
    assert read_frame(blobs, inst, 2) == list(generate_frames(jpeg.PixelData, number_of_frames=3))[1]  # type: ignore[arg-type]
    assert sum(n for _, n in blobs.ranges) < inst.size / 2
    blobs.ranges.clear()
    inst = stored(runtime, native[0].SOPInstanceUID)
    assert read_frame(blobs, inst, 3) == native[2].PixelData  # type: ignore[arg-type]
    # the header up to Pixel Data, then exactly one frame
    assert blobs.ranges == [(0, inst.pixel_data_offset), (inst.pixel_data_offset + 2 * 2048, 2048)]
